select
    cast(created_at as date) as day,
    stage,
    reason_code,
    count(*) as dead_letters,
    sum(case when replay_count > 0 then 1 else 0 end) as replayed
from {{ ref('stg_dead_letters') }}
group by 1, 2, 3
