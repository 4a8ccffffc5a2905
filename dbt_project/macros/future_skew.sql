{#- How far ahead of its validation an event's own time may be: the contract's FUTURE_SKEW
    (streamflow/validation.py; tests/unit/test_dbt_project.py holds the two equal). -#}
{% macro future_skew() -%}5 minutes{%- endmacro %}
