-- One row per pseudonymous user: no clear PII exists anywhere to join to.
select
    user_id,
    min(email_hash) as email_hash,
    min(occurred_at) as first_seen_at,
    max(occurred_at) as last_seen_at,
    count(*) as events,
    count(*) filter (where event_type = 'login') as logins,
    count(*) filter (where event_type = 'login' and not success) as failed_logins,
    count(*) filter (where event_type = 'purchase') as purchases,
    coalesce(sum(amount_cents) filter (where event_type = 'purchase'), 0) as purchase_cents
from {{ ref('fct_events') }}
group by 1
