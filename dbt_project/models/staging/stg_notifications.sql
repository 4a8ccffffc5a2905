-- Validated events: every contract column is present and typed.
with

source as (

    select * from {{ source('streamflow', 'notifications') }}

),

renamed as (

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

        ---------- timestamps
        occurred_at,
        validated_at

    from source

)

select * from renamed
