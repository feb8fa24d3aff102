-- Singular test: every order kept in the mart has an amount, except those
-- whose amount the legacy system lost (blank `amount_cents`).
select o.order_id
from {{ ref('orders') }} o
join {{ source('legacy', 'orders') }} l on l.order_no = o.order_id
where o.amount is null and l.amount_cents is not null
