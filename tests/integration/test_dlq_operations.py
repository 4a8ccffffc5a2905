"""`streamflow dlq list/show/stats/replay` and the Dagster replay job, against the real
Kafka and PostgreSQL: every reason code, exactly-once replay of fixed contract rejects,
refusal of a second replay, --dry-run, --rate, and safe display of hostile payloads."""

from __future__ import annotations

import json
import subprocess
import time
import uuid
from datetime import UTC, datetime, timedelta

import orjson
from sqlalchemy import text

from assets.dlq_replay import dlq_replay_job
from streamflow import contract, validation
from streamflow.contract import MAX_EVENT_BYTES
from streamflow.kafka_clients import consumer, producer
from streamflow.topics import message_count
from tests.conftest import create_topic, run_cli
from tests.integration.microbatch_helpers import catch_up, land

UUID = "1b4e28ba-2fa1-41d2-883f-0016d3cca427"




def dlq(platform, *args: str, ok: bool = True, **env: str) -> subprocess.CompletedProcess:
    return run_cli(platform, "dlq", *args, ok=ok, **env)


def replay(platform, *args: str, to: str, ok: bool = True) -> subprocess.CompletedProcess:
    """`dlq replay ... --topic to`, the deployment allowing ``to`` (a scratch topic)."""
    return dlq(platform, "replay", *args, "--topic", to, ok=ok, STREAMFLOW_REPLAY_TOPICS=to)


def dlq_json(platform, *args: str):
    """`list --json` prints JSON lines; `show` and `stats` one document."""
    out = dlq(platform, *args, "--json").stdout
    if args[0] == "list":
        return [json.loads(line) for line in out.splitlines() if line.strip()]
    return json.loads(out)


def send_raw(platform, topic: str, values: list[bytes | None]) -> None:
    prod = producer(platform.kafka)
    for value in values:
        prod.produce(topic, value, b"k", headers=contract.HEADERS)
    assert prod.flush(30) == 0


def sink(platform, topic: str) -> None:
    land(platform, topic, [])  # the in-process sink on `topic`, until idle


def event(**overrides) -> dict:
    return {"event_id": str(uuid.uuid4()), "schema_version": 1, "event_type": "page_view",
            "user_id": "user-dlq", "email_hash": "a" * 64, "email_masked": "u***@example.com",
            "occurred_at": contract.format_time(datetime.now(UTC)), "country": "DE",
            "device": "mobile", **overrides}


# One input per ingest reason code the sink can produce from data (decoder_error is a bug
# path, covered by the unit tests of the decoder).
INGEST_REJECTS: dict[str, bytes | None] = {
    "empty": None,
    "too_large": orjson.dumps({"event_id": UUID, "blob": "x" * MAX_EVENT_BYTES}),
    "not_utf8": b"\xff\xfe\x1b[31m not utf-8",
    "not_json": b"{\"event_id\": \x1b[2J\x07 broken",
    "not_object": b"[1, 2, 3]",
    "missing_event_id": b'{"user_id": "u"}',
    "bad_event_id": b'{"event_id": "not-a-uuid"}',
    # jsonb cannot hold \u0000: PostgreSQL refuses the row, the sink isolates it.
    "db_rejected": orjson.dumps({"event_id": str(uuid.uuid4()), "user_id": "nul\u0000here"}),
}


def test_every_reason_code_is_listed_shown_and_counted(platform, engine, resources):
    topic = create_topic(platform, f"dlq-codes-{uuid.uuid4().hex[:8]}")
    send_raw(platform, topic, list(INGEST_REJECTS.values()))
    future = contract.format_time(datetime.now(UTC) + timedelta(hours=2))
    land(platform, topic, [event(occurred_at=future), event(country="ZZ")])
    catch_up(resources, engine)

    listed = dlq_json(platform, "list", "--source", topic, "--limit", "100")
    codes = sorted(d["reason_code"] for d in listed)
    assert codes == sorted([*INGEST_REJECTS, "contract", "contract"])
    assert [d["id"] for d in listed] == sorted((d["id"] for d in listed), reverse=True)
    assert all(d["reason"] and d["source"]["topic"] == topic for d in listed)

    for code in INGEST_REJECTS:
        only = dlq_json(platform, "list", "--source", topic, "--reason", code)
        assert [d["reason_code"] for d in only] == [code]
    contract_only = dlq_json(platform, "list", "--source", topic, "--stage", "contract")
    assert len(contract_only) == 2
    assert dlq_json(platform, "list", "--source", topic, "--reason", "not_in_the_future")

    stats = dlq_json(platform, "stats", "--source", topic)
    counts = {(r["stage"], r["reason_code"]): (r["last_hour"], r["all_time"]) for r in stats}
    assert counts == {**{("ingest", c): (1, 1) for c in INGEST_REJECTS},
                      ("contract", "contract"): (2, 2)}

    by_code = {d["reason_code"]: d for d in listed}
    shown = dlq_json(platform, "show", str(by_code["contract"]["id"]))
    assert shown["stage"] == "contract" and shown["reasons"]
    assert json.loads(shown["payload"]["text"])["event_id"] == shown["event_id"]
    too_large = dlq_json(platform, "show", str(by_code["too_large"]["id"]))
    assert too_large["payload"]["size"] > MAX_EVENT_BYTES
    assert too_large["headers"]["schema_version"] == "1"


