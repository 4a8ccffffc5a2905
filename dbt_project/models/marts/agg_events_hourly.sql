{{
    config(
        materialized='incremental',
        unique_key=['occurred_hour', 'event_type'],
        on_schema_change='fail',
        pre_hook="{{ add_missing_column('last_ingest_seq', 'bigint') }}",
        indexes=[{'columns': ['occurred_hour', 'event_type'], 'unique': True}],
    )
}}

with

events as (

    select * from {{ ref('fct_events') }}

),

{% if is_incremental() %}

-- The hours that events loaded since the last build fall into, however late those events
-- are: only these hours change.
touched_hours as (

    select distinct occurred_hour
    from events
    where ingest_seq > (select coalesce(max(last_ingest_seq), 0) from {{ this }})

),

{% endif %}

events_to_roll_up as (

    select *
    from events
    {% if is_incremental() %}
        where occurred_hour in (select occurred_hour from touched_hours)
    {% endif %}

),

hourly as (

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

    from events_to_roll_up

    group by 1, 2

)

select * from hourly
