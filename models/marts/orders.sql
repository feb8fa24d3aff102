select
    o.order_id,
    a.customer_id,
    o.account_id,
    o.ordered_at,
    cast(o.ordered_at as date) as ordered_on,
    o.amount,
    o.currency,
    o.status
from {{ ref('stg_orders') }} o
left join {{ ref('stg_accounts') }} a on a.account_id = o.account_id
