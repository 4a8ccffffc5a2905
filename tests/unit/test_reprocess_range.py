"""The reprocess job's range: one kind, both bounds, not empty; event time widened to windows."""

from datetime import UTC, datetime

import pytest

from assets.reprocess import ReprocessConfig, reprocess_job
from streamflow.errors import ReprocessRangeInvalid, StreamFlowError
from streamflow.microbatch.reprocess import Counts, SeqRange, TimeRange, parse_range


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def test_an_ingest_range_is_taken_as_given():
    assert parse_range(seq_from=10, seq_to=10) == SeqRange(10, 10)


def test_an_event_time_range_is_widened_to_whole_windows():
    assert parse_range("2026-11-27T14:00:05Z", "2026-11-27T14:00:21.5Z") == TimeRange(
        at("2026-11-27T14:00:00"), at("2026-11-27T14:00:30"))
    # Bounds on windows already, and a naive time read as UTC, an offset converted.
    assert parse_range("2026-11-27T14:00:00", "2026-11-27T16:00:10+02:00") == TimeRange(
        at("2026-11-27T14:00:00"), at("2026-11-27T14:00:10"))


@pytest.mark.parametrize(("kwargs", "says"), [
    ({}, "no range"),
    ({"occurred_from": "", "occurred_to": ""}, "no range"),
    ({"occurred_from": "2026-11-27T14:00:00Z", "occurred_to": "2026-11-27T15:00:00Z",
      "seq_from": 1, "seq_to": 5}, "not both"),
    ({"occurred_from": "2026-11-27T14:00:00Z", "seq_to": 5}, "not both"),
    ({"occurred_from": "2026-11-27T14:00:00Z"}, "both occurred_from and occurred_to"),
    ({"seq_to": 5}, "both ingest_seq_from and ingest_seq_to"),
    ({"occurred_from": "2026-11-27T15:00:00Z", "occurred_to": "2026-11-27T14:00:00Z"},
     "empty time range"),
    ({"occurred_from": "2026-11-27T14:00:00Z", "occurred_to": "2026-11-27T14:00:00Z"},
     "empty time range"),
    ({"occurred_from": "yesterday", "occurred_to": "2026-11-27T14:00:00Z"},
     "occurred_from 'yesterday' is not an ISO-8601 time"),
    ({"seq_from": 9, "seq_to": 5}, "empty ingest-sequence range 9 to 5"),
    ({"seq_from": 0, "seq_to": 5}, "1 <= ingest_seq_from"),
])
def test_a_range_that_is_missing_empty_or_ambiguous_is_refused(kwargs, says):
    with pytest.raises(ReprocessRangeInvalid, match=says) as refused:
        parse_range(**kwargs)
    assert isinstance(refused.value, StreamFlowError)


def test_the_launchpad_config_is_documented_and_refuses_a_bad_range():
    fields = ReprocessConfig.model_fields
    assert set(fields) == {"occurred_from", "occurred_to", "ingest_seq_from", "ingest_seq_to",
                           "dry_run"}
    assert all(f.description for f in fields.values())
    schema = reprocess_job.get_config_schema_snapshot()  # what the launchpad shows
    assert schema is not None
    with pytest.raises(ValueError, match="empty ingest-sequence range 9 to 5"):
        ReprocessConfig(ingest_seq_from=9, ingest_seq_to=5)
    assert ReprocessConfig(ingest_seq_from=1, ingest_seq_to=5).selected() == SeqRange(1, 5)


def test_counts_add_up_field_by_field():
    assert Counts(rechecked=2, added=1) + Counts(rechecked=3, windows_changed=4) == Counts(
        rechecked=5, added=1, windows_changed=4)
