{{
    config(
        materialized='incremental',
        unique_key=['occurred_hour', 'event_type'],
        on_schema_change='fail',
        pre_hook="{{ add_missing_column('last_ingest_seq', 'bigint') }}",
        indexes=[{'columns': ['occurred_hour', 'event_type'], 'unique': True}],
    )
}}

-- depends_on: {{ source('streamflow', 'dropped_periods') }}

with

events as (

    select * from {{ ref('fct_events') }}

),

{% if is_incremental() %}

loaded as (

    select coalesce(max(last_ingest_seq), 0) as seq from {{ this }}

),

-- The hours that events loaded since the last build fall into, however late those events
-- are: only these hours change.
touched_hours as (

    select distinct occurred_hour
    from events
    where ingest_seq > (select seq from loaded)

),

-- Of those, the hours whose events are all still in fct_events are recounted. An hour some
-- of whose events the lifecycle may have dropped with their period (an event is validated at
-- most the contract's future skew before its own time) is not: its new events are added.
recounted_hours as (

    select occurred_hour
    from touched_hours
    where occurred_hour >= {{ hot_since('marts.fct_events', future_skew()) }}

),

{% endif %}

events_to_roll_up as (

    select *
    from events
    {% if is_incremental() %}
        where occurred_hour in (select occurred_hour from recounted_hours)
    {% endif %}

),

hourly as (

    {{ hourly_rollup('events_to_roll_up') }}

),

{% if is_incremental() %}

added as (

    {{ hourly_rollup('events', "ingest_seq > (select seq from loaded) and occurred_hour < "
                               ~ hot_since('marts.fct_events', future_skew())) }}

),

-- Counts and sums add up exactly (each event is loaded once); distinct_users becomes an
-- upper bound there (a user of the hour seen again counts twice).
amended as (

    select
        added.occurred_hour,
        added.event_type,
        added.events + coalesce(known.events, 0) as events,
        added.distinct_users + coalesce(known.distinct_users, 0) as distinct_users,
        added.login_successes + coalesce(known.login_successes, 0) as login_successes,
        added.login_failures + coalesce(known.login_failures, 0) as login_failures,
        added.purchase_cents + coalesce(known.purchase_cents, 0) as purchase_cents,
        added.last_ingest_seq
    from added
    left join {{ this }} as known
        on
            known.occurred_hour = added.occurred_hour
            and known.event_type = added.event_type

),

final as (

    select * from hourly
    union all
    select * from amended

)

{% else %}

final as (

    select * from hourly

)

{% endif %}

select * from final
