"""The two micro-batch steps on their own: N fresh events landed by the real sink, then the
contract step and the windows step timed (no Dagster, no profiler), with the contract step's
seconds by phase. Where a run's time goes, and the before/after of a change to the steps.

    python -m benchmarks.microbatch_steps [N]      # default 50,000 events, 1 % invalid
"""

from __future__ import annotations

import json
import sys
import time

from benchmarks.harness import isolated_stack, produce_demo_events
from resources import KafkaResource
from streamflow import topics
from streamflow.db.engine import connect_admin
from streamflow.microbatch import notifications, windows
from streamflow.sink.worker import SinkConfig, run_sink
from streamflow.workers.runtime import StopFlag


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    events = int(args[0]) if args else 50_000
    with isolated_stack() as st:
        topic = topics.create_topic(st.kafka, "bench-steps")
        produce_demo_events(st, topic, events)
        run_sink(SinkConfig(st.kafka, st.database_url, topic=topic, group_id=topic,
                            stop_when_idle_s=2.0), StopFlag())
        kafka = KafkaResource(bootstrap_servers=st.bootstrap)
        kafka.producer()
        time.sleep(1)  # connected, as a run's resource is by the time its step publishes
        with connect_admin(st.database_url) as conn:
            started = time.perf_counter()
            checked = notifications.run(conn, 2**62, lambda m: kafka.publish(
                topics.NOTIFICATIONS, m), kafka.publish_dead_letters)
            contract_s = time.perf_counter() - started
            started = time.perf_counter()
            windows.run(conn, 2**62, lambda m: kafka.publish(topics.ANALYTICS, m))
            windows_s = time.perf_counter() - started
    print(json.dumps({"events": checked.checked, "contract_step_s": round(contract_s, 3),
                      # (absent before the steps reported phases: comparing with old code)
                      "contract_seconds_by_phase": getattr(checked, "phases", None) and
                      checked.phases.rounded(),
                      "windows_step_s": round(windows_s, 3)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
