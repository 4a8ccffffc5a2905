{{
    config(
        materialized='incremental',
        unique_key='user_id',
        on_schema_change='fail',
        pre_hook="{{ add_missing_column('last_ingest_seq', 'bigint') }}",
        indexes=[{'columns': ['user_id'], 'unique': True}],
    )
}}

-- One row per pseudonymous user: no clear PII exists anywhere to join to.
with

events as (

    select * from {{ ref('fct_events') }}
    {% if is_incremental() %}
        where ingest_seq > (select coalesce(max(last_ingest_seq), 0) from {{ this }})
    {% endif %}

),

new_activity as (

    select
        user_id,

        min(email_hash) as email_hash,
        min(occurred_at) as first_seen_at,
        max(occurred_at) as last_seen_at,
        count(*) as events,
        count(*) filter (where event_type = 'login') as logins,
        count(*) filter (where event_type = 'login' and not success) as failed_logins,
        count(*) filter (where event_type = 'purchase') as purchases,
        coalesce(
            sum(amount_cents) filter (where event_type = 'purchase'), 0
        ) as purchase_cents,
        max(ingest_seq) as last_ingest_seq

    from events

    group by 1

),

{% if is_incremental() %}

-- What the table knows of these users. Rows without last_ingest_seq come from the old,
-- fully rebuilt table: the filter above then read all of fct_events, so they are left out.
known as (

    select *
    from {{ this }}
    where
        user_id in (select user_id from new_activity)
        and last_ingest_seq is not null

),

-- Every measure is a min, max, count or sum: the known row and the new events combine
-- exactly, whenever the events happened.
final as (

    select
        new_activity.user_id,

        least(new_activity.email_hash, known.email_hash) as email_hash,
        least(new_activity.first_seen_at, known.first_seen_at) as first_seen_at,
        greatest(new_activity.last_seen_at, known.last_seen_at) as last_seen_at,
        new_activity.events + coalesce(known.events, 0) as events,
        new_activity.logins + coalesce(known.logins, 0) as logins,
        new_activity.failed_logins + coalesce(known.failed_logins, 0) as failed_logins,
        new_activity.purchases + coalesce(known.purchases, 0) as purchases,
        new_activity.purchase_cents + coalesce(known.purchase_cents, 0) as purchase_cents,
        new_activity.last_ingest_seq

    from new_activity

    left join known
        on new_activity.user_id = known.user_id

)

{% else %}

final as (

    select * from new_activity

)

{% endif %}

select * from final
