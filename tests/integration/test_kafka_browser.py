"""The Kafka browser against the session's broker: `topics list --json`, `groups`, `tail`
(newest across partitions, lossless JSON, hostile bytes made safe, Ctrl-C), and the partition
layout of the pipeline's topics (3 each; an older 1-partition topic reported with its fix)."""

from __future__ import annotations

import base64
import json
import signal
import subprocess
import sys
import threading
import time

import pytest
from confluent_kafka import TopicPartition

from streamflow import cluster, stack, topics
from streamflow.errors import TopicMismatch
from streamflow.kafka_clients import admin_client, consumer, producer
from streamflow.settings import load_settings
from tests.conftest import create_topic, wait_for, worker_env
from tests.helpers.cli import assert_one_error_line

STREAMFLOW = [sys.executable, "-m", "streamflow.cli"]
# ESC sequences (clear screen, set the window title), NUL, BEL, invalid UTF-8, a C1 CSI and
# a right-to-left override: all a terminal would act on.
HOSTILE = b"\x1b[2J\x1b]0;owned\x07\x00 caf\xc3\xa9 \xff\xfe \xc2\x9b31m \xe2\x80\xae end"


def cli(platform, *args: str, ok: bool = True, **env: str) -> subprocess.CompletedProcess:
    done = subprocess.run([*STREAMFLOW, *args], env=worker_env(platform, **env),
                          capture_output=True, timeout=120)
    if ok:
        assert done.returncode == 0, done.stderr.decode(errors="replace")
    return done


def send(platform, topic: str, messages: list[dict]) -> None:
    """Each message: partition, value, and optionally key, headers and timestamp (ms)."""
    prod = producer(platform.kafka)
    for m in messages:
        prod.produce(topic, m["value"], m.get("key"), partition=m["partition"],
                     headers=m.get("headers"), timestamp=m.get("timestamp", 0))
    assert prod.flush(30) == 0


def decoded(text: str | None, encoding: str | None) -> bytes | None:
    if encoding is None:
        return None
    return base64.b64decode(text) if encoding == "base64" else text.encode()


def json_lines(done: subprocess.CompletedProcess) -> list[dict]:
    return [json.loads(line) for line in done.stdout.decode().splitlines()]


# -- topics --------------------------------------------------------------------------------

def test_fresh_pipeline_topics_have_three_partitions_and_list_as_json(platform, unique_name):
    create_topic(platform, unique_name, partitions=2)
    listed = json.loads(cli(platform, "topics", "list", "--json").stdout)
    assert listed["missing"] == []
    assert [(t["name"], t["partitions"], t["pipeline"]) for t in listed["topics"]] == [
        (name, 3, True) for name in topics.PIPELINE_TOPICS]
    assert listed["topics"][3]["retention_ms"] == 30 * 24 * 3_600_000
    every = json.loads(cli(platform, "topics", "list", "--all", "--json").stdout)["topics"]
    names = [t["name"] for t in every]
    assert names[:4] == list(topics.PIPELINE_TOPICS)
    assert unique_name in names and not [n for n in names if n.startswith("__")]
    mine = next(t for t in every if t["name"] == unique_name)
    assert (mine["partitions"], mine["end_offsets"], mine["messages"]) == (2, [0, 0], 0)


def test_a_one_partition_topic_from_before_is_reported_with_the_fix(platform, unique_name):
    create_topic(platform, unique_name, partitions=1)
    spec = topics.TopicSpec(unique_name, 3, 3_600_000,
                            partitions_setting="STREAMFLOW_TOPIC_PARTITIONS")
    admin = admin_client(platform.kafka)
    with pytest.raises(TopicMismatch, match=(
            "has 1 partition, expected 3: run `streamflow topics create --add-partitions`")):
        topics.ensure_topics(admin, [spec])
    (reported,) = topics.ensure_topics(admin, [spec], strict=False)
    assert reported.outcome == "mismatch"
    (grown,) = topics.ensure_topics(admin, [spec], add_partitions=True)
    assert (grown.outcome, grown.detail) == ("grown", "now 3 partitions")
    assert topics.ensure_topics(admin, [spec])[0].outcome == "exists"


