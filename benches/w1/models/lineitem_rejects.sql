{{ config(materialized='table') }}
select order_id, line_no, broken_rule
from {{ ref('checked') }}
where broken_rule is not null
