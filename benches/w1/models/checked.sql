-- Shape, keep the first row per (order_id, line_no), and name the first
-- hard rule each row breaks. Read by two models, so computed once.
with shaped as (
    select
        cast(l_orderkey as bigint) as order_id,
        cast(l_linenumber as int) as line_no,
        try_cast(l_partkey as bigint) as part_id,
        try_cast(l_quantity as int) as quantity,
        cast(l_extendedprice as decimal(15, 2)) as gross_amount,
        cast(
            cast(l_extendedprice as decimal(15, 2))
            * (1 - cast(l_discount as decimal(15, 2)))
            * (1 + cast(l_tax as decimal(15, 2)))
            as decimal(15, 2)
        ) as net_amount,
        case l_returnflag when 'R' then 'returned' when 'A' then 'accepted' else 'none' end as return_status,
        try_cast(l_shipdate as date) as shipped_on,
        try_cast(l_receiptdate as date) as received_on,
        upper(trim(l_shipmode)) as ship_mode,
        l_comment as note
    from {{ source('tpch', 'lineitem') }}
),

deduplicated as (
    select *, row_number() over (partition by order_id, line_no order by order_id) as copy_no
    from shaped
)

select
    order_id, line_no, part_id, quantity, gross_amount, net_amount, return_status,
    shipped_on, received_on, ship_mode, note,
    case
        when shipped_on is null then 'invalid_ship_date'
        when quantity is null or quantity <= 0 then 'quantity_positive'
        when received_on < shipped_on then 'received_after_shipped'
    end as broken_rule
from deduplicated
where copy_no = 1