def test_up_and_topics_create_on_an_older_layout_say_what_to_do(platform):
    """The session's pipeline topics have 3 partitions; asking for 4 is the situation of a
    stack created before with fewer. `up` goes on and says the fix; `topics create` fails
    in one line with it (growing the session's topics is left undone: it cannot be undone)."""
    settings = load_settings(STREAMFLOW_HOME=str(platform.settings.home_dir),
                             KAFKA_BOOTSTRAP_SERVERS=platform.bootstrap,
                             DATABASE_URL=platform.database_url, STREAMFLOW_TOPIC_PARTITIONS=4)
    said: list[str] = []
    stack.up(settings, echo=said.append, workers=False)
    assert ("warning: topics analytics, notifications, dead-letter-topic each has 3 "
            "partitions, expected 4: run `streamflow topics create --add-partitions` to add 1"
            ) in "\n".join(said)
    done = cli(platform, "topics", "create", ok=False, STREAMFLOW_TOPIC_PARTITIONS="4")
    done.stdout, done.stderr = done.stdout.decode(), done.stderr.decode()
    assert_one_error_line(done, "topics analytics, notifications, dead-letter-topic each has 3 "
                          "partitions, expected 4", "--add-partitions",
                          "STREAMFLOW_TOPIC_PARTITIONS=3 to keep it")


# -- groups --------------------------------------------------------------------------------

def test_groups_show_committed_offsets_end_offsets_and_exact_lag(platform, unique_name):
    topic = create_topic(platform, unique_name, partitions=3)
    send(platform, topic, [{"partition": 0, "value": b"a"}] * 10
         + [{"partition": 1, "value": b"b"}] * 5 + [{"partition": 2, "value": b"c"}] * 2)
    group = f"g-{unique_name}"
    member = consumer(platform.kafka, group, **{"client.id": "browser-test"})
    try:
        member.subscribe([topic])

        def assigned() -> bool:
            member.consume(10, 0.2)  # joins the group; nothing is committed by reading
            return len(member.assignment()) == 3

        wait_for(assigned, timeout_s=60, message="the member's assignment")
        member.commit(offsets=[TopicPartition(topic, 0, 4), TopicPartition(topic, 1, 5)],
                      asynchronous=False)
        (found,) = [g for g in cluster.groups(platform.kafka) if g.group_id == group]
        assert (found.state, found.member_count, found.total_lag) == ("stable", 1, 6)
        assert [(p.partition, p.committed, p.end, p.lag) for p in found.partitions] == [
            (0, 4, 10, 6), (1, 5, 5, 0), (2, None, 2, None)]
        assert {p.owner.split("@")[0] for p in found.partitions} == {"browser-test"}
    finally:
        member.close()
    (listed,) = [g for g in json.loads(cli(platform, "groups", "--json").stdout)["groups"]
                 if g["group_id"] == group]
    assert (listed["state"], listed["member_count"], listed["total_lag"]) == ("empty", 0, 6)
    assert [(p["partition"], p["committed"], p["end"], p["lag"])
            for p in listed["partitions"]] == [(0, 4, 10, 6), (1, 5, 5, 0)]
    table = cli(platform, "groups", COLUMNS="200").stdout.decode()
    assert group in table and f"{topic}/0" in table


# -- tail ----------------------------------------------------------------------------------

def test_tail_last_n_is_the_n_newest_across_partitions(platform, unique_name):
    """Partition 0 holds many old messages, 1 and 2 a few new ones interleaved in time: the
    7 newest are 2 of partition 1's and 5 of partition 2's, whatever each partition's size."""
    topic = create_topic(platform, unique_name, partitions=3)
    base = int(time.time() * 1000) - 600_000
    plan = ([(0, base + i) for i in range(30)] + [(1, base + 1000 + 10 * i) for i in range(5)]
            + [(2, base + 1005 + 10 * i) for i in range(5)])
    send(platform, topic, [{"partition": p, "timestamp": ts, "value": f"{p}:{ts}".encode()}
                           for p, ts in plan])
    newest = sorted(plan, key=lambda m: m[1])[-7:]
    got = list(cluster.tail(platform.kafka, topic, last=7, follow=False))
    assert [(m.partition, m.timestamp_ms) for m in got] == newest
    lines = json_lines(cli(platform, "tail", topic, "--last", "7", "--json"))
    assert [(d["partition"], d["timestamp"], d["value"]) for d in lines] == [
        (p, ts, f"{p}:{ts}") for p, ts in newest]
    assert [m.offset for m in got] == [d["offset"] for d in lines]
    assert len(list(cluster.tail(platform.kafka, topic, last=100, follow=False))) == 40
    assert list(cluster.tail(platform.kafka, topic, last=0, follow=False)) == []
    # Read under random group ids that never committed: no group is left behind.
    assert not [g for g in cluster.groups(platform.kafka)
                if g.group_id.startswith(cluster.TAIL_GROUP_PREFIX)]


