"""benchmarks.profile's reading of py-spy's raw stacks (pure: a file written here)."""

from __future__ import annotations

from benchmarks import profile

RAW = (
    "<module> (/x/streamflow/cli.py:5);run (/x/streamflow/sink/worker.py:140);"
    "decode (/x/streamflow/sink/decode.py:70) 30\n"
    "<module> (/x/streamflow/cli.py:5);run (/x/streamflow/sink/worker.py:140);"
    "decode (/x/streamflow/sink/decode.py:70);loads (/v/site-packages/orjson/x.py:1) 10\n"
    "<module> (streamflow/cli.py:5);write_row (/v/site-packages/psycopg/copy.py:9) 60\n"
)


def test_self_time_per_source_line_and_inclusive_time_per_function(tmp_path):
    path = tmp_path / "sink.txt"
    path.write_text(RAW)
    found = profile.summarise(path, events=1_000, ours=profile._ours)
    per_sample = 1e6 / profile.SAMPLES_PER_S / 1_000  # µs per event of one sample
    assert found["sampled_us_per_event"] == round(100 * per_sample, 2)
    assert found["top_lines_us_per_event"] == {
        "write_row (psycopg/copy.py:9)": round(60 * per_sample, 2),
        "decode (streamflow/sink/decode.py:70)": round(30 * per_sample, 2),
        "loads (orjson/x.py:1)": round(10 * per_sample, 2)}
    functions = found["functions_us_per_event"]
    assert functions["decode (streamflow/sink/decode.py)"] == round(40 * per_sample, 2)
    assert functions["<module> (streamflow/cli.py)"] == round(100 * per_sample, 2)
    assert not any("psycopg" in name for name in functions)  # not ours: in its caller


def test_a_line_that_is_not_a_stack_is_skipped(tmp_path):
    path = tmp_path / "odd.txt"
    path.write_text("garbage\n" + RAW.splitlines()[0] + "\n")
    assert [count for _, count in profile.stacks(path)] == [30]
