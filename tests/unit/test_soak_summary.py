"""The soak's summary arithmetic: thirds means, least-squares slope per hour, flatness."""

from __future__ import annotations

from dataclasses import replace

import pytest

from benchmarks.soak import FLAT_TOLERANCE, Point, summarize, trend
from benchmarks.stack_probe import ProcessMemory, RunSeen, Sample, WindowPoint


def test_slope_of_a_known_linear_series_is_its_rate_per_hour():
    # 10 MB + 0.5 MB per minute, sampled every 10 s for 30 minutes: 30 MB per hour.
    points = [Point(t, 10 + 0.5 * t / 60) for t in range(0, 1801, 10)]
    result = trend(points)
    assert result.slope_per_hour == pytest.approx(30.0)
    assert result.points == 181


def test_a_flat_series_has_no_slope_and_no_change():
    result = trend([Point(t, 250.0) for t in range(0, 600, 5)])
    assert result.slope_per_hour == pytest.approx(0.0, abs=1e-9)
    assert result.first_third_mean == result.last_third_mean == 250.0
    assert result.change == pytest.approx(0.0)


def test_noise_around_a_level_has_a_slope_near_zero():
    values = [100, 104, 97, 101, 99, 103, 96, 100, 102, 98, 101, 99]
    result = trend([Point(10 * i, v) for i, v in enumerate(values)])
    assert abs(result.slope_per_hour) < 0.05 * 100 * 3600 / 110  # < 5 % of the level per run


def test_thirds_means_take_the_first_and_last_third_of_the_samples():
    result = trend([Point(t, v) for t, v in enumerate([1, 2, 3, 10, 20, 30, 4, 5, 6])])
    assert result.first_third_mean == pytest.approx(2.0)
    assert result.last_third_mean == pytest.approx(5.0)
    assert result.change == pytest.approx(1.5)


def test_an_uneven_count_leaves_the_remainder_in_the_middle():
    result = trend([Point(t, v) for t, v in enumerate([1, 1, 9, 9, 9, 3, 3])])  # thirds of 2
    assert (result.first_third_mean, result.last_third_mean) == (1.0, 3.0)


def test_too_few_points_give_no_trend():
    assert trend([Point(0, 1), Point(1, 2)]).slope_per_hour is None
    assert trend([]).change is None


def _sample(t_s: float, sink_rss: float, *, sink_pid: int = 11) -> Sample:
    return Sample(
        t_s=t_s,
        processes={"sink": ProcessMemory(sink_pid, 1, sink_rss, sink_rss * 0.9),
                   "postgres": ProcessMemory(22, 8, 400.0, 300.0)},
        disk_mb={"postgres": 100 + t_s, "kafka": 50.0},
        produced=int(2000 * t_s) + 100, landed=int(2000 * t_s), sink_lag=100, backlog=500,
        runs=[RunSeen(t_s, 1.0 + t_s / 1000, "SUCCESS", 4000)],
        windows=[WindowPoint(t_s, 4.0)])


def test_summary_holds_every_series_quantiles_restarts_and_the_flat_verdict():
    samples = [_sample(10.0 * i, 200.0, sink_pid=11 if i < 5 else 12) for i in range(12)]
    summary = summarize(samples)
    trends = summary["trends"]
    assert {"rss_mb.sink", "rss_mb.postgres", "rss_mb.total", "pss_mb.total",
            "disk_mb.postgres", "disk_mb.kafka", "sink_lag_events", "microbatch_backlog_rows",
            "run_seconds", "window_latency_s"} <= trends.keys()
    assert trends["rss_mb.total"]["first_third_mean"] == 600.0
    assert trends["disk_mb.postgres"]["slope_per_hour"] == pytest.approx(3600.0)
    assert summary["window_latency_s"] == {"count": 12, "p50": 4.0, "p95": 4.0, "max": 4.0}
    assert summary["run_seconds"]["count"] == 12
    assert summary["restarts"] == {"postgres": 0, "sink": 1}
    assert summary["events_per_s"] == 2000
    assert summary["sink_kept_up"] is True
    assert summary["memory_flat"] is True


def test_growing_memory_is_not_flat():
    grows = 1 + 2 * FLAT_TOLERANCE
    samples = [_sample(10.0 * i, 200.0 * (1 + (grows - 1) * i / 11) + 400.0 * (grows - 1)
                       * i / 11) for i in range(12)]
    assert summarize(samples)["memory_flat"] is False


def test_shared_pages_counted_once_per_backend_are_not_growth():
    """PostgreSQL's RSS, summed over backends, climbs as each touches more shared buffers;
    its PSS (each shared page split between the processes that map it) does not."""
    samples = [replace(_sample(10.0 * i, 200.0), processes={
        "sink": ProcessMemory(11, 1, 200.0, 180.0),
        "postgres": ProcessMemory(22, 8, 400.0 + 100.0 * i, 300.0)}) for i in range(12)]
    summary = summarize(samples)
    assert summary["trends"]["rss_mb.total"]["change"] > 2 * FLAT_TOLERANCE
    assert summary["memory_flat"] is True


def test_a_sink_that_lands_nothing_did_not_keep_up():
    samples = [replace(_sample(10.0 * i, 200.0), landed=0) for i in range(12)]
    assert summarize(samples)["sink_kept_up"] is False