def test_tail_renders_hostile_bytes_safely_and_json_gives_them_back(platform, unique_name):
    topic = create_topic(platform, unique_name, partitions=3)
    headers = [("title", b"\x1b]0;owned\x07"), ("binary", b"\xff\x00"), ("none", None)]
    huge = b"\x1b[31m" + b"x" * 200_000
    send(platform, topic, [
        {"partition": 1, "key": b"k\xff\x1b", "value": HOSTILE, "headers": headers},
        {"partition": 2, "key": None, "value": huge},
    ])
    (hostile, big) = json_lines(cli(platform, "tail", topic, "--json"))
    assert decoded(hostile["value"], hostile["value_encoding"]) == HOSTILE
    assert hostile["value_encoding"] == "base64"  # not valid UTF-8 as a whole
    assert decoded(hostile["key"], hostile["key_encoding"]) == b"k\xff\x1b"
    assert [(h["name"], decoded(h["value"], h["encoding"])) for h in hostile["headers"]] == (
        headers)
    assert (big["key"], big["value_encoding"], decoded(big["value"], "utf-8")) == (
        None, "utf-8", huge)

    text = cli(platform, "tail", topic).stdout
    assert not [b for b in text if b < 0x20 and b != 0x0A or b == 0x7F]  # no control byte
    shown = text.decode("utf-8").splitlines()
    assert not [c for c in "".join(shown) if 0x80 <= ord(c) <= 0x9F or c == "\u202e"]
    assert len(shown) == 2
    assert "key=k\\xff\\x1b [title=\\x1b]0;owned\\x07 binary=\\xff\\x00 none=(null)]" in shown[0]
    assert "\\x1b[2J\\x1b]0;owned\\x07\\x00 café \\xff\\xfe \\x9b31m \\u202e end" in shown[0]
    assert shown[1].endswith("xxx… [200,005 bytes]") and len(shown[1]) < 1200


def test_tail_follow_prints_new_messages_and_ends_cleanly_on_ctrl_c(platform, unique_name):
    topic = create_topic(platform, unique_name, partitions=3)
    proc = subprocess.Popen([*STREAMFLOW, "tail", topic, "--last", "0", "--follow", "--json"],
                            env=worker_env(platform), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    lines: list[bytes] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(proc.stdout.readline, b"")),
                              daemon=True)
    reader.start()
    try:
        sent = []

        def shown() -> bool:  # sent until one arrives: the first may precede the reader
            sent.append(f"m{len(sent)}".encode())
            send(platform, topic, [{"partition": len(sent) % 3, "value": sent[-1]}])
            return bool(lines)

        wait_for(shown, timeout_s=60, interval_s=0.5, message="a followed message")
        assert json.loads(lines[0])["value"].encode() in sent
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 0, err.decode(errors="replace")
    assert b"Traceback" not in err and b"KeyboardInterrupt" not in err


def test_tail_of_a_missing_topic_is_one_error_line(platform, unique_name):
    done = cli(platform, "tail", unique_name, ok=False)
    done.stdout, done.stderr = done.stdout.decode(), done.stderr.decode()
    assert_one_error_line(done, f"topic {unique_name} does not exist")


def test_the_overview_has_brokers_topics_and_groups(platform):
    overview = cluster.overview(platform.kafka)
    assert [b.port for b in overview.brokers] == [int(platform.bootstrap.rsplit(":", 1)[1])]
    assert [t.name for t in overview.topics[:4]] == list(topics.PIPELINE_TOPICS)
    assert not [t for t in overview.topics if t.name.startswith("__")]
    assert json.loads(json.dumps(overview.as_dict())) == overview.as_dict()
