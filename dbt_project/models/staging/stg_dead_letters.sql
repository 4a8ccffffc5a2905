with

source as (

    select * from {{ source('raw', 'dead_letters') }}

),

renamed as (

    select

        ---------- ids
        id as dead_letter_id,

        ---------- properties
        stage,
        reason_code,
        reason,
        replay_count,

        ---------- provenance
        source_topic,
        source_partition,
        source_offset,

        ---------- timestamps
        created_at

    from source

)

select * from renamed
