select
    occurred_hour,
    event_type,
    count(*) as events,
    count(distinct user_id) as distinct_users,
    count(*) filter (where event_type = 'login' and success) as login_successes,
    count(*) filter (where event_type = 'login' and not success) as login_failures,
    coalesce(sum(amount_cents) filter (where event_type = 'purchase'), 0) as purchase_cents
from {{ ref('fct_events') }}
group by 1, 2
