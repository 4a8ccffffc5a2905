select
    window_start,
    window_end,
    event_type,
    events,
    distinct_users,
    login_successes,
    login_failures,
    purchase_cents,
    revision
from {{ source('streamflow', 'event_windows') }}