def test_unsafe_payloads_display_safely(platform, engine):
    topic = create_topic(platform, f"dlq-unsafe-{uuid.uuid4().hex[:8]}")
    send_raw(platform, topic, [INGEST_REJECTS["not_utf8"], INGEST_REJECTS["not_json"],
                               b'{"event_id": "\xe2\x80\xae-evil-\x1b]0;title\x07"}'])
    sink(platform, topic)
    listed = dlq(platform, "list", "--source", topic).stdout
    assert "\x1b" not in listed and "\x07" not in listed and "\u202e" not in listed
    assert "hex: ff fe 1b" in listed
    assert "\\x1b" in listed and "\\u202e" in listed
    for letter in dlq_json(platform, "list", "--source", topic):
        shown = dlq(platform, "show", str(letter["id"])).stdout
        assert "\x1b" not in shown and "\x07" not in shown and "\u202e" not in shown
    binary = next(d for d in dlq_json(platform, "list", "--source", topic)
                  if d["reason_code"] == "not_utf8")
    document = dlq_json(platform, "show", str(binary["id"]))
    assert document["payload"]["encoding"] == "hex"
    assert bytes.fromhex(document["payload"]["text"]) == INGEST_REJECTS["not_utf8"]


def _landed(engine, ids: list[str]) -> tuple[int, int, int]:
    """(rows in raw.events, notifications, contract dead letters) for these event ids."""
    with engine.connect() as conn:
        return tuple(conn.execute(text(query), {"ids": ids}).scalar_one() for query in (
            "SELECT count(*) FROM raw.events WHERE event_id::text = ANY(:ids)",
            "SELECT count(*) FROM streamflow.notifications WHERE event_id::text = ANY(:ids)",
            "SELECT count(*) FROM raw.dead_letters WHERE stage = 'contract' "
            "AND event_id = ANY(:ids)"))


def test_fixed_contract_rejects_replay_exactly_once(platform, engine, resources, monkeypatch):
    topic = create_topic(platform, f"dlq-replay-{uuid.uuid4().hex[:8]}")
    # Ten minutes ahead of the clock: rejected under the 5-minute skew of contract v1.
    ahead = contract.format_time(datetime.now(UTC) + timedelta(minutes=10))
    events = [event(occurred_at=ahead) for _ in range(25)]
    ids = [e["event_id"] for e in events]
    land(platform, topic, events)
    catch_up(resources, engine)
    assert _landed(engine, ids) == (25, 0, 25)

    # The cause is fixed: the contract now tolerates an hour of client clock skew.
    monkeypatch.setattr(validation, "FUTURE_SKEW", timedelta(hours=1))
    first = replay(platform, "--source", topic, "--stage", "contract", to=topic)
    assert "replayed 25 dead letters" in first.stdout
    sink(platform, topic)
    catch_up(resources, engine)
    assert _landed(engine, ids) == (25, 25, 25)  # valid now, once each; no new rejects

    again = replay(platform, "--source", topic, "--stage", "contract", to=topic, ok=False)
    assert again.returncode == 1 and "replayed before" in again.stderr
    forced = replay(platform, "--source", topic, "--stage", "contract", "--force", to=topic)
    assert "25 again" in forced.stdout
    sink(platform, topic)
    catch_up(resources, engine)
    assert _landed(engine, ids) == (25, 25, 25)  # nothing duplicated
    counts = [d["replay_count"]
              for d in dlq_json(platform, "list", "--source", topic, "--limit", "100")]
    assert counts == [2] * 25


