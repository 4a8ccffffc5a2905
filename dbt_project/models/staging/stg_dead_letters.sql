select
    id as dead_letter_id,
    stage,
    reason_code,
    reason,
    source_topic,
    source_partition,
    source_offset,
    created_at,
    replay_count
from {{ source('raw', 'dead_letters') }}
