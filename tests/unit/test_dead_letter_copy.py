"""The dead-letter topic copy always fits what librdkafka will send; the table keeps it all."""

import orjson
import pytest

from streamflow.contract import TYPE_CHECK, Failure, describe
from streamflow.dlq import MAX_COPY_BYTES, DeadLetter, Reason, Stage, topic_copy


def _letter(payload: bytes | None, key: bytes | None = b"k") -> DeadLetter:
    return DeadLetter(stage=Stage.INGEST, reason_code=Reason.TOO_LARGE, reason="too large",
                      payload=payload, key=key, headers={"origin": "test"},
                      source_topic="user-events", source_partition=0, source_offset=7)


def _size(key, value, headers) -> int:
    return len(key or b"") + len(value or b"") + sum(len(k) + len(v) for k, v in headers)


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
        DeadLetter(Stage.INGEST, Reason.TOO_LARGE, "why", None, None, {}, "t", 0, 1)  # type: ignore[misc]


def test_a_contract_dead_letter_carries_its_failures_as_json():
    failures = (Failure(check="isin", column="country", value="A; B"),
                Failure(check=TYPE_CHECK, column="amount_cents", value={"n": 1},
                        expected="int (64-bit)"),
                Failure(check="login_has_success"))
    letter = DeadLetter(stage=Stage.CONTRACT, reason_code=Reason.CONTRACT,
                        reason=describe(list(failures)), failures=failures, payload=b"{}",
                        key=None, headers={}, source_topic="user-events", source_partition=0,
                        source_offset=7)
    carried = orjson.loads(dict(letter.kafka_headers())["dlq.failures"])
    assert [Failure.from_json(f).summary for f in carried] == [f.summary for f in failures]
    assert carried[0] == {"column": "country", "check": "isin", "expected": None,
                          "got": "'A; B'"}
    assert "dlq.failures" not in dict(_letter(b"{}").kafka_headers())
