-- The new CRM's contacts: one row per customer with the lifecycle stage
-- looked up from the legacy type code, and order totals.
with order_totals as (
    select
        a.customer_id,
        count(*) as order_count,
        sum(o.amount) as lifetime_value,
        max(o.ordered_at) as last_ordered_at
    from {{ ref('stg_orders') }} o
    join {{ ref('stg_accounts') }} a on a.account_id = o.account_id
    where o.status <> 'cancelled'
    group by a.customer_id
)

select
    c.customer_id,
    c.first_name,
    c.last_name,
    c.email,
    c.country_code,
    c.signed_up_on,
    coalesce(t.lifecycle_stage, '{{ var("default_lifecycle_stage") }}') as lifecycle_stage,
    coalesce(ot.order_count, 0) as order_count,
    coalesce(ot.lifetime_value, 0) as lifetime_value,
    ot.last_ordered_at
from {{ ref('stg_customers') }} c
left join {{ ref('customer_types') }} t on t.legacy_code = c.legacy_type
left join order_totals ot on ot.customer_id = c.customer_id
