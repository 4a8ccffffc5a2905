"""The dead-letter topic copy always fits what librdkafka will send; the table keeps it all."""

import orjson
import pytest

from streamflow import dlq
from streamflow.contract import TYPE_CHECK, Failure, describe
from streamflow.dlq import MAX_COPY_BYTES, DeadLetter, Reason, Stage, topic_copy


def _letter(payload: bytes | None, key: bytes | None = b"k") -> DeadLetter:
    return DeadLetter(stage=Stage.INGEST, reason_code=Reason.TOO_LARGE, reason="too large",
                      payload=payload, key=key, headers=(("origin", b"test"),),
                      source_topic="user-events", source_partition=0, source_offset=7)


def _size(key, value, headers) -> int:
    return len(key or b"") + len(value or b"") + sum(len(k) + len(v or b"") for k, v in headers)


def test_a_small_dead_letter_travels_whole():
    letter = _letter(b"{}")
    key, value, headers = topic_copy(letter)
    assert (key, value) == (b"k", b"{}")
    assert headers == letter.kafka_headers()


@pytest.mark.parametrize("payload_size", [999_000, 999_900, 1_048_576, 5_000_000])
def test_a_large_value_is_cut_to_fit_and_says_so(payload_size):
    key, value, headers = topic_copy(_letter(b"v" * payload_size))
    assert _size(key, value, headers) <= MAX_COPY_BYTES - 1_000
    assert key == b"k" and value == b"v" * len(value)
    note = dict(headers)["dlq.truncated"]
    assert note.startswith(f"value cut from {payload_size} bytes".encode())
    assert dict(headers)["origin"] == b"test"  # a small header stays


def test_a_huge_key_is_cut_too():
    key, value, headers = topic_copy(_letter(b"v" * 10, key=b"k" * 2_000_000))
    assert _size(key, value, headers) <= MAX_COPY_BYTES - 1_000
    assert value == b"v" * 10
    assert b"key cut from 2000000 bytes" in dict(headers)["dlq.truncated"]


def test_no_payload_is_fine():
    key, value, _ = topic_copy(_letter(None, key=None))
    assert (key, value) == (None, None)


def test_a_dead_letter_is_built_by_keyword_only():
    """Three int fields and four str fields in a row: swapped positions would still build."""
    with pytest.raises(TypeError, match="positional"):
        DeadLetter(Stage.INGEST, Reason.TOO_LARGE, "why", None, None, (), "t", 0, 1)  # type: ignore[misc]


def test_a_contract_dead_letter_carries_its_failures_as_json():
    failures = (Failure(check="isin", column="country", value="A; B"),
                Failure(check=TYPE_CHECK, column="amount_cents", value={"n": 1},
                        expected="int (64-bit)"),
                Failure(check="login_has_success"))
    letter = DeadLetter(stage=Stage.CONTRACT, reason_code=Reason.CONTRACT,
                        reason=describe(list(failures)), failures=failures, payload=b"{}",
                        key=None, headers=(), source_topic="user-events", source_partition=0,
                        source_offset=7)
    carried = orjson.loads(dict(letter.kafka_headers())["dlq.failures"])
    assert [Failure.from_json(f).summary for f in carried] == [f.summary for f in failures]
    assert carried[0] == {"column": "country", "check": "isin", "expected": None,
                          "got": "'A; B'"}
    assert "dlq.failures" not in dict(_letter(b"{}").kafka_headers())


def _with_headers(payload: bytes, headers) -> DeadLetter:
    return DeadLetter(stage=Stage.INGEST, reason_code=Reason.NOT_JSON, reason="not JSON",
                      payload=payload, key=b"k", headers=tuple(headers),
                      source_topic="user-events", source_partition=0, source_offset=7)


@pytest.mark.parametrize(("value_size", "whole"), [(10, True), (340_000, True),
                                                    (700_000, False), (999_000, False)])
def test_raw_byte_headers_never_push_the_copy_over_the_limit(value_size, whole):
    """340 KB of \xff in a header: as replaced text (U+FFFD, 3 bytes each) the copy was over
    1,000,000 bytes and produce() refused it, stopping the sink for good."""
    poison = [("blob", b"\xff" * 340_000), ("trace", b"t-1")]
    key, value, headers = topic_copy(_with_headers(b"v" * value_size, poison))
    assert _size(key, value, headers) <= MAX_COPY_BYTES - 1_000
    kept = dict(headers)
    assert kept["dlq.reason_code"] == b"not_json" and kept["trace"] == b"t-1"
    if whole:  # bytes travel as bytes: value and headers fit together
        assert kept["blob"] == b"\xff" * 340_000 and value == b"v" * value_size
        assert "dlq.truncated" not in kept
    else:  # the largest header goes first; the value is cut only if it still does not fit
        assert "blob" not in kept and b"headers 1 of 2 dropped" in kept["dlq.truncated"]
        assert value == b"v" * min(value_size, len(value))
        assert (b"value cut" in kept["dlq.truncated"]) == (value_size > len(value))


def test_many_headers_are_dropped_until_the_copy_fits():
    many = [(f"h{i}", b"x" * 2_000) for i in range(600)]  # 1.2 MB of headers
    key, value, headers = topic_copy(_with_headers(b"{}", many))
    assert _size(key, value, headers) + 10 * len(headers) <= MAX_COPY_BYTES
    assert value == b"{}" and b"dropped" in dict(headers)["dlq.truncated"]


def test_headers_text_cannot_hold_are_stored_byte_for_byte():
    exact = (("trace", b"t-1"),)
    assert dlq.raw_headers_json(exact) is None  # the text column holds them
    for lossy in [(("blob", b"\xff\xfe"),), (("a", b"1"), ("a", b"2")), (("nul", b"a\x00b"),),
                  (("none", None),)]:
        stored = dlq.raw_headers_json(lossy)
        assert stored is not None
        assert dlq.stored_headers(None, orjson.loads(stored)) == lossy
    text = orjson.loads(dlq.storable_headers(exact))
    assert dlq.stored_headers(text, None) == exact


def test_the_header_cache_is_bounded_in_bytes(monkeypatch):
    """256 events with ~900 KB of unique headers each pinned ~0.5 GB in the cache."""
    monkeypatch.setattr(dlq, "_HEADERS_JSON", {})
    for i in range(300):
        dlq.headers_json([("blob", bytes([i % 256]) * 900_000 + str(i).encode())])
    assert not dlq._HEADERS_JSON  # nothing that large is kept
    for i in range(300):
        dlq.headers_json([("trace", f"t-{i}".encode())])
    assert len(dlq._HEADERS_JSON) == dlq._HEADERS_JSON_MAX
    pinned = sum(len(k) + len(v or b"") for key in dlq._HEADERS_JSON for k, v in key)
    assert pinned <= dlq._HEADERS_JSON_MAX * dlq._CACHED_HEADER_BYTES
