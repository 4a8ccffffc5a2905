"""The live page's panels in Debian's Chromium: chart, notifications, health and latency, the
"Kafka unreachable" state, pause and filter, and the Cluster view (on the three-node cluster
too: a node stopped shows as down, its partitions under-replicated, Kafka amber).

One pipeline for the module, laid out as `streamflow up` lays it out: a producer and a sink
(on a topic of their own, dead letters to the pipeline's dead-letter topic), each recorded
with its /metrics address in a run directory next to a supervisor entry, and a live server
(in this process) that reads that directory. Screenshots go to test-artifacts/.
"""

from __future__ import annotations

import sys
import uuid
from collections.abc import Iterator
from functools import partial
from typing import NamedTuple

import orjson
import psutil
import pytest

from streamflow import topics
from streamflow.cluster_health import embedded_nodes
from streamflow.infra import kafka_server, processes
from streamflow.infra.processes import free_port
from streamflow.kafka_clients import producer
from streamflow.kafka_connection import KafkaConnection
from streamflow.live import health
from streamflow.live.server import LiveConfig
from tests.conftest import create_topic, wait_for, worker_env
from tests.e2e.conftest import screenshot
from tests.helpers.live import live_in_process

WAIT_MS = 30_000


class Pipeline(NamedTuple):
    port: int  # the live view's
    lane: str  # the producer's and sink's topic
    group: str  # the sink's consumer group


def _spawn_worker(platform, run_dir, name: str, args: list[str]) -> processes.ProcessState:
    port = free_port()
    state, _ = processes.spawn(
        name, [sys.executable, "-m", "streamflow.cli", *args, "--metrics-port", str(port)],
        run_dir=run_dir, log_path=run_dir / f"{name}.log", env=worker_env(platform),
        address=f"http://127.0.0.1:{port}/metrics")
    return state


@pytest.fixture(scope="module")
def pipeline(platform, tmp_path_factory) -> Iterator[Pipeline]:
    run_dir = tmp_path_factory.mktemp("live-run")
    lane = create_topic(platform, f"t-live-{uuid.uuid4().hex[:10]}")
    group = f"g-{lane}"
    me = psutil.Process()
    # The supervisor's entry marks a run directory of `streamflow up` (this process stands in).
    processes.write_state(run_dir, processes.ProcessState(
        health.SUPERVISOR, me.pid, "", [], "", me.create_time()))
    workers = [
        _spawn_worker(platform, run_dir, health.PRODUCER,
                      ["produce", "--rate", "40", "--invalid-rate", "0.05", "--topic", lane]),
        _spawn_worker(platform, run_dir, health.SINK,
                      ["sink", "--topic", lane, "--group", group, "--batch-size", "500",
                       "--instance-id", f"{group}-1"]),
    ]
    try:
        with live_in_process(LiveConfig(platform.kafka, run_dir=run_dir)) as (live, port):
            wait_for(lambda: live.feed.connected, timeout_s=60,
                     message="the live view assigned its partitions")
            yield Pipeline(port, lane, group)
    finally:
        for worker in workers:
            processes.terminate(worker.pid)


def open_page(page, port: int, view: str = "") -> None:
    page.goto(f"http://127.0.0.1:{port}/{view}")
    page.wait_for_selector("#state[data-state=open]", timeout=WAIT_MS)
    page.wait_for_function("() => window.__lastFrame", timeout=WAIT_MS)


def send(platform, topic: str, documents: list[dict]) -> None:
    prod = producer(platform.kafka)
    for document in documents:
        prod.produce(topic, orjson.dumps(document), b"k")
    assert prod.flush(30) == 0


