"""Results into the docs: the tables of docs/BENCHMARKS.md and docs/RELIABILITY.md are
regenerated between markers from the latest run, so the numbers in the docs are always the
ones a command produced."""

from __future__ import annotations

import re
from pathlib import Path

DOCS = Path(__file__).resolve().parent.parent / "docs"


def replace_between(path: Path, name: str, body: str) -> None:
    """Replace the text between ``<!-- name:begin -->`` and ``<!-- name:end -->``."""
    text = path.read_text()
    begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
    pattern = re.compile(re.escape(begin) + ".*?" + re.escape(end), re.DOTALL)
    if not pattern.search(text):
        raise ValueError(f"{path} has no {begin} ... {end} markers")
    path.write_text(pattern.sub(lambda _m: f"{begin}\n{body.strip()}\n{end}", text))


def chaos_table(result: dict) -> str:
    plan = result["plan"]
    faults = ", ".join(f"{f['fault']} at {f['at_s']} s (took {f['took_s']} s)"
                       for f in result["faults"])
    oversized = "; ".join(
        f"{o['size']:,} bytes: {o['dead_letters']} `{', '.join(o['reason_codes'])}` dead letter "
        f"keeping {o['stored_bytes'] or 0:,} bytes, {o['rows']} rows" for o in result["oversized"])
    poisoned = "; ".join(
        f"{o['dead_letters']} `{', '.join(o['reason_codes'])}` dead letter, headers "
        f"{'kept byte for byte' if o['headers_kept'] else 'NOT kept'}, {o['rows']} rows"
        for o in result.get("poison_headers", []))
    rows = [
        ("events produced (delivery reports)", f"{result['produced'] or 0:,}"),
        ("oversized messages sent", oversized or "-"),
        ("poison-header messages sent (340 KB of \\xff)", poisoned or "-"),
        ("messages in Kafka", f"{result['kafka_messages']:,}"),
        ("sink exits by itself (started again, as the supervisor does)",
         ", ".join(f"exit {code}" for code in result.get("sink_exits", [])) or "none"),
        ("landed in raw.events", f"{result['landed']:,}"),
        ("dead-lettered (ingest)", f"{result['dead_lettered']:,}"),
        ("gone by delete_records, recorded as offset_gap",
         f"{result['gone_by_delete_records']:,} deleted unread, "
         f"{result['recorded_as_offset_gap']:,} in {result['offset_gap_letters']} "
         f"offset_gap dead letter(s)"),
        ("**lost**", f"**{result['lost']}**"),
        ("**duplicates**", f"**{result['duplicates']}**"),
    ]
    if r := result.get("recreation"):
        rows += [
            ("after re-creation: events produced (delivery reports)", f"{r['produced'] or 0:,}"),
            ("after re-creation: landed / dead-lettered (new topic id)",
             f"{r['landed']:,} / {r['dead_lettered']:,}"),
            ("after re-creation: **lost** / **duplicates**",
             f"**{r['lost']}** / **{r['duplicates']}**"),
            ("old incarnation's rows and dead letters kept",
             "yes" if r["old_incarnation_kept"] else "**no**"),
        ]
    if d := result.get("partition_drops"):
        rows.append(("time partitions dropped under the faults (lifecycle passes)",
                     f"{d['dropped']} in {d['passes']} passes ({', '.join(d['dropped_periods'])}),"
                     f" {len(d['failed'])} failed; {d['restored_rows']:,} rows restored from the "
                     "archive for the account"))
    rows += [
        ("faults", faults),
        ("producer rate", f"{plan['rate']:,.0f} events/s, {plan['invalid_rate']:.0%} invalid"),
        ("wall time", f"{result['seconds']} s"),
    ]
    return "\n".join(["| measure | result |", "|---|---|",
                      *(f"| {k} | {v} |" for k, v in rows)])


def refresh_reliability(result: dict) -> None:
    replace_between(DOCS / "RELIABILITY.md", "chaos", chaos_table(result))


def _ratio(value: float, limit: float) -> str:
    return f"{value / limit:.2f}" if limit else "-"


