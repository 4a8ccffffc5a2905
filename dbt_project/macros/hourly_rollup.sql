{#- Validated events per hour and event type, from `relation` (where `condition`). -#}
{% macro hourly_rollup(relation, condition=none) -%}
    select
        occurred_hour,
        event_type,
        count(*) as events,
        count(distinct user_id) as distinct_users,
        count(*) filter (where event_type = 'login' and success) as login_successes,
        count(*) filter (where event_type = 'login' and not success) as login_failures,
        coalesce(
            sum(amount_cents) filter (where event_type = 'purchase'), 0
        ) as purchase_cents,
        max(ingest_seq) as last_ingest_seq
    from {{ relation }}
    {% if condition %}where {{ condition }}{% endif %}
    group by 1, 2
{%- endmacro %}