def test_the_chart_has_axes_units_a_legend_and_keeps_low_rates_visible(
        platform, pipeline, browser_page):
    page = browser_page
    open_page(page, pipeline.port)
    # A burst of thousands of events in a second next to a single dead letter.
    send(platform, topics.USER_EVENTS, [{"event_id": str(uuid.uuid4())} for _ in range(5000)])
    send(platform, topics.DEAD_LETTER, [{"reason": "one"}])
    page.wait_for_function(
        "() => { const t = window.__lastFrame.topics;"
        " return Math.max(...t['user-events'].series) >= 1000"
        " && Math.max(...t['dead-letter-topic'].series) >= 1; }", timeout=WAIT_MS)

    chart = page.evaluate("""() => {
        const u = window.__chart, t = window.__lastFrame.topics;
        const peak = Math.max(...t['dead-letter-topic'].series);
        const busiest = Math.max(...t['user-events'].series);
        const zero = u.valToPos(0, 'y');
        return {axes: u.axes.map(a => a.label), series: u.series.map(s => s.label),
                legend: document.querySelector('.u-legend').innerText,
                peak, busiest, share: (zero - u.valToPos(peak, 'y')) / (zero - u.valToPos(
                    u.scales.y.max, 'y'))};
    }""")
    assert chart["axes"] == ["time (local)", "messages/s (arcsinh scale)"]
    assert chart["series"][1:] == ["user-events", "analytics (windows)", "notifications",
                                   "dead letters"]
    for label in chart["series"][1:]:
        assert label in chart["legend"]
    assert "/s" in chart["legend"]  # real rates, with their unit
    # On a linear axis one dead letter beside >= 1000 events/s is < 0.1% of the height,
    # i.e. on the baseline; here it stands at least a fifth of the way up.
    assert chart["peak"] / chart["busiest"] < 0.001
    assert chart["share"] >= 0.2, chart
    screenshot(page, "live-chart", "#chart")


def test_the_notifications_panel_fills(platform, pipeline, browser_page):
    page = browser_page
    open_page(page, pipeline.port)
    marker = uuid.uuid4().hex
    send(platform, topics.NOTIFICATIONS, [
        {"event_id": str(uuid.uuid4()), "event_type": "purchase", "user_id": f"u-{marker}"},
        {"event_id": str(uuid.uuid4()), "event_type": "<b>login</b>", "user_id": "u-2"}])
    page.wait_for_selector(f"#notifications li:has-text('{marker}')", timeout=WAIT_MS)
    shown = page.inner_text("#notifications")
    assert "purchase" in shown and "<b>login</b>" in shown  # markup shown as text
    assert page.evaluate("() => document.querySelectorAll('#notifications b').length") == 0
    page.click(f"#notifications li:has-text('{marker}')")
    assert marker in page.inner_text("#inspector")
    screenshot(page, "live-notifications", "#notifications")


def health_rows(page) -> dict[str, dict]:
    return {row["name"]: row for row in page.evaluate(
        "() => [...document.querySelectorAll('#health tbody tr')].map(tr => ({"
        " name: tr.dataset.component, state: tr.dataset.state,"
        " cells: [...tr.children].map(td => td.innerText)}))")}


def test_the_health_panel_shows_each_component_and_the_latency(pipeline, browser_page):
    page = browser_page
    open_page(page, pipeline.port)
    # The producer's rate, the sink's landings and the latency come from their /metrics.
    page.wait_for_function(
        "() => { const h = window.__lastFrame.health, by = {};"
        " h.components.forEach(c => by[c.name] = c);"
        " return by.producer.state === 'ok' && by.producer.rate > 0 && by.sink.state === 'ok'"
        " && by.PostgreSQL.state === 'ok' && h.latency.samples > 0 && h.sink_lag !== null; }",
        timeout=60_000)
    rows = health_rows(page)
    assert list(rows) == ["Kafka", "PostgreSQL", "producer", "sink", "micro-batch (Dagster)"]
    assert rows["Kafka"]["state"] == "ok" and "broker" in rows["Kafka"]["cells"][3]
    assert rows["producer"]["cells"][2].endswith("events/s")
    assert "lag" in rows["sink"]["cells"][3]
    # No Dagster processes in this run directory: said so, not guessed.
    assert rows["micro-batch (Dagster)"]["state"] == "down"
    assert "dagster-daemon" in rows["micro-batch (Dagster)"]["cells"][3]
    latency = page.inner_text("#latency")
    assert "p50" in latency and "p95" in latency and "events sampled" in latency
    assert page.inner_text("#sink-lag").startswith("sink lag: ")
    screenshot(page, "live-health", "#health >> xpath=..")
    screenshot(page, "live-page")  # the whole page, every panel filled (README: docs/img)


