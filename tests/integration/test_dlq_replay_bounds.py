"""Bounded, scoped dead-letter replays against the real Kafka and PostgreSQL: a replay (and
its dry run) streams its selection in chunks, holds no transaction or row lock while it sends,
two replays at once send each letter once, and a topic outside STREAMFLOW_REPLAY_TOPICS is
refused by the CLI and the Dagster job alike."""

from __future__ import annotations

import threading
import uuid
from concurrent.futures import ThreadPoolExecutor

import psycopg
import pytest
from sqlalchemy import text

from assets.dlq_replay import dlq_replay_job
from resources import KafkaResource, PostgresResource
from streamflow import topics
from streamflow.db.engine import connect_admin
from streamflow.dlq_ops import replay as replays
from streamflow.dlq_ops.selection import Selection
from streamflow.kafka_clients import producer
from streamflow.topics import message_count
from tests.conftest import create_topic
from tests.integration.test_dlq_operations import dlq, replay, send_raw, sink

# What the resources below saw while a job ran (a Dagster resource is rebuilt from its config
# for the run, so it cannot hand anything back itself).
SEEN: dict[str, list] = {"payload_rows": [], "during_send": []}


def _dead_letters(platform, engine, n: int) -> tuple[str, list[int]]:
    """``n`` ingest dead letters (not JSON) from a scratch topic: the topic and their ids."""
    source = create_topic(platform, f"bounds-{uuid.uuid4().hex[:8]}")
    send_raw(platform, source, [b"%d not json" % i for i in range(n)])
    sink(platform, source)
    with engine.connect() as conn:
        ids = conn.execute(text("SELECT id FROM raw.dead_letters WHERE source_topic = :t "
                                "ORDER BY id"), {"t": source}).scalars().all()
    assert len(ids) == n
    return source, list(ids)


def _replay_counts(engine, ids: list[int]) -> list[int]:
    with engine.connect() as conn:
        return conn.execute(text("SELECT replay_count FROM raw.dead_letters "
                                 "WHERE id = ANY(:ids) ORDER BY id"), {"ids": ids}).scalars().all()


class CountingPostgres(PostgresResource):
    """The session's database; records how many rows each statement that read dead letters'
    payloads returned: what a replay holds at once."""

    def connect(self) -> psycopg.Connection:
        conn = super().connect()
        rows = SEEN["payload_rows"]

        class Counting(psycopg.Cursor):
            def execute(self, *args, **kwargs):
                result = super().execute(*args, **kwargs)
                if self.description and any(c.name == "payload" for c in self.description):
                    rows.append(self.rowcount)
                return result

        conn.cursor_factory = Counting
        return conn


def _run_job(resources, **config):
    return dlq_replay_job.execute_in_process(
        run_config={"ops": {"replay_dead_letters": {"config": config}}},
        resources=resources, raise_on_error=False)


def _metadata(result) -> dict:
    (output,) = [e for e in result.all_events if e.event_type_value == "STEP_OUTPUT"]
    return {k: v.value for k, v in output.event_specific_data.metadata.items()}


def test_a_replay_and_its_dry_run_stream_the_selection_in_chunks(platform, engine, monkeypatch):
    source, ids = _dead_letters(platform, engine, 10)
    target = create_topic(platform, f"bounds-target-{uuid.uuid4().hex[:8]}")
    monkeypatch.setenv("STREAMFLOW_REPLAY_TOPICS", target)
    monkeypatch.setattr(replays, "CHUNK_LETTERS", 3, raising=False)
    resources = {"postgres": CountingPostgres(database_url=platform.database_url),
                 "kafka": KafkaResource(bootstrap_servers=platform.bootstrap)}

    for dry_run in (True, False):
        SEEN["payload_rows"].clear()
        result = _run_job(resources, source=source, topic=target, dry_run=dry_run)
        assert result.success
        # Never more than a chunk's letters in memory: 10 letters in four reads of 3, 3, 3, 1.
        assert SEEN["payload_rows"] == [3, 3, 3, 1], SEEN["payload_rows"]
        metadata = _metadata(result)
        assert (metadata["selected"], metadata["chunks"]) == (10, 4)
        assert metadata["sent"] == (0 if dry_run else 10)
        assert message_count(platform.kafka, target) == (0 if dry_run else 10)
    assert _replay_counts(engine, ids) == [1] * 10


class ProbingProducer:
    """A real producer that, when the replay sends its first message, looks at the database
    from another session: the replay's session and the selected rows."""

    def __init__(self, inner, database_url: str, letter_id: int):
        self.inner, self.database_url, self.letter_id = inner, database_url, letter_id

    def produce(self, *args, **kwargs):
        if not SEEN["during_send"]:
            SEEN["during_send"].append(self._probe())
        return self.inner.produce(*args, **kwargs)

    def _probe(self) -> dict:
        with connect_admin(self.database_url, "replay-probe") as conn:
            open_transactions = conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s "
                "AND state LIKE 'idle in transaction%%'", ("streamflow-dagster",)).fetchone()[0]
            try:
                with conn.transaction():
                    conn.execute("SELECT id FROM raw.dead_letters WHERE id = %s "
                                 "FOR UPDATE NOWAIT", (self.letter_id,))
                locked = False
            except psycopg.errors.LockNotAvailable:
                locked = True
        return {"open_transactions": open_transactions, "row_locked": locked}

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def __len__(self) -> int:
        return len(self.inner)


