-- Landed events with their typed columns (NULL where the payload broke the contract).
select
    event_id,
    ingest_seq,
    schema_version,
    event_type,
    user_id,
    email_hash,
    occurred_at,
    country,
    device,
    success,
    amount_cents,
    kafka_partition,
    kafka_offset,
    ingested_at
from {{ source('raw', 'events') }}
