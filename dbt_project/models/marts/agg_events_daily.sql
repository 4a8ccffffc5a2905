select
    occurred_date,
    event_type,
    sum(events) as events,
    sum(login_successes) as login_successes,
    sum(login_failures) as login_failures,
    sum(purchase_cents) as purchase_cents
from (
    select cast(occurred_hour as date) as occurred_date, *
    from {{ ref('agg_events_hourly') }}
) hourly
group by 1, 2
