"""Messages the live view must survive, on every topic it reads, as data.

Each is (topic, value, key, headers): the sink's corpus (tests/corpus/bad_inputs.py) sent to
every topic, `analytics` messages of every wrong shape a window can take, and sizes up to
what the broker and librdkafka take (a value near 1 MB, a 340 KB header). `window()` is a
well-formed window, for checking that a good one still shows among them.

A header key that is not UTF-8 is not here: confluent-kafka's producer sends the repr of a
bytes key, so only another client makes one. Its consumer builds header keys with
PyUnicode_FromString, which fails on such bytes: the unit tests give the feed a message whose
headers() raises.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from datetime import UTC, datetime

import orjson

from streamflow import contract, topics
from tests.corpus.bad_inputs import corpus

LIVE_TOPICS = (topics.USER_EVENTS, topics.ANALYTICS, topics.NOTIFICATIONS, topics.DEAD_LETTER)
# A value this size still fits librdkafka's message.max.bytes (1,000,000) with its headers.
NEAR_LIMIT_BYTES = 900_000
BIG_HEADER_BYTES = 340_000


@dataclass(frozen=True)
class LiveInput:
    kind: str
    topic: str
    value: bytes | None
    key: bytes | None = b"live-corpus"
    headers: list[tuple[str, bytes | None]] | None = None
    # An `analytics` message the page shows as a window (its other fields are shown as text,
    # whatever their type); every other one there is skipped, counted and logged.
    is_window: bool = False


def window(event_type: str = "page_view", start: datetime | None = None, **fields) -> dict:
    """A window as the micro-batch publishes it (microbatch.windows.WindowRow.message)."""
    start = start or datetime.now(UTC).replace(microsecond=0)
    return {"window_start": contract.format_time(start), "window_end": contract.format_time(start),
            "event_type": event_type, "events": 3, "distinct_users": 2, "login_successes": 0,
            "login_failures": 0, "purchase_cents": 0, "revision": 1, **fields}


def _shapes() -> list[tuple[str, bytes]]:
    """`analytics` values that are JSON, or nearly, but no window the page can draw."""
    enc = orjson.dumps
    starts = {"a number": 1_700_000_000, "an object": {"t": "2026-01-01T00:00:00Z"},
              "null": None, "a list": ["2026-01-01T00:00:00Z"], "true": True,
              "an empty string": "", "not a time": "yesterday",
              "past year 9999 in UTC": "9999-12-31T23:59:59-05:00",
              "in the year 9999": "9999-12-31T23:59:59.999Z", "a float": 1.5e300}
    shapes = [(f"window_start {name}", enc(window(window_start=value)))
              for name, value in starts.items()]
    shapes += [(f"event_type {name}", enc(window(event_type=value)))
               for name, value in {"a number": 7, "null": None, "an object": {"a": 1},
                                   "a list": ["login"]}.items()]
    without = window()
    del without["window_start"]
    shapes += [
        ("no window_start", enc(without)),
        ("a field nested 300 deep (orjson writes 254)",
         enc(window())[:-1] + b',"deep":' + b"[" * 300 + b"]" * 300 + b"}"),
        ("a window of 9 KB", enc(window(pad="x" * 9000))),
        ("a window near the broker's limit", enc(window(pad="x" * NEAR_LIMIT_BYTES))),
        ("JSON list of windows", enc([window()])),
        ("JSON number", b"42"),
        ("JSON null", b"null"),
        ("JSON string", b'"window"'),
        ("truncated window", enc(window())[:-5]),
        ("window in latin-1", enc(window(event_type="caf\u00e9")).replace(b"\xc3\xa9", b"\xe9")),
        ("duplicate window_start keys, the last a number",
         enc(window())[:-1] + b',"window_start":5}'),
    ]
    return shapes


def _odd_windows() -> list[tuple[str, bytes]]:
    """Windows whose numbers are of the wrong type or size: shown, as text (each of its own
    event type, so none replaces another)."""
    enc = orjson.dumps
    return [
        ("counts as strings", enc(window("odd-1", events="3", distinct_users="many"))),
        ("counts huge", enc(window("odd-2"))[:-1] + b',"events":' + str(2**70).encode()
                        + b',"purchase_cents":18446744073709551615}'),
        ("counts negative, fractional, null", enc(window("odd-3", events=-1, purchase_cents=0.5,
                                                          revision=None))),
    ]


def live_corpus() -> list[LiveInput]:
    """Every hostile message the live view reads, on every topic it reads."""
    items = [LiveInput(f"analytics: {kind}", topics.ANALYTICS, value)
             for kind, value in _shapes()]
    items += [LiveInput(f"analytics: {kind}", topics.ANALYTICS, value, is_window=True)
              for kind, value in _odd_windows()]
    for topic, bad in itertools.product(LIVE_TOPICS, corpus()):
        items.append(LiveInput(f"{topic}: {bad.kind}", topic, bad.value, bad.key, bad.headers))
    for topic in LIVE_TOPICS:
        items += [
            LiveInput(f"{topic}: a value near the broker's limit", topic,
                      b"\xff" * NEAR_LIMIT_BYTES),
            LiveInput(f"{topic}: a {BIG_HEADER_BYTES // 1000} KB header of 0xff bytes", topic,
                      b"{}", headers=[("dlq.reason", b"\xff" * BIG_HEADER_BYTES)]),
            LiveInput(f"{topic}: dead-letter headers of the wrong kind", topic, b"not json",
                      headers=[("dlq.reason_code", None), ("dlq.reason", b"\x00\xff\xfe"),
                               ("dlq.reason", b"twice"), ("", b"")]),
            LiveInput(f"{topic}: no value, no key", topic, None, None),

        ]
    return items
