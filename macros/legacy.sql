{#- Helpers for reading the legacy CRM's exports. -#}

{% macro cents_to_amount(column) -%}
    cast({{ column }} as decimal(18, 0)) / 100
{%- endmacro %}

{% macro legacy_date(column) -%}
    {#- The legacy CRM writes dates as DD/MM/YYYY; blanks become NULL. -#}
    to_date(nullif(trim({{ column }}), ''), '%d/%m/%Y')
{%- endmacro %}

{% macro country_code(column) -%}
    {%- set spellings = {
        'GB': ['uk', 'united kingdom', 'gb', 'england', 'u.k.'],
        'DE': ['germany', 'de', 'deutschland'],
        'FR': ['france', 'fr'],
        'US': ['usa', 'united states', 'us', 'u.s.a.'],
        'NL': ['netherlands', 'nl', 'holland'],
    } -%}
    case
    {%- for code, names in spellings.items() %}
        when lower(trim({{ column }})) in ({% for n in names %}'{{ n }}'{% if not loop.last %}, {% endif %}{% endfor %}) then '{{ code }}'
    {%- endfor %}
        else null
    end
{%- endmacro %}
