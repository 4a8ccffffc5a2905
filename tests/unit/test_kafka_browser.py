"""Pure parts of the Kafka browser: lag rows, topic order, safe lines, lossless JSON, and the
partition layout's advice."""

from __future__ import annotations

import base64
import json

import pytest

from streamflow import browser, cluster, topics
from streamflow.cluster import GroupInfo, GroupMember, PartitionId, PartitionLag
from streamflow.dlq_ops.display import json_bytes, one_line
from streamflow.errors import KafkaUnavailable
from streamflow.kafka_connection import KafkaConnection
from streamflow.settings import load_settings

HOSTILE = b"\x1b[2J\x1b]0;owned\x07\x00 caf\xc3\xa9 \xff\xfe \xc2\x9b31m \xe2\x80\xae end"


def _unprintable(text: str) -> list[str]:
    """Characters a terminal acts on: C0 and C1 controls, DEL, bidi overrides."""
    return [c for c in text if ord(c) < 0x20 or 0x7f <= ord(c) <= 0x9f or c == "\u202e"]


@pytest.mark.parametrize("committed, end, expected", [
    (4, 10, 6), (10, 10, 0), (None, 10, None), (4, None, None),
    (50, 10, 0),  # a topic created again under the name: never a negative lag
])
def test_lag(committed, end, expected):
    assert cluster.lag(committed, end) == expected


def test_partition_rows_join_commits_assignments_and_end_offsets():
    member = GroupMember("m-1", "sink", "/10.0.0.1", None,
                         (PartitionId("t", 1), PartitionId("t", 2)))
    ends = {"t": [10, 5, 7], "gone": None}
    rows = cluster.partition_lags({PartitionId("t", 0): 4, PartitionId("t", 1): 5,
                                   PartitionId("gone", 0): 3}, [member], ends.get)
    assert rows == (
        PartitionLag("gone", 0, 3, None, None),
        PartitionLag("t", 0, 4, 10, None),
        PartitionLag("t", 1, 5, 5, "sink@/10.0.0.1"),
        PartitionLag("t", 2, None, 7, "sink@/10.0.0.1"),
    )
    group = GroupInfo("g", "stable", (member,), rows)
    assert (group.member_count, group.total_lag, [r.lag for r in rows]) == (1, 6, [None, 6, 0,
                                                                                   None])
    document = json.loads(json.dumps(group.as_dict()))
    assert document["partitions"][1] == {"topic": "t", "partition": 0, "committed": 4,
                                         "end": 10, "lag": 6, "owner": None}
    assert document["members"][0]["assignment"] == [{"topic": "t", "partition": 1},
                                                    {"topic": "t", "partition": 2}]


def test_topics_list_the_pipeline_first_and_no_internal_ones():
    names = ["zeta", "__consumer_offsets", topics.DEAD_LETTER, "alpha", topics.USER_EVENTS,
             "__transaction_state"]
    assert cluster.topic_order(names) == [topics.USER_EVENTS, topics.DEAD_LETTER, "alpha",
                                          "zeta"]


def test_an_overview_is_plain_json():
    overview = cluster.ClusterOverview(
        "abc", 1, (cluster.BrokerInfo(1, "127.0.0.1", 9092, True),),
        (topics.TopicInfo(topics.ANALYTICS, 3, 604_800_000, [1, 2, 3]),
         topics.TopicInfo("other", 1, None, [0])),
        (GroupInfo("g", "empty", (), ()),))
    document = overview.as_dict()
    assert json.loads(json.dumps(document)) == document
    assert document["topics"][0] == {"name": topics.ANALYTICS, "pipeline": True,
                                     "partitions": 3, "retention_ms": 604_800_000,
                                     "end_offsets": [1, 2, 3], "messages": 6}
    assert document["topics"][1]["pipeline"] is False
    assert document["brokers"] == [{"id": 1, "host": "127.0.0.1", "port": 9092,
                                    "controller": True}]


def test_one_line_escapes_controls_and_undecodable_bytes_in_place():
    line = one_line(HOSTILE, 500)
    assert _unprintable(line) == []
    assert line.startswith("\\x1b[2J\\x1b]0;owned\\x07\\x00 café \\xff\\xfe \\x9b31m \\u202e")
    assert one_line(None, 10) == "(null)" and one_line(b"", 10) == "(empty)"


def test_one_line_cuts_long_values_and_says_how_long_they_were():
    assert one_line(b"x" * 1_000_000, 20) == "x" * 20 + "… [1,000,000 bytes]"
    assert one_line("é".encode() * 30, 30) == "é" * 30  # characters, not bytes, count
    assert one_line("é".encode() * 31, 30) == "é" * 30 + "… [62 bytes]"


