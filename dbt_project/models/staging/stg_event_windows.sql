with

source as (

    select * from {{ source('streamflow', 'event_windows') }}

),

renamed as (

    select

        ---------- keys
        window_start,
        event_type,

        ---------- measures
        events,
        distinct_users,
        login_successes,
        login_failures,
        purchase_cents,

        ---------- versioning
        revision,

        ---------- timestamps
        window_end

    from source

)

select * from renamed
