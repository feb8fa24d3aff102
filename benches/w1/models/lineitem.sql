{{ config(materialized='table', unique_key=['order_id', 'line_no'], load={'unique_key': ['order_id', 'line_no']}) }}
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
