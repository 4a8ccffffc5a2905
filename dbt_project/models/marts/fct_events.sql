{{
    config(
        materialized='incremental',
        unique_key='event_id',
        on_schema_change='append_new_columns',
        full_refresh=false,
        pre_hook="{{ truncate_on_full_refresh() }}",
        post_hook="{{ partition_by_time('validated_at', ref('stg_notifications'), 'occurred_at') }}",
        indexes=[
            {'columns': ['event_id'], 'unique': True},
            {'columns': ['ingest_seq']},
            {'columns': ['occurred_hour']},
        ],
    )
}}

{#-
    Partitioned by validated_at, like the notifications it is loaded from, so that a period
    of both is archived and dropped together (the post-hook; docs/ARCHITECTURE.md, "Storage
    over time"); validated_at came with time partitions and is added to a table built
    before them. A full refresh would drop the partitioned table: it empties it instead
    (pre-hook) and loads what is still hot.
-#}

with

notifications as (

    select * from {{ ref('stg_notifications') }}

),

-- Up to the contract step's watermark only: past it, concurrent micro-batch runs may still
-- commit a lower range after a higher one, and loading the higher one now would move
-- max(ingest_seq) over the range in flight: the next build would skip it for good.
new_events as (

    select *
    from notifications
    where ingest_seq <= {{ watermark('notifications') }}
    {% if is_incremental() %}
        and ingest_seq > (select coalesce(max(ingest_seq), 0) from {{ this }})
    {% endif %}

),

final as (

    select

        ---------- ids
        event_id,
        ingest_seq,
        user_id,
        email_hash,

        ---------- properties
        event_type,
        country,
        device,
        success,
        amount_cents,

        ---------- timestamps (buckets in UTC, whatever the session's time zone)
        occurred_at,
        date_trunc('hour', occurred_at, 'UTC') as occurred_hour,
        cast(occurred_at at time zone 'UTC' as date) as occurred_date,
        validated_at

    from new_events

)

select * from final
