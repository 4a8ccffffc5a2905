{#- Like dbt_utils.expression_is_true, without a package download (no internet here): rows where the expression is false. -#}
{% test expression_is_true(model, expression) %}
select *
from {{ model }}
where not ({{ expression }})
{% endtest %}
