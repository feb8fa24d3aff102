select
    acct_id as account_id,
    cust_id as customer_id,
    acct_name as account_name,
    coalesce(nullif(lower(trim(status)), ''), 'unknown') as status,
    {{ legacy_date('opened') }} as opened_on
from {{ source('legacy', 'accounts') }}
