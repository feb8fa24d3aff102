{{ config(materialized='table', load={'unique_key': ['order_id', 'line_no']}) }}
select
    order_id, line_no, part_id, quantity, gross_amount, net_amount, return_status,
    shipped_on, received_on, ship_mode, note
from {{ ref('checked') }}
where broken_rule is null
