-- Landed events with their typed columns (NULL where the payload could not be typed).
with

source as (

    select * from {{ source('raw', 'events') }}

),

renamed as (

    select

        ---------- ids
        event_id,
        ingest_seq,
        user_id,
        email_hash,

        ---------- properties
        schema_version,
        event_type,
        country,
        device,
        success,
        amount_cents,

        ---------- provenance
        kafka_partition,
        kafka_offset,

        ---------- timestamps
        occurred_at,
        ingested_at

    from source

)

select * from renamed
