{#- ferry's built-in generic tests. Each returns the failing rows; a project
    overrides one by defining a test of the same name in `macros/`. `model`
    is the relation the test is attached to (narrowed by a `where` config),
    `column_name` the column it is declared under. -#}

{% test not_null(model, column_name) %}
select *
from {{ model }}
where {{ column_name }} is null
{% endtest %}

{% test unique(model, column_name) %}
select {{ column_name }} as unique_field, count(*) as n_records
from {{ model }}
where {{ column_name }} is not null
group by {{ column_name }}
having count(*) > 1
{% endtest %}

{% test accepted_values(model, column_name, values, quote=true) %}
select {{ column_name }} as value_field, count(*) as n_records
from {{ model }}
where {{ column_name }} is not null
  and {{ column_name }} not in (
    {%- for v in values %}
    {% if quote %}'{{ v | string | replace("'", "''") }}'{% else %}{{ v }}{% endif %}{{ "," if not loop.last }}
    {%- endfor %}
  )
group by {{ column_name }}
{% endtest %}

{% test relationships(model, column_name, to, field) %}
select child.*
from {{ model }} as child
left join (select {{ field }} as to_field from {{ to }}) as parent
  on child.{{ column_name }} = parent.to_field
where child.{{ column_name }} is not null
  and parent.to_field is null
{% endtest %}
