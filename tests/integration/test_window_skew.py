"""One event from a clock minutes fast (the contract accepts 5 minutes of future skew) must not
close the windows before it: event time is bounded by the clock (docs/ARCHITECTURE.md).
Real Kafka and PostgreSQL, a database of the test's own."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from resources import KafkaResource
from streamflow import topics
from streamflow.db import migrate
from streamflow.db.engine import connect_admin
from streamflow.microbatch import batch as batches
from streamflow.microbatch import notifications as contract_step
from streamflow.microbatch import windows
from tests.conftest import create_topic
from tests.integration.microbatch_helpers import Scenario, land


def test_an_event_from_a_fast_clock_does_not_close_the_windows_before_it(
        platform, fresh_database, unique_name):
    migrate.upgrade(fresh_database)
    s = Scenario()
    now = datetime.now(UTC)
    recent = [s.event("page_view", i, now - timedelta(seconds=25 - i)) for i in range(25)]
    fast = s.event("page_view", 99, now + timedelta(minutes=4))
    land(platform, create_topic(platform, unique_name), [*recent, fast],
         database_url=fresh_database)
    kafka = KafkaResource(bootstrap_servers=platform.bootstrap)
    with connect_admin(fresh_database) as conn:
        landed = batches.landed_max_seq(conn)
        checked = contract_step.run(conn, landed,
                                    lambda m: kafka.publish(topics.NOTIFICATIONS, m),
                                    kafka.publish_dead_letters)
        assert checked.valid == 26  # the fast one is valid: within the contract's skew
        result = windows.run(conn, landed, lambda m: kafka.publish(topics.ANALYTICS, m))
        (clock,) = conn.execute("SELECT now()").fetchone()
        published = [end for (end,) in conn.execute(
            "SELECT window_end FROM streamflow.event_windows WHERE published_revision > 0")]
    # The watermark is the clock minus the grace, not the fast event's time minus it.
    assert result.watermark <= clock - windows.DEFAULT_GRACE
    assert published and all(end <= clock - windows.DEFAULT_GRACE for end in published)
    assert max(published) >= windows.window_start(now - timedelta(seconds=20))  # closes some
