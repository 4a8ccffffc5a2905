"""The bad-input corpus through the real sink and the real contract step: every message ends
where tests/corpus/bad_inputs.py says, nothing is lost silently, nothing crashes the sink.

The whole corpus is sent once (module fixture) to a fresh topic on one partition, so it is
read in order and a duplicate always follows the copy it repeats. Then the contract step
(streamflow.microbatch.notifications.run) runs until its watermark passes everything landed:
the watermark is shared by the whole session (as in test_microbatch), so results are
looked up by this topic's offsets and event ids only.
"""

from __future__ import annotations

import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field

import orjson
import psycopg
import pytest
from psycopg.rows import dict_row
from psycopg.types.json import set_json_loads
from sqlalchemy import text

from streamflow import contract, dlq
from streamflow.db.engine import connect_admin
from streamflow.dlq import Reason, Stage
from streamflow.kafka_clients import deliver, producer
from streamflow.microbatch import batch as batches
from streamflow.microbatch import notifications
from tests.conftest import create_topic, wait_for
from tests.corpus.bad_inputs import DUPLICATE, VALID, BadInput, corpus
from tests.integration import lanes
from tests.integration.lanes import SinkProcess, offsets_stored, read_whole_topic

# Comparing the ~1,000-deep kinds with == recurses once per level, past Python's default.
sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))

CORPUS = corpus()
Position = tuple[int, int]  # (partition, offset) in the corpus topic


@dataclass
class CorpusRun:
    topic: str
    sink: SinkProcess
    positions: dict[str, Position] = field(default_factory=dict)        # kind -> position
    events: dict[Position, dict] = field(default_factory=dict)          # raw.events rows
    letters: dict[tuple[str, Position], dict] = field(default_factory=dict)  # (stage, pos)
    notified: dict[str, dict] = field(default_factory=dict)             # event_id -> row
    sink_dlq: list = field(default_factory=list)          # messages on the sink's DLQ topic
    contract_dlq: list = field(default_factory=list)      # contract step's dead letters
    published: dict[str, dict] = field(default_factory=dict)  # notifications topic, by id


def _produce_in_order(platform, topic: str, items: list[BadInput]) -> dict[str, Position]:
    prod = producer(platform.kafka)
    positions: dict[str, Position] = {}
    for item in items:
        def delivered(err, msg, kind=item.kind):
            assert err is None, f"{kind}: {err}"
            positions[kind] = (msg.partition(), msg.offset())
        prod.produce(topic, item.value, item.key, headers=item.headers, partition=0,
                     on_delivery=delivered)
        prod.poll(0)
    assert prod.flush(30) == 0
    assert len(positions) == len(items)
    return positions


def run_contract_step(conn: psycopg.Connection, publish, publish_dead_letters) -> None:
    """Run the contract step until its (session-wide) watermark passes every landed row."""
    landed = batches.landed_max_seq(conn)
    for _ in range(20):
        notifications.run(conn, landed, publish, publish_dead_letters)
        if batches.watermark(conn, notifications.STEP) >= landed:
            return
    pytest.fail("the contract step did not catch up")


def _publisher(platform, topic: str):
    prod = producer(platform.kafka)

    def publish(messages: list[tuple[bytes, bytes]]) -> None:
        remaining, errors = deliver(prod, topic, ((k, v, None) for k, v in messages))
        assert remaining == 0 and not errors, errors

    return prod, publish


@pytest.fixture(scope="module")
def run(platform, engine, tmp_path_factory) -> Iterator[CorpusRun]:
    name = f"t-{uuid.uuid4().hex[:12]}"
    topic = create_topic(platform, name)
    sink = SinkProcess(platform, topic, create_topic(platform, name + "-dlq", partitions=1),
                       "g-" + name, tmp_path_factory.mktemp("corpus") / "sink.log")
    notifications_topic = create_topic(platform, name + "-notifications", partitions=1)
    contract_dlq_topic = create_topic(platform, name + "-contract-dlq", partitions=1)
    result = CorpusRun(topic, sink, _produce_in_order(platform, topic, CORPUS))
    sink.start()
    try:
        wait_for(lambda: offsets_stored(engine, sink.group, topic) >= len(CORPUS),
                 timeout_s=60, message=f"the sink to consume all {len(CORPUS)} messages")

        dlq_prod, publish = _publisher(platform, notifications_topic)
        with connect_admin(platform.database_url) as conn:
            run_contract_step(conn, publish, lambda letters: dlq.publish(
                dlq_prod, contract_dlq_topic, letters))
            _collect(conn, result)
        result.sink_dlq = read_whole_topic(platform, sink.dlq_topic)
        result.contract_dlq = [m for m in read_whole_topic(platform, contract_dlq_topic)
                               if _header(m, "dlq.source_topic") == topic]
        ids = {row["event_id"] for row in result.events.values()}
        for msg in read_whole_topic(platform, notifications_topic):
            value = orjson.loads(msg.value())
            if value["event_id"] in ids:
                result.published[value["event_id"]] = value
        yield result
    finally:
        if sink.proc is not None and sink.alive():
            sink.stop()


