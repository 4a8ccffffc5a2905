"""Prometheus metrics of the workers; each worker process serves them on its own port."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram, start_http_server

from streamflow.infra.processes import port_is_free

EVENTS_PRODUCED = Counter("streamflow_events_produced", "Events handed to Kafka by the producer")
EVENTS_DELIVERED = Counter("streamflow_events_delivered", "Events acknowledged by the broker")
DELIVERY_FAILURES = Counter("streamflow_delivery_failures", "Events Kafka could not deliver")
EVENTS_RESENT = Counter("streamflow_events_resent",
                        "Producer re-sends of events Kafka did not take in time")
EVENTS_CONSUMED = Counter("streamflow_events_consumed", "Messages the sink consumed")
# No table named here: the producer imports this module, and naming raw.events from
# streamflow.db.tables would load SQLAlchemy into it.
EVENTS_LANDED = Counter("streamflow_events_landed", "New event rows the sink landed")
DEAD_LETTERS = Counter("streamflow_dead_letters", "Messages dead-lettered", ["stage", "reason"])
QUARANTINED = Counter(
    "streamflow_quarantined",
    "Entries recorded in the quarantine (not processable after every retry)", ["kind"])
OFFSET_GAP_MESSAGES = Counter(
    "streamflow_offset_gap_messages",
    "Messages gone from Kafka (retention, delete-records) before the sink read them", ["topic"])
TOPIC_RECREATIONS = Counter(
    "streamflow_topic_recreations",
    "Topics found deleted and created again (new topic id); read from their beginning",
    ["topic"])
BATCH_SECONDS = Histogram(
    "streamflow_sink_batch_seconds", "Time to land one batch (decode + transaction)",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
# Seconds from an event's Kafka timestamp (set by the producer) to the commit of the sink's
# transaction holding its row: what the live view shows as produce->row p50/p95. Buckets from
# the sink's ~0.1 s idle poll up to a backlog of minutes.
PRODUCE_TO_ROW_BUCKETS = (0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)
PRODUCE_TO_ROW_SECONDS = Histogram(
    "streamflow_sink_produce_to_row_seconds",
    "Event timestamp to the commit of its row (a sample of each batch)",
    buckets=PRODUCE_TO_ROW_BUCKETS,
)
CONSUMER_LAG = Gauge("streamflow_consumer_lag", "Messages behind the end of the partition",
                     ["topic", "partition"])
# The partitions a sink holds: `streamflow status` lists them for each sink of the group.
SINK_PARTITIONS = Gauge("streamflow_sink_partitions",
                        "Partitions this sink is assigned (1 each)", ["topic", "partition"])
FENCED_LANDINGS = Counter(
    "streamflow_sink_fenced_landings",
    "Landings rolled back because another sink had claimed their partitions meanwhile")
RATE = Gauge("streamflow_rate", "Recent events per second of this worker", ["worker"])
DB_AVAILABLE = Gauge("streamflow_database_available", "1 when the sink can reach PostgreSQL")



def forget_partition(topic: str, partition: int) -> None:
    """A partition the sink no longer holds: no longer listed, and its lag is its new
    holder's to report."""
    SINK_PARTITIONS.remove(topic, str(partition))
    CONSUMER_LAG.remove(topic, str(partition))


def held_partitions(samples: Samples) -> list[int]:
    """The partitions a scraped sink holds (``SINK_PARTITIONS``), in order."""
    return sorted(int(labels["partition"]) for labels, value
                  in samples.get("streamflow_sink_partitions", ()) if value)


# How far past the configured port to look for a free one (several workers on one host).
PORT_SEARCH = 50


def serve(first_port: int, host: str) -> int:
    """Serve /metrics on ``host`` (STREAMFLOW_METRICS_HOST), on the first free port from
    ``first_port``; 0 means any free port."""
    if first_port == 0:
        server, _ = start_http_server(0, addr=host)
        return server.server_port
    for port in range(first_port, first_port + PORT_SEARCH):
        if port_is_free(port, host):
            start_http_server(port, addr=host)
            return port
    raise OSError(f"no free metrics port in {first_port}-{first_port + PORT_SEARCH - 1}")


# Sample name -> [(labels, value)], as a worker serves them.
Samples = dict[str, list[tuple[dict[str, str], float]]]


def parse(text: str) -> Samples:
    """Prometheus text exposition as sample name -> [(labels, value)]."""
    from prometheus_client.parser import text_string_to_metric_families

    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append((sample.labels, sample.value))
    return samples


def scrape(address: str, *, timeout_s: float = 1.0) -> Samples | None:
    """The samples a worker serves at ``address`` (its http://.../metrics); None: no answer.
    `streamflow status` and the live view's health panel both read workers through this."""
    import urllib.request

    try:
        with urllib.request.urlopen(address, timeout=timeout_s) as response:
            return parse(response.read().decode())
    except (OSError, ValueError):
        return None


def total(samples: Samples, name: str) -> float | None:
    """A sample summed over its labels (None: the worker does not serve it)."""
    values = samples.get(name)
    return sum(v for _, v in values) if values else None
