"""The broker's end-to-end floor of `make bench`: Kafka's tool prints whole milliseconds."""

from benchmarks.latency import parse_end_to_end


def test_a_sub_millisecond_broker_falls_back_to_its_average():
    """p50 = 0 (under 1 ms, truncated) divided the produce→row ratio by zero."""
    out = "Avg latency: 0.6321 ms\nPercentiles: 50th = 0, 99th = 2, 99.9th = 4\n"
    floor = parse_end_to_end(out, 2000)
    assert (floor["floor_ms"], floor["floor_basis"]) == (0.6321, "average")
    assert (floor["p50_ms"], floor["p99_ms"]) == (0.0, 2.0)


def test_a_whole_millisecond_p50_stays_the_floor():
    floor = parse_end_to_end("Avg latency: 1.2000 ms\nPercentiles: 50th = 1, 99th = 3, "
                             "99.9th = 7\n", 2000)
    assert (floor["floor_ms"], floor["floor_basis"], floor["avg_ms"]) == (1.0, "p50", 1.2)
