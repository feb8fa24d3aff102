-- Legacy customers, one row per customer: the latest entry wins when a
-- customer was entered twice. Names are split, emails normalised, country
-- spellings mapped to ISO codes and DD/MM/YYYY dates parsed.
with ranked as (
    select
        *,
        row_number() over (partition by cust_id order by updated_at desc) as entry_rank
    from {{ source('legacy', 'customers') }}
)

select
    cust_id as customer_id,
    split_part(trim(full_name), ' ', 1) as first_name,
    nullif(trim(substr(trim(full_name), length(split_part(trim(full_name), ' ', 1)) + 2)), '') as last_name,
    lower(trim(email)) as email,
    {{ country_code('country') }} as country_code,
    {{ legacy_date('signup_date') }} as signed_up_on,
    cust_type as legacy_type,
    nullif(trim(phone), '') as phone,
    cast(updated_at as timestamp) as updated_at
from ranked
where entry_rank = 1
