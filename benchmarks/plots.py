"""PNG charts of one `make bench` or `make soak` document (matplotlib, no display needed)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402 - after choosing the backend


def _bars(ax, labels: list[str], values: list[float], colors: list[str], unit: str) -> None:
    bars = ax.barh(labels, values, color=colors)
    ax.bar_label(bars, labels=[f"{v:,.0f} {unit}" for v in values], padding=3, fontsize=8)
    ax.invert_yaxis()
    ax.margins(x=0.25)


def throughput(doc: dict, path: Path) -> Path:
    producer, sink = doc["producer"], doc["sink"]
    fig, ax = plt.subplots(figsize=(8, 3.2))
    _bars(ax, ["StreamFlow producer", "Kafka ProducerPerformance", "StreamFlow sink",
               "raw COPY (PostgreSQL limit)", "reference design sink"],
          [producer["streamflow_events_per_s"], producer["kafka_producer_performance_events_per_s"],
           sink["events_per_s"], sink["raw_copy_rows_per_s"],
           sink["reference_design_events_per_s"]],
          ["#2b6cb0", "#a0aec0", "#2f855a", "#a0aec0", "#c05621"], "/s")
    ax.set_title(f"Throughput, {sink['events']:,}-event backlog (events/s)")
    return _save(fig, path)


def latency(doc: dict, path: Path) -> Path:
    runs = doc["latency"]["rates"]
    fig, ax = plt.subplots(figsize=(8, 3.2))
    width = 0.25
    for i, key in enumerate(("p50_ms", "p95_ms", "p99_ms")):
        xs = [j + (i - 1) * width for j in range(len(runs))]
        ax.bar(xs, [r[key] for r in runs], width, label=key.split("_")[0])
    floor = doc["latency"]["broker_end_to_end"]
    ax.axhline(floor["floor_ms"], color="#718096", ls="--",
               label=f"broker end-to-end {floor['floor_basis']}")
    ax.set_xticks(range(len(runs)), [f"{r['rate']:,}/s" for r in runs])
    ax.set_ylabel("produce → row visible (ms)")
    ax.set_title("Latency at fixed rates")
    ax.legend(fontsize=8)
    return _save(fig, path)


def memory(doc: dict, path: Path) -> Path:
    labels, values = ["sink"], [doc["sink"]["peak_rss_mb"]]
    if "producer_rss" in doc:
        labels.insert(0, "producer")
        values.insert(0, doc["producer_rss"]["peak_rss_mb"])
    if "live" in doc and "peak_rss_mb" in doc["live"]:
        labels.append("live view (200 clients)")
        values.append(doc["live"]["peak_rss_mb"])
    fig, ax = plt.subplots(figsize=(8, 2.4))
    _bars(ax, labels, values, ["#2b6cb0"] * len(values), "MB")
    ax.axvline(300, color="#c53030", ls="--", label="sink target 300 MB")
    ax.legend(fontsize=8, loc="lower right")
    ax.set_title("Peak RSS per worker")
    return _save(fig, path)


def soak(doc: dict, path: Path) -> Path:
    """Four panels over the soak's minutes: RSS per process, disk per store, sink lag and
    micro-batch backlog, run duration and window latency."""
    samples = doc["samples"]
    minutes = [s["t_s"] / 60 for s in samples]
    fig, axes = plt.subplots(2, 2, figsize=(11, 7), sharex=True)
    rss, disk, behind, timing = axes.flat
    for name in sorted({n for s in samples for n in s["processes"]}):
        points = [(s["t_s"] / 60, s["processes"][name]["rss_mb"])
                  for s in samples if name in s["processes"]]
        rss.plot(*zip(*points, strict=True), label=name)
    rss.set_ylabel("RSS (MB)")
    rss.set_title("Memory per process (children summed)")
    rss.legend(fontsize=7, ncol=2)
    for store in sorted({n for s in samples for n in s["disk_mb"]}):
        disk.plot(minutes, [s["disk_mb"].get(store, 0) for s in samples], label=store)
    disk.set_ylabel("disk (MB)")
    disk.set_title("Disk per store")
    disk.legend(fontsize=7)
    behind.plot(minutes, [s["sink_lag"] for s in samples], label="sink lag (messages)")
    behind.plot(minutes, [s["backlog"] for s in samples], label="micro-batch backlog (rows)")
    behind.set_ylabel("events behind")
    behind.set_title("Lag")
    behind.legend(fontsize=7)
    runs = [(r["ended_s"] / 60, r["seconds"]) for s in samples for r in s["runs"]]
    windows = [(w["visible_s"] / 60, w["latency_s"]) for s in samples for w in s["windows"]]
    if runs:
        timing.scatter(*zip(*runs, strict=True), s=6, label="micro-batch run duration")
    if windows:
        timing.scatter(*zip(*windows, strict=True), s=6, label="window visible after close")
    if runs or windows:
        timing.legend(fontsize=7)
    else:
        timing.text(0.5, 0.5, "no run finished, no window visible", ha="center",
                    transform=timing.transAxes)
    timing.set_ylabel("seconds")
    timing.set_title("Run duration and window latency")
    for ax in (behind, timing):
        ax.set_xlabel("minutes")
    plan = doc["plan"]
    fig.suptitle(f"Soak: {plan['rate']:,.0f} events/s for {plan['minutes']:g} minutes")
    return _save(fig, path)


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def draw_all(doc: dict, stem: Path) -> list[Path]:
    """``stem``-throughput.png etc. for what ``doc`` holds."""
    drawn = []
    if "producer" in doc and "sink" in doc:
        drawn.append(throughput(doc, stem.with_name(stem.name + "-throughput.png")))
        drawn.append(memory(doc, stem.with_name(stem.name + "-memory.png")))
    if "latency" in doc:
        drawn.append(latency(doc, stem.with_name(stem.name + "-latency.png")))
    return drawn