def test_kafka_unreachable_is_shown(platform, browser_page):
    closed = KafkaConnection(f"127.0.0.1:{free_port()}")  # nothing listens there
    page = browser_page
    with live_in_process(LiveConfig(closed)) as (_live, port):
        page.goto(f"http://127.0.0.1:{port}/")
        page.wait_for_selector("#state[data-state=kafka-down]", timeout=WAIT_MS)
        assert page.inner_text("#state") == "Kafka unreachable"
        banner = page.inner_text("#kafka-banner")
        assert "Kafka unreachable since" in banner and closed.bootstrap in banner
        kafka = page.evaluate("() => window.__lastFrame.health.components[0]")
        assert kafka["name"] == "Kafka" and kafka["state"] == "down"
        assert page.evaluate("() => window.__lastFrame.connected") is False
        screenshot(page, "live-kafka-unreachable")


def event_texts(page) -> list[str]:
    return page.evaluate("() => [...document.querySelectorAll('#events li')]"
                         ".map(li => li.innerText)")


def test_pause_freezes_the_feed_resume_continues_and_filters_narrow_it(
        platform, pipeline, browser_page):
    page = browser_page
    open_page(page, pipeline.port)
    tag = uuid.uuid4().hex[:8]
    send(platform, topics.USER_EVENTS, [
        {"event_id": f"{tag}-{i}", "event_type": kind, "user_id": f"u-{i}"}
        for i, kind in enumerate(["page_view", "purchase", "page_view", "login"])])
    page.wait_for_selector(f"#events li:has-text('{tag}-3')", timeout=WAIT_MS)

    page.click("#pause")
    assert page.inner_text("#pause") == "Resume"
    frozen = event_texts(page)
    later = f"{tag}-later"
    send(platform, topics.USER_EVENTS, [{"event_id": later, "event_type": "purchase"}])
    page.wait_for_function(  # the page received it ...
        "m => window.__lastFrame.events.some(e => e.payload.includes(m))", arg=later,
        timeout=WAIT_MS)
    page.wait_for_function(  # ... and counts it, without listing it
        "() => /paused, [1-9]/.test(document.getElementById('feed-status').innerText)",
        timeout=WAIT_MS)
    assert event_texts(page) == frozen
    screenshot(page, "live-feed-paused", "#events >> xpath=..")

    page.click("#pause")
    page.wait_for_selector(f"#events li:has-text('{later}')", timeout=WAIT_MS)

    page.select_option("#event-type", "purchase")
    shown = event_texts(page)
    assert shown and all("purchase" in text for text in shown)
    assert any(later in text for text in shown) and not any(f"{tag}-0" in t for t in shown)
    page.select_option("#event-type", "")
    page.fill("#event-filter", f"{tag}-2")
    assert [t for t in event_texts(page) if tag in t] == event_texts(page)
    assert len(event_texts(page)) == 1 and f"{tag}-2" in event_texts(page)[0]
    screenshot(page, "live-feed-filtered", "#events >> xpath=..")


