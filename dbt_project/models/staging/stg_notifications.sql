-- Validated events: every contract column is present and typed.
select
    event_id,
    ingest_seq,
    event_type,
    user_id,
    email_hash,
    occurred_at,
    country,
    device,
    success,
    amount_cents,
    validated_at
from {{ source('streamflow', 'notifications') }}
