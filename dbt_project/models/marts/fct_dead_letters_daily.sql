{{
    config(
        materialized='incremental',
        unique_key=['day', 'stage', 'reason_code'],
        on_schema_change='fail',
    )
}}

-- depends_on: {{ source('streamflow', 'dropped_periods') }}

with

-- Incremental: the days whose dead letters are all still in raw.dead_letters are recounted
-- (replays change them); a day the lifecycle dropped dead letters of keeps its row as it was
-- last counted (docs/ARCHITECTURE.md, "Storage over time").
dead_letters as (

    select * from {{ ref('stg_dead_letters') }}
    {% if is_incremental() %}
        where created_at >= date_trunc(
            'day', {{ hot_since('raw.dead_letters') }} - interval '1 microsecond', 'UTC'
        ) + interval '1 day'
    {% endif %}

),

daily as (

    select
        cast(created_at at time zone 'UTC' as date) as day,
        stage,
        reason_code,
        count(*) as dead_letters,
        count(*) filter (where replay_count > 0) as replayed
    from dead_letters
    group by 1, 2, 3

)

select * from daily