@pytest.mark.parametrize("raw, expected", [
    (None, (None, None)), (b"", ("", "utf-8")), (b"caf\xc3\xa9\x1b", ("café\x1b", "utf-8")),
    (b"\xff\x00", ("/wA=", "base64")),
])
def test_json_bytes_are_text_when_utf8_else_base64(raw, expected):
    assert tuple(json_bytes(raw)) == expected


def _message(**kw) -> cluster.TailedMessage:
    fields = {"topic": "t", "partition": 2, "offset": 41, "timestamp_ms": 1_700_000_000_123,
              "key": b"k\x1b", "value": HOSTILE,
              "headers": (cluster.Header("h\x1b", b"\xff"), cluster.Header("n", None))}
    return cluster.TailedMessage(**{**fields, **kw})


def test_a_text_line_is_one_printable_line():
    line = browser.text_line(_message())
    assert _unprintable(line) == [] and "\n" not in line
    assert line.startswith("2023-11-14 22:13:20.123 2@41 key=k\\x1b [h\\x1b=\\xff n=(null)] "
                           "\\x1b[2J")
    assert browser.text_line(_message(timestamp_ms=None, headers=())).startswith("- 2@41 key=")
    long = browser.text_line(_message(value=b"v" * 5000))
    assert long.endswith("v… [5,000 bytes]")


def test_a_json_line_is_ascii_and_gives_back_the_very_bytes():
    line = browser.json_line(_message())
    assert line.isascii() and _unprintable(line) == []
    document = json.loads(line)

    def decoded(text, encoding):
        return None if encoding is None else (
            base64.b64decode(text) if encoding == "base64" else text.encode())

    assert decoded(document["value"], document["value_encoding"]) == HOSTILE
    assert decoded(document["key"], document["key_encoding"]) == b"k\x1b"
    assert [(h["name"], decoded(h["value"], h["encoding"])) for h in document["headers"]] == [
        ("h\x1b", b"\xff"), ("n", None)]
    assert (document["partition"], document["offset"], document["timestamp"]) == (
        2, 41, 1_700_000_000_123)


def test_every_pipeline_topic_takes_its_partitions_from_the_settings():
    specs = {s.name: s for s in topics.topic_specs(load_settings(
        STREAMFLOW_TOPIC_PARTITIONS=5, STREAMFLOW_USER_EVENTS_PARTITIONS=2))}
    assert {n: s.partitions for n, s in specs.items()} == {
        topics.USER_EVENTS: 2, topics.ANALYTICS: 5, topics.NOTIFICATIONS: 5,
        topics.DEAD_LETTER: 5}
    assert {s.partitions for s in topics.topic_specs(load_settings())} == {3}


def test_a_mismatch_says_the_fix():
    spec = topics.topic_specs(load_settings())[1]  # analytics, 3 partitions
    fewer = topics.mismatch_detail(spec, 1)
    assert fewer.startswith("has 1 partition, expected 3: run "
                            "`streamflow topics create --add-partitions` to add 2")
    assert "STREAMFLOW_TOPIC_PARTITIONS=1" in fewer
    more = topics.mismatch_detail(spec, 6)
    assert "Kafka cannot remove partitions" in more and "STREAMFLOW_TOPIC_PARTITIONS=6" in more
    assert "STREAMFLOW_USER_EVENTS_PARTITIONS=1" in topics.mismatch_detail(
        topics.topic_specs(load_settings())[0], 1)


def test_topics_sharing_a_fix_are_named_together():
    statuses = [topics.TopicStatus("a", "mismatch", "has 1 partition, expected 3: fix"),
                topics.TopicStatus("b", "exists"),
                topics.TopicStatus("c", "mismatch", "has 1 partition, expected 3: fix"),
                topics.TopicStatus("d", "mismatch", "has 5 partitions, expected 3: other")]
    assert topics.mismatch_message(statuses) == (
        "topics a, c each has 1 partition, expected 3: fix; "
        "topic d has 5 partitions, expected 3: other")
    assert topics.mismatch_message(statuses[1:2]) is None


@pytest.mark.parametrize("read", [
    lambda kafka: cluster.groups(kafka, timeout_s=1),
    lambda kafka: cluster.overview(kafka, timeout_s=1),
    lambda kafka: cluster.topic_infos(kafka, timeout_s=1),
    lambda kafka: list(cluster.tail(kafka, "t", last=1, follow=False, timeout_s=1)),
], ids=["groups", "overview", "topic_infos", "tail"])
def test_an_unreachable_cluster_is_one_error(read):
    with pytest.raises(KafkaUnavailable, match=r"^Kafka at 127\.0\.0\.1:9 .*did not answer"):
        read(KafkaConnection("127.0.0.1:9"))  # the discard port: nothing listens
