{#- Like dbt_utils.unique_combination_of_columns, without a package download (no internet here): no duplicate key tuples. -#}
{% test unique_combination(model, columns) %}
select {{ columns | join(', ') }}, count(*) as n
from {{ model }}
group by {{ columns | join(', ') }}
having count(*) > 1
{% endtest %}
