"""The archive's Dagster partitions line up with the table partitions (assets/lifecycle.py)."""

from datetime import UTC, datetime, timedelta

import pytest

from assets.lifecycle import cron_for, periods_definition
from streamflow.db.partitions import Period, parse_interval
from streamflow.errors import SettingsError


@pytest.mark.parametrize(("text", "cron"), [
    ("5m", "*/5 * * * *"), ("15m", "*/15 * * * *"), ("1h", "0 * * * *"),
    ("6h", "0 */6 * * *"), ("1d", "0 0 * * *")])
def test_each_interval_has_the_cron_of_its_boundaries(text, cron):
    assert cron_for(parse_interval(text)) == cron


@pytest.mark.parametrize("text", ["7m", "5h", "2d", "0m", "1w", "90m"])
def test_an_interval_that_does_not_tile_a_day_is_refused(text):
    with pytest.raises(SettingsError, match="STREAMFLOW_PARTITION_INTERVAL"):
        parse_interval(text)


@pytest.mark.parametrize("text", ["5m", "1h", "1d"])
def test_dagster_partition_keys_are_the_period_keys(text):
    interval = parse_interval(text)
    now = datetime(2026, 12, 7, 14, 7, tzinfo=UTC)
    definition = periods_definition(interval, timedelta(days=7), now=now)
    keys = definition.get_partition_keys(current_time=now)
    last = Period.holding(now - interval, interval)  # the last closed period
    assert keys[-1] == last.key
    assert Period.from_key(keys[-1], interval) == last
    assert Period.from_key(keys[0], interval).start <= now - timedelta(days=7)