def benchmark_rows(doc: dict) -> list[tuple[str, str, str, str, str]]:
    """(measure, StreamFlow, limit or baseline, ratio, target) for what ``doc`` holds."""
    rows = []
    if "producer" in doc:
        p = doc["producer"]
        rows.append((f"producer, events/s ({p['events']:,} events)",
                     f"{p['streamflow_events_per_s']:,}",
                     f"Kafka ProducerPerformance {p['kafka_producer_performance_events_per_s']:,}",
                     f"{p['ratio']:.2f}", "≥ 100,000"))
    if "sink" in doc:
        s = doc["sink"]
        rows.append(("sink, events/s draining the backlog", f"{s['events_per_s']:,}",
                     f"raw COPY of the same rows {s['raw_copy_rows_per_s']:,}",
                     f"{s['ratio_to_raw_copy']:.2f}", "≥ 50,000"))
        rows.append(("sink vs the reference design", f"{s['events_per_s']:,}",
                     f"one JSON parse + one INSERT per message "
                     f"{s['reference_design_events_per_s']:,}",
                     f"{s['ratio_to_reference_design']:.1f}×", "-"))
        if "synchronous_commit_on_events_per_s" in s:
            rows.append(("sink, synchronous_commit off vs on",
                         f"{s['synchronous_commit_off_events_per_s']:,}",
                         f"on: {s['synchronous_commit_on_events_per_s']:,}",
                         _ratio(s["synchronous_commit_off_events_per_s"],
                                s["synchronous_commit_on_events_per_s"]), "-"))
    if "quix" in doc:
        q = doc["quix"]
        rows.append((f"sink vs Quix Streams' PostgreSQLSink, events/s from start "
                     f"({q['events']:,} events)", f"{q['streamflow']['events_per_s_from_start']:,}",
                     f"Quix Streams {q['quixstreams_version']} at its defaults "
                     f"{q['quix']['events_per_s_from_start']:,}", f"{q['ratio']:.2f}×",
                     f"≥ {q['target_ratio']}×"))
    if "latency" in doc:
        floor = doc["latency"]["broker_end_to_end"]
        for r in doc["latency"]["rates"]:
            rows.append((f"produce → row, {r['rate']:,} events/s (p50 / p95 / p99 ms)",
                         f"{r['p50_ms']} / {r['p95_ms']} / {r['p99_ms']}",
                         f"broker end-to-end {floor['floor_basis']} {floor['floor_ms']} ms",
                         f"{r['p50_ratio_to_broker']}× (p50)",
                         "p50 ≤ 10×, p99 ≤ 50 ms" if r["rate"] == 1_000 else "-"))
    for w in [doc.get("windows", {}), *doc.get("windows_under_load", [])]:
        if "p95_s" in w:
            target = w.get("target_p95_s")
            rows.append((f"window visible after close at {w.get('rate', 50):,} events/s, "
                         f"p50 / p95 s", f"{w['p50_s']} / {w['p95_s']}",
                         "10 s window, 10 s grace",
                         _ratio(w["p95_s"], target) if target else "-",
                         f"p95 ≤ {target} s" if target else "-"))
    if "catchup" in doc:
        c = doc["catchup"]
        rows.append((f"micro-batch catch-up, events/s ({c['events']:,} at max rate, full "
                     f"stack)", f"{c['microbatch_events_per_s']:,}",
                     f"sink landing the same events {c['sink_events_per_s']:,}",
                     f"{c['ratio']:.2f}", f"≥ {c['target_ratio']}"))
    if "live" in doc:
        v = doc["live"]
        rows.append(("produce → browser, p50 / p95 s",
                     f"{v['produce_to_client_p50_s']} / {v['produce_to_client_p95_s']}",
                     f"frame interval {1 / v['server_frame_rate']:.2f} s",
                     _ratio(v["produce_to_client_p95_s"], v["target_p95_s"]),
                     f"p95 ≤ {v['target_p95_s']} s"))
        rows.append((f"live view fan-out, frames/s per client ({v['clients']} clients)",
                     f"{v['frames_per_s_per_client']}", f"server rate {v['server_frame_rate']}",
                     _ratio(v["frames_per_s_per_client"], v["server_frame_rate"]), "-"))
    memory = [("producer", doc.get("producer_rss")), ("sink", doc.get("sink")),
              ("live view, 200 clients", doc.get("live"))]
    for name, part in memory:
        if part and "peak_rss_mb" in part:
            limit = part.get("target_peak_rss_mb")
            rows.append((f"peak RSS, {name}", f"{part['peak_rss_mb']} MB",
                         f"target {limit} MB" if limit else "-",
                         _ratio(part["peak_rss_mb"], limit) if limit else "-",
                         f"≤ {limit} MB" if limit else "-"))
    return rows


