"""Periods and partition names (streamflow.db.partitions): pure parts."""

from datetime import UTC, datetime, timedelta

import pytest

from streamflow.db.partitions import (
    DEAD_LETTERS,
    EVENTS,
    Period,
    by_name,
    parse_duration,
    periods,
)
from streamflow.errors import SettingsError

AT = datetime(2026, 12, 7, 14, 7, 30, tzinfo=UTC)


@pytest.mark.parametrize(("interval", "start", "key", "name"), [
    (timedelta(minutes=5), datetime(2026, 12, 7, 14, 5, tzinfo=UTC), "2026-12-07T14-05",
     "events_p20261207t1405"),
    (timedelta(hours=1), datetime(2026, 12, 7, 14, tzinfo=UTC), "2026-12-07T14-00",
     "events_p20261207t1400"),
    (timedelta(days=1), datetime(2026, 12, 7, tzinfo=UTC), "2026-12-07", "events_p20261207"),
])
def test_a_period_is_aligned_named_and_read_back(interval, start, key, name):
    period = Period.holding(AT, interval)
    assert (period.start, period.end - period.start, period.key) == (start, interval, key)
    assert Period.from_key(key, interval) == period
    assert EVENTS.partition_name(period) == name
    assert EVENTS.period_of(name, interval) == period
    assert DEAD_LETTERS.period_of(name, interval) is None  # another table's


def test_periods_cover_a_range_without_gaps():
    got = list(periods(AT, AT + timedelta(minutes=20), timedelta(minutes=5)))
    assert [p.key for p in got] == ["2026-12-07T14-05", "2026-12-07T14-10", "2026-12-07T14-15",
                                   "2026-12-07T14-20", "2026-12-07T14-25"]
    assert all(a.end == b.start for a, b in zip(got, got[1:], strict=False))


def test_durations_and_table_names():
    assert parse_duration("7d", "X") == timedelta(days=7)
    assert parse_duration(" 15m ", "X") == timedelta(minutes=15)
    with pytest.raises(SettingsError, match="HOT"):
        parse_duration("a week", "STREAMFLOW_HOT_RETENTION")
    assert by_name("events") is by_name("raw.events") is EVENTS
    with pytest.raises(KeyError):
        by_name("marts.nothing")


@pytest.mark.parametrize(("interval", "expected"), [
    (timedelta(days=1), timedelta(days=3)), (timedelta(hours=1), timedelta(hours=3)),
    (timedelta(minutes=5), timedelta(hours=1)), (timedelta(minutes=1), timedelta(minutes=12))])
def test_partitions_are_made_hours_ahead_but_never_many(interval, expected):
    from streamflow.db.partitions import ahead

    assert ahead(interval) == expected