def _collect(conn: psycopg.Connection, result: CorpusRun) -> None:
    set_json_loads(orjson.loads, conn)  # stdlib json recurses on the deeply nested kinds
    cur = conn.cursor(row_factory=dict_row)
    for row in cur.execute(
            "SELECT event_id::text AS event_id, user_id, amount_cents, payload, "
            "payload::text AS payload_text, kafka_partition, kafka_offset "
            "FROM raw.events WHERE kafka_topic = %s", (result.topic,)):
        result.events[(row["kafka_partition"], row["kafka_offset"])] = row
    for row in cur.execute(
            "SELECT stage, reason_code, reason, payload, message_key, headers, event_id, "
            "source_partition, source_offset FROM raw.dead_letters WHERE source_topic = %s",
            (result.topic,)):
        position = (row["source_partition"], row["source_offset"])
        assert (row["stage"], position) not in result.letters
        result.letters[(row["stage"], position)] = row
    ids = [row["event_id"] for row in result.events.values()]
    for row in cur.execute(
            "SELECT event_id::text AS event_id, schema_version, event_type, user_id, "
            "email_hash, email_masked, occurred_at, country, device, success, amount_cents "
            "FROM streamflow.notifications WHERE event_id = ANY(%s::uuid[])", (ids,)):
        result.notified[row["event_id"]] = row


def _header(msg, name: str) -> str | None:
    values = [v for k, v in msg.headers() or [] if k == name]
    assert len(values) <= 1, f"header {name} repeated: {values}"
    return values[0].decode() if values else None


def _source(msg) -> Position:
    return int(_header(msg, "dlq.source_partition")), int(_header(msg, "dlq.source_offset"))


def _stored_headers(item: BadInput) -> dict[str, str]:
    """What raw.dead_letters.headers holds for a decode reject: text, NUL replaced."""
    return {k: (v or b"").decode("utf-8", "replace").replace("\x00", "\ufffd")
            for k, v in item.headers or []}


# -- every item ends where the corpus says --------------------------------------------------

@pytest.mark.parametrize("item", CORPUS, ids=[item.kind for item in CORPUS])
def test_each_kind_ends_where_expected(run: CorpusRun, item: BadInput):
    expect = item.expect
    position = run.positions[item.kind]
    row = run.events.get(position)
    ingest_letter = run.letters.get((Stage.INGEST, position))
    contract_letter = run.letters.get((Stage.CONTRACT, position))

    if expect.outcome == Stage.INGEST:
        assert row is None, "it landed in raw.events"
        assert ingest_letter is not None, "no ingest dead letter"
        assert contract_letter is None
        assert ingest_letter["reason_code"] == expect.reason_code, ingest_letter["reason"]
        assert ingest_letter["reason"].strip()
        for part in expect.reasons:
            assert part in ingest_letter["reason"]
        assert bytes(ingest_letter["payload"] or b"") == (item.value or b"")
        assert bytes(ingest_letter["message_key"] or b"") == (item.key or b"")
        assert ingest_letter["headers"] == _stored_headers(item)
        on_topic = [m for m in run.sink_dlq if _source(m) == position]
        assert len(on_topic) == 1, "not exactly once on the sink's dead-letter topic"
        assert _header(on_topic[0], "dlq.reason_code") == expect.reason_code
        assert _header(on_topic[0], "dlq.stage") == Stage.INGEST
        assert (on_topic[0].value() or b"") == (item.value or b"")
        return

    if expect.outcome == DUPLICATE:
        assert row is None and ingest_letter is None and contract_letter is None, (
            "a duplicate must be dropped without a row or a dead letter")
        first_position = run.positions[expect.duplicate_of]
        kept = [r for r in run.events.values() if r["event_id"] == item.event_id]
        assert len(kept) == 1, f"{len(kept)} rows for the event id"
        assert (kept[0]["kafka_partition"], kept[0]["kafka_offset"]) == first_position
        first = next(i for i in CORPUS if i.kind == expect.duplicate_of)
        assert kept[0]["payload"] == orjson.loads(first.value)  # the first body, unchanged
        return

    # It lands: a row holding what was sent, byte for byte, keyed by its event_id.
    assert ingest_letter is None, ingest_letter and ingest_letter["reason"]
    assert row is not None, "not in raw.events"
    sent = orjson.loads(item.value)
    assert row["payload"] == sent
    assert row["payload_text"].encode() == item.value
    assert row["event_id"] == item.event_id.lower()
    if expect.outcome == Stage.CONTRACT:
        assert contract_letter is not None, "no contract dead letter"
        assert contract_letter["reason_code"] == Reason.CONTRACT
        for part in expect.reasons:
            assert part in contract_letter["reason"]
        assert row["event_id"] not in run.notified
        assert row["event_id"] not in run.published
        # The original message: a replay sends it as it first arrived.
        assert bytes(contract_letter["payload"]) == item.value
        assert bytes(contract_letter["message_key"] or b"") == (item.key or b"")
        assert contract_letter["headers"] == _stored_headers(item)
        on_topic = [m for m in run.contract_dlq if _source(m) == position]
        assert len(on_topic) == 1, "not exactly once on the contract step's dead-letter topic"
        assert _header(on_topic[0], "dlq.reason") == contract_letter["reason"][:1000]
        assert (on_topic[0].value(), on_topic[0].key()) == (item.value, item.key)
        assert _header(on_topic[0], "trace-id") == _stored_headers(item).get("trace-id")
        return

    assert expect.outcome == VALID
    assert contract_letter is None, contract_letter and contract_letter["reason"]
    stored = run.notified.get(row["event_id"])
    assert stored is not None, "valid, but not in streamflow.notifications"
    for name in ("schema_version", "event_type", "user_id", "email_hash", "email_masked",
                 "country", "device"):
        assert stored[name] == sent[name], name  # unicode and injection strings verbatim
    assert stored["success"] == sent.get("success")
    assert stored["amount_cents"] == sent.get("amount_cents")
    assert stored["occurred_at"] == contract.parse_time(sent["occurred_at"])
    assert run.published[row["event_id"]]["user_id"] == sent["user_id"]


