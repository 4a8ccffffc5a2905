with

dead_letters as (

    select * from {{ ref('stg_dead_letters') }}

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
