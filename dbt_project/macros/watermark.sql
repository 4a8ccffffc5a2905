{#-
  The ingest_seq a micro-batch step has completed: every row up to it is committed. Past it,
  concurrent runs may still commit a lower range after a higher one.

  streamflow.watermarks is read directly rather than declared as a source: it is the
  micro-batch's bookkeeping, moved by the same Dagster assets whose tables the models read
  (as sources), and Dagster maps each dbt source to an asset of its own. Unit tests override
  this macro with a number.
-#}
{% macro watermark(step) -%}
    (
        select coalesce(max(last_seq), 0)
        from {{ api.Relation.create(database=target.database, schema='streamflow',
                                    identifier='watermarks') }}
        where name = '{{ step }}'
    )
{%- endmacro %}