class ProbingKafka(KafkaResource):
    database_url: str
    letter_id: int

    def producer(self):
        return ProbingProducer(super().producer(), self.database_url, self.letter_id)


def test_no_transaction_or_row_lock_is_held_while_a_replay_sends(platform, engine,
                                                                monkeypatch):
    source, ids = _dead_letters(platform, engine, 5)
    target = create_topic(platform, f"bounds-target-{uuid.uuid4().hex[:8]}")
    monkeypatch.setenv("STREAMFLOW_REPLAY_TOPICS", target)
    SEEN["during_send"].clear()
    resources = {"postgres": PostgresResource(database_url=platform.database_url),
                 "kafka": ProbingKafka(bootstrap_servers=platform.bootstrap,
                                       database_url=platform.database_url, letter_id=ids[0])}
    result = _run_job(resources, source=source, topic=target, dry_run=False, rate=50.0)
    assert result.success
    assert SEEN["during_send"] == [{"open_transactions": 0, "row_locked": False}]
    assert message_count(platform.kafka, target) == 5
    assert _replay_counts(engine, ids) == [1] * 5


def test_two_replays_at_once_send_each_letter_once(platform, engine):
    source, ids = _dead_letters(platform, engine, 6)
    target = create_topic(platform, f"bounds-target-{uuid.uuid4().hex[:8]}")
    selection = Selection(source_topic=source)
    sending, go_on = threading.Event(), threading.Event()

    class Held:
        """The first replay's producer: holds its first send until the second replay is done."""

        def __init__(self, inner):
            self.inner = inner

        def produce(self, *args, **kwargs):
            if not sending.is_set():
                sending.set()
                assert go_on.wait(60), "the second replay did not finish meanwhile"
            return self.inner.produce(*args, **kwargs)

        def __getattr__(self, name):
            return getattr(self.inner, name)

        def __len__(self) -> int:
            return len(self.inner)

    def run(kafka) -> replays.ReplayResult:
        with connect_admin(platform.database_url) as conn:
            return replays.replay(conn, kafka, selection, topic=target, allowed=[target],
                                  chunk_letters=3)

    with ThreadPoolExecutor(1) as pool:
        first = pool.submit(run, Held(producer(platform.kafka)))
        assert sending.wait(60)
        # The first holds the first chunk (claimed, in flight): the second skips it and
        # sends the second chunk; the first then finds that one replayed and skips it.
        second = run(producer(platform.kafka))
        go_on.set()
        first = first.result(60)
    assert (first.sent, first.skipped) == (3, 3)
    assert (second.sent, second.skipped) == (3, 3)
    assert message_count(platform.kafka, target) == 6
    assert _replay_counts(engine, ids) == [1] * 6


def test_a_topic_the_deployment_does_not_allow_is_refused(platform, engine, resources):
    source, ids = _dead_letters(platform, engine, 2)
    elsewhere = create_topic(platform, f"bounds-elsewhere-{uuid.uuid4().hex[:8]}")

    # The CLI: a topic that is not allowed, a real replay and a dry run alike.
    refused = dlq(platform, "replay", "--source", source, "--topic", elsewhere, ok=False)
    assert refused.returncode == 1
    assert f"replay to '{elsewhere}' refused" in refused.stderr
    assert "STREAMFLOW_REPLAY_TOPICS" in refused.stderr
    dry = dlq(platform, "replay", "--source", source, "--topic", topics.NOTIFICATIONS,
              "--dry-run", ok=False)
    assert dry.returncode == 1 and "replay to 'notifications' refused" in dry.stderr
    # The pipeline's output topics cannot be allowed at all.
    listed = dlq(platform, "replay", "--source", source, "--topic", topics.ANALYTICS,
                 ok=False, STREAMFLOW_REPLAY_TOPICS=f"{topics.USER_EVENTS},{topics.ANALYTICS}")
    assert listed.returncode == 1 and "STREAMFLOW_REPLAY_TOPICS" in listed.stderr
    assert "output topics" in listed.stderr

    # The launchpad: the same refusal fails the run.
    job = _run_job(resources, source=source, topic=elsewhere, dry_run=False)
    assert not job.success
    (failure,) = [e for e in job.all_events if e.is_step_failure]
    assert f"replay to '{elsewhere}' refused" in str(failure.event_specific_data.error)

    assert message_count(platform.kafka, elsewhere) == 0
    assert _replay_counts(engine, ids) == [0, 0]
    # Allowed by the deployment, the same replay goes.
    assert "replayed 2 dead letters" in replay(platform, "--source", source, to=elsewhere).stdout


@pytest.fixture(autouse=True)
def _forget_what_was_seen():
    yield
    for seen in SEEN.values():
        seen.clear()