# -- the run as a whole ----------------------------------------------------------------------

def test_the_corpus_is_broad():
    assert len(CORPUS) >= 30 and len({i.kind for i in CORPUS}) == len(CORPUS)
    codes = {i.expect.reason_code for i in CORPUS if i.expect.outcome == Stage.INGEST}
    assert codes == {Reason.EMPTY, Reason.TOO_LARGE, Reason.NOT_UTF8, Reason.NOT_JSON,
                     Reason.NOT_OBJECT, Reason.MISSING_EVENT_ID, Reason.BAD_EVENT_ID,
                     Reason.DB_REJECTED}
    outcomes = {i.expect.outcome for i in CORPUS}
    assert outcomes == {Stage.INGEST, Stage.CONTRACT, VALID, DUPLICATE}


def test_nothing_is_dropped_silently(run: CorpusRun, engine):
    produced = set(run.positions.values())
    landed = set(run.events)
    dead = {pos for stage, pos in run.letters if stage == Stage.INGEST}
    duplicates = {run.positions[i.kind] for i in CORPUS if i.expect.outcome == DUPLICATE}
    assert len(produced) == len(CORPUS)
    assert not landed & dead and not landed & duplicates and not dead & duplicates
    assert landed | dead | duplicates == produced
    assert len(landed) + len(dead) + len(duplicates) == len(CORPUS)
    assert offsets_stored(engine, run.sink.group, run.topic) == len(CORPUS)
    # Every landed row was judged by the contract step exactly once: valid or dead-lettered.
    contract = {pos for stage, pos in run.letters if stage == Stage.CONTRACT}
    valid = {pos for pos, row in run.events.items() if row["event_id"] in run.notified}
    assert not contract & valid and contract | valid == landed


def test_the_dead_letter_topics_hold_what_the_table_holds(run: CorpusRun):
    ingest = {pos: row for (stage, pos), row in run.letters.items() if stage == Stage.INGEST}
    assert len(run.sink_dlq) == len(ingest)
    on_topic = {_source(m): _header(m, "dlq.reason_code") for m in run.sink_dlq}
    assert on_topic == {pos: row["reason_code"] for pos, row in ingest.items()}
    assert all(_header(m, "dlq.source_topic") == run.topic for m in run.sink_dlq)
    contract = [pos for stage, pos in run.letters if stage == Stage.CONTRACT]
    assert len(run.contract_dlq) == len(contract)


def test_forged_dlq_headers_do_not_survive(run: CorpusRun):
    item = next(i for i in CORPUS if i.kind == "not JSON with binary key and hostile headers")
    (msg,) = [m for m in run.sink_dlq if _source(m) == run.positions[item.kind]]
    assert _header(msg, "dlq.reason_code") == Reason.NOT_JSON  # one header, the real code
    assert msg.key() == item.key
    assert dict(msg.headers())["origin"] == b"corpus"


def test_the_sink_survived_the_corpus_and_still_lands(platform, run: CorpusRun, engine):
    assert run.sink.alive(), run.sink.output()[-3000:]
    event_id = str(uuid.uuid4())
    after = dict(orjson.loads(next(i for i in CORPUS if i.kind == "valid purchase").value),
                 event_id=event_id)
    prod = producer(platform.kafka)
    prod.produce(run.topic, orjson.dumps(after), b"after", headers=contract.HEADERS,
                 partition=0)
    assert prod.flush(30) == 0
    wait_for(lambda: offsets_stored(engine, run.sink.group, run.topic) >= len(CORPUS) + 1,
             timeout_s=30, message="the event sent after the corpus")
    assert lanes.rows(engine, run.topic)[0] == len(run.events) + 1
    with engine.connect() as conn:
        landed = conn.execute(text("SELECT kafka_offset FROM raw.events WHERE event_id = :id"),
                              {"id": event_id}).scalar_one()
    assert landed == len(CORPUS)  # the next offset of partition 0, after the corpus
    assert run.sink.alive()
    assert run.sink.stop() == 0  # and it still stops cleanly on SIGTERM
