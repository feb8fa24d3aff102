{#-
  dbt's cross-database macros, in dbt's namespace (`dbt.dateadd(...)`, or
  `dateadd(...)` where no project or package defines its own). Each
  dispatches as dbt's do, so a project or package may override one with a
  `ferry__`, `postgres__` or `default__` variant of its own. The `ferry__`
  variants here give on DataFusion what dbt's PostgreSQL variants give on
  PostgreSQL (the tests compare the two on a live server).
-#}

{% macro dateadd(datepart, interval, from_date_or_timestamp) %}
  {{ return(adapter.dispatch('dateadd', 'dbt')(datepart, interval, from_date_or_timestamp)) }}
{% endmacro %}

{% macro ferry__dateadd(datepart, interval, from_date_or_timestamp) -%}
  (cast({{ from_date_or_timestamp }} as timestamp) + cast(cast({{ interval }} as varchar) || ' {{ datepart }}' as interval))
{%- endmacro %}

{% macro datediff(first_date, second_date, datepart) %}
  {{ return(adapter.dispatch('datediff', 'dbt')(first_date, second_date, datepart)) }}
{% endmacro %}

{% macro ferry__datediff(first_date, second_date, datepart) -%}
  {%- set part = datepart | lower -%}
  {%- set days -%}
    (cast(cast(cast({{ second_date }} as date) as int) as bigint) - cast(cast(cast({{ first_date }} as date) as int) as bigint))
  {%- endset -%}
  {%- set years -%}
    (date_part('year', cast({{ second_date }} as date)) - date_part('year', cast({{ first_date }} as date)))
  {%- endset -%}
  {%- set hours = "(date_part('hour', cast(" ~ second_date ~ " as timestamp)) - date_part('hour', cast(" ~ first_date ~ " as timestamp)))" -%}
  {%- set minutes = "(date_part('minute', cast(" ~ second_date ~ " as timestamp)) - date_part('minute', cast(" ~ first_date ~ " as timestamp)))" -%}
  {%- if part == 'year' -%}
    {{ years }}
  {%- elif part == 'quarter' -%}
    ({{ years }} * 4 + date_part('quarter', cast({{ second_date }} as date)) - date_part('quarter', cast({{ first_date }} as date)))
  {%- elif part == 'month' -%}
    ({{ years }} * 12 + date_part('month', cast({{ second_date }} as date)) - date_part('month', cast({{ first_date }} as date)))
  {%- elif part == 'day' -%}
    {{ days }}
  {%- elif part == 'week' -%}
    ({{ days }} / 7 + case
      when date_part('dow', cast({{ first_date }} as timestamp)) <= date_part('dow', cast({{ second_date }} as timestamp))
        then case when {{ first_date }} <= {{ second_date }} then 0 else -1 end
      else case when {{ first_date }} <= {{ second_date }} then 1 else 0 end
    end)
  {%- elif part == 'hour' -%}
    ({{ days }} * 24 + {{ hours }})
  {%- elif part == 'minute' -%}
    (({{ days }} * 24 + {{ hours }}) * 60 + {{ minutes }})
  {%- elif part == 'second' -%}
    ((({{ days }} * 24 + {{ hours }}) * 60 + {{ minutes }}) * 60 + floor(date_part('second', cast({{ second_date }} as timestamp))) - floor(date_part('second', cast({{ first_date }} as timestamp))))
  {%- else -%}
    {{ exceptions.raise_compiler_error("datediff: unsupported datepart '" ~ datepart ~ "' (year, quarter, month, week, day, hour, minute or second)") }}
  {%- endif -%}
{%- endmacro %}

{% macro date_trunc(datepart, date) %}
  {{ return(adapter.dispatch('date_trunc', 'dbt')(datepart, date)) }}
{% endmacro %}

{% macro default__date_trunc(datepart, date) -%}
  date_trunc('{{ datepart }}', {{ date }})
{%- endmacro %}

{% macro last_day(date, datepart) %}
  {{ return(adapter.dispatch('last_day', 'dbt')(date, datepart)) }}
{% endmacro %}

{% macro default__last_day(date, datepart) -%}
  cast({{ dbt.dateadd('day', '-1', dbt.dateadd(datepart, '1', dbt.date_trunc(datepart, date))) }} as date)
{%- endmacro %}

{% macro safe_cast(field, type) %}
  {{ return(adapter.dispatch('safe_cast', 'dbt')(field, type)) }}
{% endmacro %}

{% macro ferry__safe_cast(field, type) -%}
  try_cast({{ field }} as {{ type }})
{%- endmacro %}

{% macro cast(field, type) %}
  {{ return(adapter.dispatch('cast', 'dbt')(field, type)) }}
{% endmacro %}

{% macro default__cast(field, type) -%}
  cast({{ field }} as {{ type }})
{%- endmacro %}

{% macro type_string() %}{{ return(adapter.dispatch('type_string', 'dbt')()) }}{% endmacro %}
{% macro default__type_string() %}{{ return('varchar') }}{% endmacro %}

{% macro type_timestamp() %}{{ return(adapter.dispatch('type_timestamp', 'dbt')()) }}{% endmacro %}
{% macro default__type_timestamp() %}{{ return('timestamp') }}{% endmacro %}

{% macro type_float() %}{{ return(adapter.dispatch('type_float', 'dbt')()) }}{% endmacro %}
{#- `float` is double precision, as in PostgreSQL (src/engine/dialect.rs). -#}
{% macro default__type_float() %}{{ return('float') }}{% endmacro %}

{% macro type_numeric() %}{{ return(adapter.dispatch('type_numeric', 'dbt')()) }}{% endmacro %}
{% macro default__type_numeric() %}{{ return('numeric(28,6)') }}{% endmacro %}

{% macro type_bigint() %}{{ return(adapter.dispatch('type_bigint', 'dbt')()) }}{% endmacro %}
{% macro default__type_bigint() %}{{ return('bigint') }}{% endmacro %}

{% macro type_int() %}{{ return(adapter.dispatch('type_int', 'dbt')()) }}{% endmacro %}
{% macro default__type_int() %}{{ return('integer') }}{% endmacro %}

{% macro type_boolean() %}{{ return(adapter.dispatch('type_boolean', 'dbt')()) }}{% endmacro %}
{% macro default__type_boolean() %}{{ return('boolean') }}{% endmacro %}

{% macro hash(field) %}
  {{ return(adapter.dispatch('hash', 'dbt')(field)) }}
{% endmacro %}

{% macro default__hash(field) -%}
  md5(cast({{ field }} as varchar))
{%- endmacro %}

{% macro concat(fields) %}
  {{ return(adapter.dispatch('concat', 'dbt')(fields)) }}
{% endmacro %}

{% macro default__concat(fields) -%}
  {{ fields | join(' || ') }}
{%- endmacro %}

{% macro split_part(string_text, delimiter_text, part_number) %}
  {{ return(adapter.dispatch('split_part', 'dbt')(string_text, delimiter_text, part_number)) }}
{% endmacro %}

{% macro default__split_part(string_text, delimiter_text, part_number) -%}
  split_part({{ string_text }}, {{ delimiter_text }}, {{ part_number }})
{%- endmacro %}

{% macro listagg(measure, delimiter_text="','", order_by_clause=none, limit_num=none) %}
  {{ return(adapter.dispatch('listagg', 'dbt')(measure, delimiter_text, order_by_clause, limit_num)) }}
{% endmacro %}

{% macro default__listagg(measure, delimiter_text, order_by_clause, limit_num) -%}
  {%- if limit_num -%}
    array_to_string(array_slice(array_agg({{ measure }}{% if order_by_clause %} {{ order_by_clause }}{% endif %}), 1, {{ limit_num }}), {{ delimiter_text }})
  {%- else -%}
    string_agg({{ measure }}, {{ delimiter_text }}{% if order_by_clause %} {{ order_by_clause }}{% endif %})
  {%- endif -%}
{%- endmacro %}

{% macro any_value(expression) %}
  {{ return(adapter.dispatch('any_value', 'dbt')(expression)) }}
{% endmacro %}

{% macro default__any_value(expression) -%}
  min({{ expression }})
{%- endmacro %}

{% macro bool_or(expression) %}
  {{ return(adapter.dispatch('bool_or', 'dbt')(expression)) }}
{% endmacro %}

{% macro default__bool_or(expression) -%}
  bool_or({{ expression }})
{%- endmacro %}

{% macro cast_bool_to_text(field) %}
  {{ return(adapter.dispatch('cast_bool_to_text', 'dbt')(field)) }}
{% endmacro %}

{% macro default__cast_bool_to_text(field) -%}
  cast({{ field }} as varchar)
{%- endmacro %}

{% macro current_timestamp() %}
  {{ return(adapter.dispatch('current_timestamp', 'dbt')()) }}
{% endmacro %}

{% macro default__current_timestamp() -%}
  now()
{%- endmacro %}

{% macro escape_single_quotes(expression) %}
  {{ return(adapter.dispatch('escape_single_quotes', 'dbt')(expression)) }}
{% endmacro %}

{% macro default__escape_single_quotes(expression) -%}
  {{ expression | replace("'", "''") }}
{%- endmacro %}

{% macro string_literal(value) %}
  {{ return(adapter.dispatch('string_literal', 'dbt')(value)) }}
{% endmacro %}

{% macro default__string_literal(value) -%}
  '{{ value }}'
{%- endmacro %}

{% macro array_construct(inputs=[], data_type='integer') %}
  {{ return(adapter.dispatch('array_construct', 'dbt')(inputs, data_type)) }}
{% endmacro %}

{% macro ferry__array_construct(inputs, data_type) -%}
  {%- if inputs | length > 0 -%}
    make_array({{ inputs | join(', ') }})
  {%- else -%}
    arrow_cast(make_array(), 'List(Int32)')
  {%- endif -%}
{%- endmacro %}

{% macro array_append(array, new_element) %}
  {{ return(adapter.dispatch('array_append', 'dbt')(array, new_element)) }}
{% endmacro %}

{% macro default__array_append(array, new_element) -%}
  array_append({{ array }}, {{ new_element }})
{%- endmacro %}

{% macro array_concat(array_1, array_2) %}
  {{ return(adapter.dispatch('array_concat', 'dbt')(array_1, array_2)) }}
{% endmacro %}

{% macro default__array_concat(array_1, array_2) -%}
  array_concat({{ array_1 }}, {{ array_2 }})
{%- endmacro %}

{% macro replace(field, old_chars, new_chars) %}
  {{ return(adapter.dispatch('replace', 'dbt')(field, old_chars, new_chars)) }}
{% endmacro %}

{% macro default__replace(field, old_chars, new_chars) -%}
  replace({{ field }}, {{ old_chars }}, {{ new_chars }})
{%- endmacro %}

{% macro length(expression) %}
  {{ return(adapter.dispatch('length', 'dbt')(expression)) }}
{% endmacro %}

{% macro default__length(expression) -%}
  length({{ expression }})
{%- endmacro %}

{% macro position(substring_text, string_text) %}
  {{ return(adapter.dispatch('position', 'dbt')(substring_text, string_text)) }}
{% endmacro %}

{% macro default__position(substring_text, string_text) -%}
  position({{ substring_text }} in {{ string_text }})
{%- endmacro %}

{% macro right(string_text, length_expression) %}
  {{ return(adapter.dispatch('right', 'dbt')(string_text, length_expression)) }}
{% endmacro %}

{% macro default__right(string_text, length_expression) -%}
  right({{ string_text }}, {{ length_expression }})
{%- endmacro %}

{% macro except() %}{{ return(adapter.dispatch('except', 'dbt')()) }}{% endmacro %}
{% macro default__except() %}except{% endmacro %}

{% macro intersect() %}{{ return(adapter.dispatch('intersect', 'dbt')()) }}{% endmacro %}
{% macro default__intersect() %}intersect{% endmacro %}

{% macro date(year, month, day) %}
  {{ return(adapter.dispatch('date', 'dbt')(year, month, day)) }}
{% endmacro %}

{% macro default__date(year, month, day) -%}
  make_date({{ year }}, {{ month }}, {{ day }})
{%- endmacro %}
