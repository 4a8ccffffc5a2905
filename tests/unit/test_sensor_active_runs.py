"""The sensor's rule for runs in progress follows what Dagster records (start time)."""

from datetime import UTC, datetime, timedelta

import dagster as dg

from assets.microbatch import MAX_RUNTIME, START_TIMEOUT
from sensors.microbatch import is_active

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
S = dg.DagsterRunStatus


def test_a_long_run_still_counts_as_active():
    # Started 5 minutes ago: Dagster has not touched its update time since (no status change).
    assert is_active(S.STARTED, NOW - timedelta(minutes=6), NOW - timedelta(minutes=5), NOW)


def test_a_run_past_its_max_runtime_no_longer_holds_a_slot():
    started = NOW - MAX_RUNTIME - timedelta(seconds=1)
    assert not is_active(S.STARTED, started, started, NOW)


def test_a_run_not_started_counts_until_the_start_timeout():
    assert is_active(S.STARTING, NOW - START_TIMEOUT + timedelta(seconds=5), None, NOW)
    assert not is_active(S.STARTING, NOW - START_TIMEOUT - timedelta(seconds=5), None, NOW)


def test_finished_runs_never_count():
    for status in (S.SUCCESS, S.FAILURE, S.CANCELED):
        assert not is_active(status, NOW, NOW, NOW)


def test_a_failed_range_is_retried_after_a_growing_backoff():
    from sensors.microbatch import MAX_RETRY_AFTER, RETRY_AFTER, retry_wait

    assert retry_wait([], NOW) <= timedelta(0)  # never failed: due
    once = [NOW - timedelta(seconds=10)]
    assert retry_wait(once, NOW) == RETRY_AFTER - timedelta(seconds=10)
    assert retry_wait(once, NOW + RETRY_AFTER) <= timedelta(0)  # due without new events
    twice = [NOW - timedelta(minutes=5), NOW]
    assert retry_wait(twice, NOW) == 2 * RETRY_AFTER
    many = [NOW] * 20
    assert retry_wait(many, NOW) == MAX_RETRY_AFTER
