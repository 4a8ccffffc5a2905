{#-
  The time from which every row of `table_name` (schema.table) is still in PostgreSQL, as SQL
  (a scalar subquery): the end of the last period StreamFlow's lifecycle dropped, plus
  `slack`; -infinity when none was dropped (docs/ARCHITECTURE.md, "Storage over time").
-#}
{% macro hot_since(table_name, slack="0 seconds") -%}
    (select coalesce(max(period_end) + interval '{{ slack }}', '-infinity'::timestamptz)
     from {{ source('streamflow', 'dropped_periods') }}
     where table_name = '{{ table_name }}')
{%- endmacro %}
