-- The history of validated events; incremental on the ingest sequence (commit-ordered).
{{ config(materialized='incremental', unique_key='event_id', on_schema_change='fail') }}

select
    event_id,
    ingest_seq,
    event_type,
    user_id,
    email_hash,
    occurred_at,
    date_trunc('hour', occurred_at) as occurred_hour,
    cast(occurred_at as date) as occurred_date,
    country,
    device,
    success,
    amount_cents
from {{ ref('stg_notifications') }}
{% if is_incremental() %}
where ingest_seq > (select coalesce(max(ingest_seq), 0) from {{ this }})
{% endif %}
