{#-
  A post-hook: {{ this }}, as dbt created it (a plain table), becomes the DEFAULT partition of
  a table of the same name and columns partitioned by range on `column` (docs/ARCHITECTURE.md,
  "Storage over time"); StreamFlow's lifecycle (streamflow/db/partitions.py) then makes its
  period partitions, moves the rows into them, archives and drops them. Rows of a table built
  before `column` existed get it from `fill_from` (matched on event_id), else from `fallback`.
  Nothing once partitioned. The model sets full_refresh=false: a full refresh would drop the
  partitioned table (see the model).
-#}
{% macro partition_by_time(column, fill_from, fallback) -%}
DO $partition$
BEGIN
    IF (SELECT relkind FROM pg_class WHERE oid = to_regclass('{{ this }}')) = 'r' THEN
        UPDATE {{ this }} f SET {{ column }} = s.{{ column }} FROM {{ fill_from }} s
        WHERE s.event_id = f.event_id AND f.{{ column }} IS NULL;
        UPDATE {{ this }} SET {{ column }} = {{ fallback }} WHERE {{ column }} IS NULL;
        ALTER TABLE {{ this }} RENAME TO {{ this.identifier }}_default;
        CREATE TABLE {{ this }} (LIKE {{ this.schema }}.{{ this.identifier }}_default
                                 INCLUDING DEFAULTS) PARTITION BY RANGE ({{ column }});
        CREATE INDEX {{ this.identifier }}_by_ingest_seq ON {{ this }} (ingest_seq);
        CREATE INDEX {{ this.identifier }}_by_occurred_hour ON {{ this }} (occurred_hour);
        ALTER TABLE {{ this }} ATTACH PARTITION {{ this.schema }}.{{ this.identifier }}_default
            DEFAULT;
    END IF;
END $partition$
{%- endmacro %}
