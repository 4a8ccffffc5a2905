{#-
  A pre-hook for an incremental model configured full_refresh=false (its table is partitioned
  by StreamFlow, which a rebuild would undo): `--full-refresh` empties the table instead, and
  the model, finding nothing loaded, loads everything from its inputs as a first build would.
-#}
{% macro truncate_on_full_refresh() -%}
    {%- if flags.FULL_REFRESH and is_incremental() -%}
        truncate table {{ this }}
    {%- else -%}
        select 1
    {%- endif -%}
{%- endmacro %}
