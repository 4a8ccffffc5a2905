{#-
  A pre-hook for incremental models that gained a column: the model's SQL reads the column
  from {{ this }} before dbt's on_schema_change could add it, so add it first (NULL in the
  old rows; the model treats NULL as "not loaded incrementally yet"). Nothing on a first build.
-#}
{% macro add_missing_column(column, data_type) -%}
    {%- if is_incremental() -%}
        alter table {{ this }} add column if not exists {{ adapter.quote(column) }} {{ data_type }}
    {%- else -%}
        select 1
    {%- endif -%}
{%- endmacro %}
