{{
    config(
        materialized='incremental',
        unique_key=['occurred_date', 'event_type'],
        on_schema_change='fail',
        pre_hook="{{ add_missing_column('last_ingest_seq', 'bigint') }}",
        indexes=[{'columns': ['occurred_date', 'event_type'], 'unique': True}],
    )
}}

with

hourly as (

    select * from {{ ref('agg_events_hourly') }}

),

hourly_with_dates as (

    select
        *,
        cast(occurred_hour at time zone 'UTC' as date) as occurred_date

    from hourly

),

{% if is_incremental() %}

-- The days whose hours this build's agg_events_hourly recomputed (late events included).
touched_days as (

    select distinct occurred_date
    from hourly_with_dates
    where last_ingest_seq > (select coalesce(max(last_ingest_seq), 0) from {{ this }})

),

{% endif %}

daily as (

    select
        occurred_date,
        event_type,

        sum(events) as events,
        sum(login_successes) as login_successes,
        sum(login_failures) as login_failures,
        sum(purchase_cents) as purchase_cents,
        max(last_ingest_seq) as last_ingest_seq

    from hourly_with_dates
    {% if is_incremental() %}
        where occurred_date in (select occurred_date from touched_days)
    {% endif %}

    group by 1, 2

)

select * from daily