def test_the_cluster_view_lists_topics_and_groups_with_lag(pipeline, browser_page):
    page = browser_page
    open_page(page, pipeline.port, "#cluster")
    assert page.is_hidden("#view-stream")
    page.wait_for_selector(f"#cluster-topics tr[data-topic='{pipeline.lane}']", timeout=WAIT_MS)
    for topic in (topics.USER_EVENTS, topics.ANALYTICS, topics.NOTIFICATIONS,
                  topics.DEAD_LETTER):
        assert page.is_visible(f"#cluster-topics tr[data-topic='{topic}']")
    lane = page.evaluate("t => [...document.querySelectorAll("
                         "`#cluster-topics tr[data-topic='${t}'] td`)].map(td => td.innerText)",
                         pipeline.lane)
    assert lane[1] == "3" and lane[2] != "–"  # partitions, retention
    page.wait_for_selector(f"#cluster-groups tr[data-group='{pipeline.group}']",
                           timeout=WAIT_MS)
    group = page.evaluate("g => window.__lastCluster.groups.find(x => x.group_id === g)",
                          pipeline.group)
    assert group["member_count"] == 1 and group["total_lag"] is not None
    assert {p["topic"] for p in group["partitions"]} == {pipeline.lane}
    assert page.locator(f"#cluster-groups tr.partition[data-group='{pipeline.group}']"
                        ).count() == 3
    first = page.evaluate("() => window.__lastCluster.t")
    page.wait_for_function("t => window.__lastCluster.t > t", arg=first, timeout=WAIT_MS)
    screenshot(page, "live-cluster")

    page.click("nav a[href='#stream']")
    page.wait_for_selector("#view-stream:not([hidden])", timeout=WAIT_MS)
    assert page.is_hidden("#view-cluster")


def test_the_cluster_view_and_health_show_a_node_down_on_the_three_node_cluster(
        cluster, browser_page):
    """A live view on the three-node cluster, with its nodes as `streamflow live` reads them
    from the settings: node 2 stopped shows as down, the partitions it held as
    under-replicated (highlighted), and the health panel's Kafka as degraded (amber)."""
    stopped = 2
    page = browser_page
    nodes = partial(embedded_nodes, cluster.settings)
    with live_in_process(LiveConfig(cluster.kafka, nodes=nodes)) as (live, port):
        wait_for(lambda: live.feed.connected, timeout_s=60,
                 message="the live view assigned its partitions")
        open_page(page, port, "#cluster")
        page.wait_for_selector("#replication-state[data-state=ok]", timeout=60_000)
        assert kafka_server.stop(cluster.settings, node_id=stopped) == "stopped"
        try:
            page.wait_for_selector(f"#brokers li[data-broker='{stopped}'][data-up=false]",
                                   timeout=WAIT_MS)
            page.wait_for_selector("#replication-state[data-state=degraded]", timeout=60_000)
            partitions = cluster.settings.user_events_partitions
            page.wait_for_function(
                "n => document.querySelectorAll(\"#cluster-partitions "
                "tr.under-replicated[data-partition^='user-events:']\").length === n",
                arg=partitions, timeout=60_000)
            replication = page.evaluate("() => window.__lastCluster.replication")
            assert [(b["id"], b["up"]) for b in replication["brokers"]] == [
                (1, True), (2, False), (3, True)]
            events = [p for p in replication["partitions"] if p["topic"] == topics.USER_EVENTS]
            assert len(events) == partitions and all(
                p["state"] == "under-replicated" and stopped not in p["isr"] for p in events)
            assert f"broker {stopped} down" in page.inner_text("#replication-state")
            # The under-replicated rows are highlighted: another background than in-sync rows.
            assert page.evaluate(
                "() => getComputedStyle(document.querySelector("
                "'#cluster-partitions tr.under-replicated td')).backgroundColor"
            ) != "rgba(0, 0, 0, 0)"
            screenshot(page, "live-cluster-node-down")

            page.click("nav a[href='#stream']")
            page.wait_for_selector("#health tr[data-component=Kafka][data-state=degraded]",
                                   timeout=WAIT_MS)
            # The panel's broker count and the partitions' ISR come from two probes: the
            # metadata may still list the stopped node a moment after the ISR shrank.
            kafka = wait_for(
                lambda: (row := health_rows(page)["Kafka"])["cells"][3].startswith("2 of 3")
                and row, timeout_s=60, message=f"the health panel to count broker {stopped} down")
            assert f"broker {stopped} down" in kafka["cells"][3]
            assert "under-replicated" in kafka["cells"][3]
            screenshot(page, "live-health-node-down", "#health >> xpath=..")
        finally:
            kafka_server.start(cluster.settings, node_id=stopped)
        page.wait_for_selector("#health tr[data-component=Kafka][data-state=ok]",
                               timeout=120_000)
