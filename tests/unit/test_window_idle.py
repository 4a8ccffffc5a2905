"""The idle rule: once the stream has been quiet for the idle time (processing time), every
window up to the one holding the last event closes, instead of waiting for the next event."""

from datetime import UTC, datetime, timedelta

import pytest
from pydantic import ValidationError

from assets.microbatch import WindowConfig
from streamflow.microbatch.windows import (
    DEFAULT_GRACE,
    DEFAULT_IDLE,
    WINDOW,
    closed_before,
    idle_wait,
    window_start,
)

LAST = datetime(2026, 11, 27, 12, 0, 13, 250_000, tzinfo=UTC)  # in the window [12:00:10, :20)
END = datetime(2026, 11, 27, 12, 0, 20, tzinfo=UTC)
ARRIVED = datetime(2026, 11, 27, 12, 5, tzinfo=UTC)  # processing time: when it was validated


def test_while_events_arrive_event_time_minus_grace_closes_windows():
    assert closed_before(LAST, DEFAULT_GRACE) == LAST - DEFAULT_GRACE  # no clock: never idle
    almost = ARRIVED + DEFAULT_IDLE - timedelta(microseconds=1)
    assert closed_before(LAST, DEFAULT_GRACE, ARRIVED, almost) == LAST - DEFAULT_GRACE


def test_a_quiet_stream_closes_every_window_up_to_the_one_holding_the_last_event():
    for quiet in (DEFAULT_IDLE, DEFAULT_IDLE + timedelta(hours=5)):
        assert closed_before(LAST, DEFAULT_GRACE, ARRIVED, ARRIVED + quiet) == END
    # The idle time is the caller's: a short one closes sooner.
    short = timedelta(seconds=2)
    assert closed_before(LAST, DEFAULT_GRACE, ARRIVED, ARRIVED + short, short) == END


def test_the_idle_close_covers_the_window_of_an_event_on_its_start():
    on_start = END  # belongs to [12:00:20, :30), not to the window before
    assert closed_before(on_start, DEFAULT_GRACE, ARRIVED, ARRIVED + DEFAULT_IDLE) == END + WINDOW


def test_no_events_close_nothing():
    assert closed_before(None, DEFAULT_GRACE, None, ARRIVED) is None


def test_window_start_floors_to_the_10_s_grid_like_the_sql():
    assert window_start(LAST) == END - WINDOW
    assert window_start(END) == END
    before_epoch = datetime(1969, 12, 31, 23, 59, 55, tzinfo=UTC)
    assert window_start(before_epoch) == datetime(1969, 12, 31, 23, 59, 50, tzinfo=UTC)


def test_idle_wait_counts_down_the_quiet_time():
    assert idle_wait(ARRIVED, ARRIVED, DEFAULT_IDLE) == DEFAULT_IDLE
    assert idle_wait(ARRIVED, ARRIVED + timedelta(seconds=25), DEFAULT_IDLE) == timedelta(
        seconds=5)
    assert idle_wait(ARRIVED, ARRIVED + timedelta(minutes=1), DEFAULT_IDLE) < timedelta(0)


def test_the_quiet_time_is_configurable_and_must_exceed_the_grace():
    default = WindowConfig()
    assert default.idle_seconds == DEFAULT_IDLE.total_seconds() > default.grace_seconds
    assert WindowConfig(grace_seconds=0.5, idle_seconds=1).idle_seconds == 1
    with pytest.raises(ValidationError, match="idle_seconds .* must exceed grace_seconds"):
        WindowConfig(idle_seconds=DEFAULT_GRACE.total_seconds())


def test_an_event_from_the_future_cannot_close_the_windows_before_it():
    """One event with a clock 4 min fast (the contract accepts 5 min of skew): the watermark
    stays at the clock minus the grace, so the next minutes of windows stay open."""
    now = LAST
    fast = now + timedelta(minutes=4)
    assert closed_before(fast, DEFAULT_GRACE, now - WINDOW, now) == now - DEFAULT_GRACE
    # Idle: every window up to the clock's closes; the future event's stays open.
    quiet = now + DEFAULT_IDLE
    assert closed_before(fast, DEFAULT_GRACE, now, quiet) == window_start(quiet) + WINDOW
    assert closed_before(fast, DEFAULT_GRACE, now, quiet) < window_start(fast)
