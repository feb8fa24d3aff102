select
    order_no as order_id,
    acct_id as account_id,
    cast(order_date as timestamp) as ordered_at,
    {{ cents_to_amount('amount_cents') }} as amount,
    coalesce(nullif(currency, ''), 'EUR') as currency,
    status
from {{ source('legacy', 'orders') }}
