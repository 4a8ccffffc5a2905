import collections
import time
import uuid

import orjson

from streamflow import contract, pii
from streamflow.producer.generator import EventGenerator, mask_record, replay_file
from streamflow.producer.worker import Pacer

KEY = b"k" * 32


def _events(n=20_000, **kw):
    return [orjson.loads(v) for _, v in EventGenerator(KEY, seed=7, **kw).batch(n)]


def test_events_follow_the_contract_and_are_keyed_by_user():
    gen = EventGenerator(KEY, seed=1)
    for key, value in gen.batch(500):
        event = orjson.loads(value)
        assert key.decode() == event["user_id"]
        assert uuid.UUID(event["event_id"]).version == 7  # time-ordered
        assert contract.EMAIL_HASH_RE.match(event["email_hash"])
        assert contract.EMAIL_MASKED_RE.match(event["email_masked"])
        assert contract.parse_time(event["occurred_at"]) is not None
        assert event["event_type"] in set(contract.EventType)
        assert set(event) <= set(contract.FIELDS)
        assert (event["event_type"] == "login") == ("success" in event)
        assert (event["event_type"] == "purchase") == ("amount_cents" in event)


def test_mix_login_failures_and_skewed_popularity():
    events = _events()
    types = collections.Counter(e["event_type"] for e in events)
    assert 0.30 < types["login"] / len(events) < 0.40
    logins = [e for e in events if e["event_type"] == "login"]
    failure = sum(not e["success"] for e in logins) / len(logins)
    assert 0.08 < failure < 0.16
    users = collections.Counter(e["user_id"] for e in events).most_common()
    top_1pct = sum(c for _, c in users[: len(users) // 100])
    assert top_1pct / len(events) > 0.2  # a few users make a large share of events


def test_late_events_are_older_than_a_window():
    now_ms = 1_800_000_000_000
    events = [orjson.loads(v) for _, v in EventGenerator(KEY, seed=3, late_rate=0.5).batch(
        2000, now_ms=now_ms)]
    ages = [now_ms - contract.parse_time(e["occurred_at"]).timestamp() * 1000 for e in events]
    late = [a for a in ages if a > 0]
    assert 0.4 < len(late) / len(events) < 0.6
    assert all(11_000 <= a <= 60_000 for a in late)


def test_invalid_share():
    values = [v for _, v in EventGenerator(KEY, seed=5, invalid_rate=0.2).batch(5000)]
    bad = 0
    for value in values:
        try:
            event = orjson.loads(value)
        except orjson.JSONDecodeError:
            bad += 1
            continue
        ok = ("event_id" in event and len(event["event_id"]) == 36
              and event.get("event_type") in set(contract.EventType)
              and event.get("amount_cents", 1) > 0
              and contract.EMAIL_HASH_RE.match(event["email_hash"])
              and "user_id" in event and event["schema_version"] == 1)
        bad += not ok
    assert 0.15 < bad / len(values) < 0.25


def test_same_seed_same_stream():
    now = 1_800_000_000_000
    stream = EventGenerator(KEY, seed=11).batch(50, now)
    assert len(stream) == 50  # two empty batches would be equal too
    assert stream == EventGenerator(KEY, seed=11).batch(50, now)
    assert stream != EventGenerator(KEY, seed=12).batch(50, now)  # the seed decides


def test_replayed_records_are_masked_and_get_stable_ids(tmp_path):
    path = tmp_path / "events.jsonl"
    path.write_text(
        '{"email": "Jane.Doe@example.com", "event_type": "login", "note": "cc bob@corp.example"}\n'
        '{"event_id": "0b7e3c1e-9a55-4c62-8f1d-3b7a0e42f00d", "user_id": "u9"}\n'
        "\n"
        "not json but mails carol@example.org\n"
    )
    first = list(replay_file(path, KEY))
    again = list(replay_file(path, KEY))
    assert first == again  # replaying the same file yields the same event_ids
    text = b"".join(v for _, v in first).decode()
    assert "jane.doe@example.com" not in text.lower() and "bob@corp" not in text
    assert "carol@example.org" not in text
    event = orjson.loads(first[0][1])
    assert event["email_hash"] == pii.email_hash(KEY, "jane.doe@example.com")
    assert event["email_masked"] == "j***@example.com"
    assert event["schema_version"] == contract.SCHEMA_VERSION
    assert orjson.loads(first[1][1])["event_id"] == "0b7e3c1e-9a55-4c62-8f1d-3b7a0e42f00d"
    assert len(first) == 3


def test_mask_record_derives_a_user_id():
    event = mask_record({"email": "a@b.co"}, KEY, b"line")
    assert event["user_id"].startswith("user-")


def test_pacer_holds_the_rate():
    class FakeProducer:
        def poll(self, timeout):
            import time
            time.sleep(timeout)

    pacer = Pacer(1000.0)
    sent = 0
    start = time.monotonic()
    while sent < 300:
        sent += pacer.allowance(sent, FakeProducer())
    assert time.monotonic() - start >= 0.25  # 300 events at 1000/s take ~0.3 s


def test_pacer_steps_in_batches_not_one_wake_up_per_event():
    class CountingProducer:
        polls = 0

        def poll(self, timeout):
            CountingProducer.polls += 1
            time.sleep(timeout)

    pacer = Pacer(2000.0)
    sent = steps = 0
    while sent < 400:  # 0.2 s at 2,000 events/s
        sent += pacer.allowance(sent, CountingProducer())
        steps += 1
    # ~5 ms steps: ~40 of them (not 400), with about one wait each.
    assert steps <= 60
    assert CountingProducer.polls <= 120


def test_replayed_records_are_masked_at_any_depth(tmp_path):
    path = tmp_path / "nested.jsonl"
    path.write_bytes(
        b'{"email": "top@example.com", "user": {"contact": {"email": "deep.one@example.com"}},'
        b' "to": [{"addr": "list.item@example.org"}, ["in.array@example.net"]],'
        b' "opens": {"Key.Owner@corp.example.net": 3},'
        b' "note": "contact embedded.person@example.co.uk today",'
        b' "cc": "escaped\\u0040example.com", "n": 7, "ok": true, "none": null}\n'
        b'["array.line@example.com", {"x": "arr.obj@example.com"}]\n'
    )
    (_, value), (_, array_line) = replay_file(path, KEY)
    sent = value + array_line
    for address in (b"deep.one@", b"list.item@", b"in.array@", b"key.owner@", b"Key.Owner@",
                    b"embedded.person@", b"escaped@", b"array.line@", b"arr.obj@"):
        assert address not in sent
    event = orjson.loads(value)
    assert event["user"] == {"contact": {"email": "d***@example.com"}}
    assert event["to"] == [{"addr": "l***@example.org"}, ["i***@example.net"]]
    assert [k.split("#")[0] for k in event["opens"]] == ["k***@corp.example.net"]
    assert event["note"] == "contact e***@example.co.uk today"
    assert event["cc"] == "e***@example.com"
    assert (event["n"], event["ok"], event["none"]) == (7, True, None)
    assert orjson.loads(array_line) == ["a***@example.com", {"x": "a***@example.com"}]



def test_a_replayed_line_nested_past_the_encoder_limit_is_sent_masked(tmp_path):
    """orjson encodes 255 levels at most; such a line went on to crash the producer."""
    deep = "[" * 300 + '"deep@example.com"' + "]" * 300
    path = tmp_path / "deep.jsonl"
    path.write_text('{"event_type": "x", "blob": ' + deep + "}\n" + deep + "\n")
    sent = [value for _key, value in replay_file(path, KEY)]
    assert len(sent) == 2
    assert all(b"deep@example.com" not in value and b"d***@example.com" in value
               for value in sent)