def benchmark_table(doc: dict) -> str:
    env = doc.get("environment", {})
    head = (f"Run {doc.get('stamp', '?')} on {env.get('cpus', '?')} cores, "
            f"{env.get('memory_gib', '?')} GiB, Kafka {env.get('kafka', '?')}, "
            f"PostgreSQL {env.get('postgres', '?')}, Python {env.get('python', '?')}.")
    lines = [head, "", "| measure | StreamFlow | limit or baseline | ratio | target |",
             "|---|---:|---|---:|---|"]
    lines += [f"| {' | '.join(row)} |" for row in benchmark_rows(doc)]
    return "\n".join(lines)


def refresh_benchmarks(doc: dict) -> None:
    replace_between(DOCS / "BENCHMARKS.md", "benchmarks", benchmark_table(doc))


def _series_label(name: str) -> str:
    kind, _, part = name.partition(".")
    labels = {"rss_mb": f"RSS, {part} (MB)", "pss_mb": f"PSS, {part} (MB)",
              "disk_mb": f"disk, {part} (MB)", "sink_lag_events": "sink lag (messages)",
              "microbatch_backlog_rows": "micro-batch backlog (rows)",
              "run_seconds": "micro-batch run duration (s)",
              "window_latency_s": "window visible after close (s)"}
    return labels.get(kind, name)


def _number(value: float | None, signed: bool = False) -> str:
    if value is None:
        return "-"
    return f"{value:+,.1f}" if signed else f"{value:,.1f}"


def soak_table(doc: dict) -> str:
    """The soak's trends: first-third mean, last-third mean, change and slope per series."""
    env, plan, summary = doc.get("environment", {}), doc["plan"], doc["summary"]
    restarts = sum(summary["restarts"].values())
    head = (f"Run {doc.get('stamp', '?')} on {env.get('cpus', '?')} cores, "
            f"{env.get('memory_gib', '?')} GiB: {plan['rate']:,.0f} events/s for "
            f"{summary['seconds'] / 60:.0f} minutes after a {doc['warm_up_s']} s warm-up; "
            f"{summary['events_produced']:,} events produced, {summary['events_landed']:,} "
            f"landed ({summary['events_per_s'] or 0:,}/s; sink kept up: "
            f"**{'yes' if summary['sink_kept_up'] else 'no'}**), "
            f"{restarts} worker restarts, {summary['failed_runs']} failed runs. "
            f"Memory flat (total PSS, shared pages counted once: last third within "
            f"{summary['flat_tolerance']:.0%} of the first): "
            f"**{'yes' if summary['memory_flat'] else 'no'}**.")
    lines = [head, "", "| series | first third | last third | change | slope per hour |",
             "|---|---:|---:|---:|---:|"]
    for name, t in summary["trends"].items():
        change = "-" if t["change"] is None else f"{t['change']:+.1%}"
        lines.append(f"| {_series_label(name)} | {_number(t['first_third_mean'])} | "
                     f"{_number(t['last_third_mean'])} | {change} | "
                     f"{_number(t['slope_per_hour'], signed=True)} |")
    lines += ["", "| timing | runs or windows | p50 | p95 | max |", "|---|---:|---:|---:|---:|"]
    for key in ("run_seconds", "window_latency_s"):
        q = summary[key]
        lines.append(f"| {_series_label(key)} | {q['count']} | {q.get('p50', '-')} | "
                     f"{q.get('p95', '-')} | {q.get('max', '-')} |")
    return "\n".join([*lines, "", "![soak](img/soak.png)"])


def refresh_soak(doc: dict) -> None:
    replace_between(DOCS / "BENCHMARKS.md", "soak", soak_table(doc))