def test_a_replay_that_still_fails_is_dead_lettered_again(platform, engine):
    topic = create_topic(platform, f"dlq-again-{uuid.uuid4().hex[:8]}")
    send_raw(platform, topic, [b"not json at all"])
    sink(platform, topic)
    (original,) = dlq_json(platform, "list", "--source", topic)
    replay(platform, "--id", str(original["id"]), to=topic)
    sink(platform, topic)
    letters = dlq_json(platform, "list", "--source", topic)
    assert len(letters) == 2
    newest = dlq_json(platform, "show", str(letters[0]["id"]))
    assert newest["reason_code"] == "not_json"
    assert newest["headers"]["streamflow.replay_of"] == str(original["id"])


def test_dry_run_sends_nothing_and_rate_holds_the_sender_back(platform, engine):
    source = create_topic(platform, f"dlq-rate-{uuid.uuid4().hex[:8]}")
    send_raw(platform, source, [b"%d not json" % i for i in range(2000)])
    sink(platform, source)
    target = create_topic(platform, f"dlq-target-{uuid.uuid4().hex[:8]}")

    dry = replay(platform, "--source", source, "--dry-run", to=target)
    assert "would send 2000" in dry.stdout
    assert message_count(platform.kafka, target) == 0
    assert {d["replay_count"] for d in dlq_json(platform, "list", "--source", source,
                                                "--limit", "2000")} == {0}

    rate = 500
    replay(platform, "--source", source, "--rate", str(rate), to=target)
    # The pace shows in the messages themselves: their Kafka timestamps (set by the producer
    # as each is sent) spread over (n - 1) / rate seconds at least, whatever the start-up of
    # the command or the load of the machine.
    stamps = sorted(kafka_timestamps_ms(platform, target, want=2000))
    assert len(stamps) == 2000
    spread_s, least_s = (stamps[-1] - stamps[0]) / 1000, (2000 - 1) / rate
    assert spread_s >= 0.95 * least_s, (
        f"2,000 messages at {rate}/s were sent within {spread_s:.2f} s (paced: {least_s:.2f} s)")


def kafka_timestamps_ms(platform, topic: str, *, want: int) -> list[int]:
    """The timestamps of the first ``want`` messages on ``topic`` (a scratch topic)."""
    cons = consumer(platform.kafka, f"stamps-{uuid.uuid4()}")
    cons.subscribe([topic])
    stamps: list[int] = []
    deadline = time.monotonic() + 60
    try:
        while len(stamps) < want and time.monotonic() < deadline:
            stamps += [m.timestamp()[1] for m in cons.consume(1000, 0.5) if m.error() is None]
    finally:
        cons.close()
    return stamps


def test_the_dagster_replay_job_runs_the_same_replay(platform, engine, resources,
                                                     monkeypatch):
    source = create_topic(platform, f"dlq-job-{uuid.uuid4().hex[:8]}")
    send_raw(platform, source, [b"[1]", b"[2]", b"[3]"])
    sink(platform, source)
    target = create_topic(platform, f"dlq-job-target-{uuid.uuid4().hex[:8]}")
    monkeypatch.setenv("STREAMFLOW_REPLAY_TOPICS", target)

    def run(**config):
        return dlq_replay_job.execute_in_process(
            run_config={"ops": {"replay_dead_letters": {"config": {
                "source": source, "topic": target, **config}}}},
            resources=resources, raise_on_error=False)

    dry = run()  # dry run by default in the launchpad
    assert dry.success
    (output,) = [e for e in dry.all_events if e.event_type_value == "STEP_OUTPUT"]
    metadata = output.event_specific_data.metadata
    assert metadata["selected"].value == 3 and metadata["sent"].value == 0
    assert message_count(platform.kafka, target) == 0
    sent = run(dry_run=False)
    assert sent.success and message_count(platform.kafka, target) == 3
    refused = run(dry_run=False)
    assert not refused.success
    assert any("replayed before" in str(e.event_specific_data.error)
               for e in refused.all_events if e.is_step_failure)


def test_a_contract_dead_letter_keeps_each_failure_as_a_record(platform, engine, resources):
    """`show` reads the failures stored as records; the reason text was split on "; " before,
    and a value holding it made one failure two."""
    topic = create_topic(platform, f"dlq-failures-{uuid.uuid4().hex[:8]}")
    land(platform, topic, [event(country="A; B", device="fridge")])
    catch_up(resources, engine)
    (letter,) = dlq_json(platform, "list", "--source", topic)
    shown = dlq_json(platform, "show", str(letter["id"]))
    assert [(f["column"], f["got"]) for f in shown["failures"]] == [
        ("country", "'A; B'"), ("device", "'fridge'")]
    assert shown["reasons"] == [
        f"country: isin({list(contract.COUNTRIES)}) (got 'A; B')",
        f"device: isin({list(contract.DEVICES)}) (got 'fridge')"]
    assert shown["reason"] == "; ".join(shown["reasons"])
