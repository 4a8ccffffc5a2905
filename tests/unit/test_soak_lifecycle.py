"""The lifecycle soak's verdicts (benchmarks/soak_lifecycle.py), on made-up samples."""

from __future__ import annotations

from benchmarks.soak_lifecycle import (
    Account,
    Point,
    Probed,
    flatness,
    latency_split,
    windows_with,
)


def _series(values: list[float], step_s: float = 30.0) -> list[Point]:
    return [Point(i * step_s, v) for i, v in enumerate(values)]


def test_flat_once_retention_started_compares_the_last_third_with_the_middle():
    # Grows for the first third, then a sawtooth around 100 (drops every period).
    points = _series([10, 40, 70, 100, 95, 105, 98, 104, 101, 99, 103])
    f = flatness(points, retention_from_s=90.0)
    assert f.baseline == "middle_third"
    assert f.flat is True and abs(f.change) < 0.05


def test_growth_after_retention_is_not_flat():
    points = _series([10, 40, 70, 100, 110, 120, 130, 140, 150, 160, 170])
    f = flatness(points, retention_from_s=90.0)
    assert f.flat is False and f.change > 0.10


def test_the_growth_before_retention_is_left_out_of_the_baseline():
    # Retention starts late (a short run): the middle third's early samples still grow.
    points = _series([10, 20, 30, 40, 50, 100, 100, 100, 100, 100, 100, 100])
    f = flatness(points, retention_from_s=150.0)
    assert f.baseline == "after_retention"
    assert f.baseline_mean == 100 and f.flat is True


def test_no_verdict_without_retention_or_baseline():
    points = _series([10, 20, 30, 40, 50, 60])
    assert flatness(points, retention_from_s=None).flat is None
    assert flatness(points, retention_from_s=10_000.0).flat is None  # never in the samples
    assert flatness(points[:2], retention_from_s=0.0).flat is None


def test_an_exact_account():
    a = Account(produced=1_000, ingest_dead_letters=10, archived=600, hot=390, distinct=990)
    assert (a.expected, a.rows, a.lost, a.twice, a.exact) == (990, 990, 0, 0, True)


def test_a_period_both_archived_and_counted_hot_is_twice():
    a = Account(produced=1_000, ingest_dead_letters=10, archived=700, hot=390, distinct=990)
    assert a.twice == 100 and a.lost == 0 and not a.exact


def test_a_lost_event():
    a = Account(produced=1_000, ingest_dead_letters=10, archived=600, hot=389, distinct=989)
    assert a.lost == 1 and a.twice == 0 and not a.exact
    assert a.as_dict()["lost"] == 1


def test_latency_is_split_by_the_windows_holding_a_drop():
    bounds = [0.0, 30.0, 60.0, 90.0]
    assert windows_with([45.0, 90.0], bounds) == {2}  # 90 is past the last window
    probed = ([Probed(t, 0.1) for t in range(0, 30)] + [Probed(t, 0.3) for t in range(30, 60)]
              + [Probed(t, 0.1) for t in range(60, 90)])
    split = latency_split(probed, drops=[45.0], bounds=bounds)
    assert split["drop_windows"] == 1
    assert split["during_drop"]["count"] == 30 and split["without_drop"]["count"] == 60
    assert split["p99_ratio"] == 3.0 and split["within"] is False


def test_no_latency_verdict_without_a_drop():
    split = latency_split([Probed(1.0, 0.1)], drops=[], bounds=[0.0, 30.0])
    assert split["within"] is None and split["during_drop"] == {"count": 0}
