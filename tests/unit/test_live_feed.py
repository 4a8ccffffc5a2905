"""The live feed counts every message but decodes only the newest of each topic, and no
message of any shape, on any topic, stops it or breaks a frame."""

import json
import random
from datetime import UTC, datetime

import orjson
import pytest

from streamflow import contract, topics
from streamflow.errors import NotAWindow
from streamflow.live.feed import NEWEST, Feed
from streamflow.live.messages import PREVIEW_CHARS, WINDOW_MAX_BYTES, window_of
from tests.corpus.live_inputs import LIVE_TOPICS, live_corpus, window


class Msg:
    decoded = 0

    def __init__(self, topic: str, n: int) -> None:
        self._topic, self.n = topic, n

    def topic(self) -> str:
        return self._topic

    def value(self) -> bytes:
        Msg.decoded += 1
        return b'{"n": %d}' % self.n

    def headers(self):
        return []

    def timestamp(self):
        return (1, 1_700_000_000_000)


def test_a_burst_is_counted_whole_and_only_its_newest_messages_are_read():
    feed = Feed()
    Msg.decoded = 0
    feed.add_batch([Msg(topics.USER_EVENTS, i) for i in range(500)]
                   + [Msg(topics.NOTIFICATIONS, i) for i in range(7)])
    frame = feed.frame()
    assert frame["topics"][topics.USER_EVENTS]["total"] == 500
    assert frame["topics"][topics.NOTIFICATIONS]["total"] == 7
    assert Msg.decoded == NEWEST + 7  # not 507
    assert frame["events"][-1]["payload"] == '{"n": 499}'  # the newest, in order
    assert frame["events"][0]["payload"] == '{"n": 485}'


# -- any message the broker accepts ------------------------------------------------------------

class Message:
    """A consumed message as confluent-kafka gives it; ``headers_error``: what headers()
    raises (confluent-kafka does so for a header key that is not UTF-8)."""

    def __init__(self, topic: str, value: bytes | None, headers=None,
                 headers_error: Exception | None = None, *, is_window: bool = False) -> None:
        self._topic, self._value, self._headers = topic, value, headers
        self._headers_error = headers_error
        self.is_window = is_window

    def topic(self) -> str:
        return self._topic

    def value(self) -> bytes | None:
        return self._value

    def headers(self):
        if self._headers_error is not None:
            raise self._headers_error
        return self._headers

    def timestamp(self):
        return (1, 1_700_000_000_000)


def _corpus_messages() -> list[Message]:
    messages = [Message(i.topic, i.value, i.headers, is_window=i.is_window)
                for i in live_corpus()]
    messages += [Message(t, b"{}", headers_error=UnicodeDecodeError(
        "utf-8", b"\xff", 0, 1, "invalid start byte")) for t in LIVE_TOPICS]
    return messages


def assert_frame_is_whole(feed: Feed) -> dict:
    """The frame builds, encodes as the server sends it, and every window is one the page
    can draw (window_start a string it cuts the time out of, event_type a string)."""
    frame = feed.frame()
    orjson.dumps(frame)
    for shown in frame["windows"]:
        assert contract.parse_time(shown["window_start"]) is not None, shown
        assert isinstance(shown["event_type"], str), shown
    return frame


def test_no_message_on_any_topic_breaks_a_frame_and_a_good_window_still_shows():
    feed = Feed()
    good = window("login")
    feed.add_batch([Message(topics.ANALYTICS, orjson.dumps(good))])
    messages = _corpus_messages()
    for message in messages:  # one by one: a frame after each, as the broadcaster would
        feed.add_batch([message])
        assert_frame_is_whole(feed)
    feed.add_batch(messages)  # and all in one batch
    frame = assert_frame_is_whole(feed)
    assert good in frame["windows"]
    assert frame["topics"][topics.ANALYTICS]["total"] == 1 + 2 * sum(
        m.topic() == topics.ANALYTICS for m in messages)
    # The analytics messages that are no window are skipped and counted; no other topic
    # skipped one: they are shown as text, whatever they hold.
    no_window = sum(m.topic() == topics.ANALYTICS and not m.is_window for m in messages)
    assert frame["skipped"] == {**dict.fromkeys(LIVE_TOPICS, 0), topics.ANALYTICS: 2 * no_window}
    odd = [orjson.loads(m.value()) for m in messages if m.is_window]
    assert odd and all(w in frame["windows"] for w in odd)


def test_dead_letter_labels_come_from_any_headers():
    feed = Feed()
    feed.add_batch([Message(topics.DEAD_LETTER, b"x", [("dlq.reason_code", b"not_json"),
                                                        ("dlq.reason", b"\xff" * 340_000)]),
                    Message(topics.DEAD_LETTER, b"y", [("dlq.reason_code", None)]),
                    Message(topics.DEAD_LETTER, b"z", headers_error=ValueError("bad key"))])
    first, second, third = feed.frame()["dead_letters"]
    assert first["reason_code"] == "not_json"
    assert first["reason"] == "\ufffd" * PREVIEW_CHARS  # shown as text, cut
    assert (second["reason_code"], second["reason"]) == ("", "")
    assert (third["reason_code"], third["payload"]) == ("", "z")  # still shown


@pytest.mark.parametrize(("shape", "why"), [
    ({"window_start": 1_700_000_000, "event_type": "login"}, "not an ISO-8601 time"),
    ({"window_start": {"a": 1}, "event_type": "login"}, "not an ISO-8601 time"),
    ({"window_start": None, "event_type": "login"}, "not an ISO-8601 time"),
    ({"window_start": "2026-01-01T00:00:00Z", "event_type": 7}, "event_type is int"),
    ({"window_start": "9999-12-31T23:59:59.999Z", "event_type": "x"}, "in the future"),
    ([], "JSON list"),
    (None, "JSON NoneType"),
    (5, "JSON int"),
])
def test_what_is_no_window_says_why(shape, why):
    with pytest.raises(NotAWindow, match=why):
        window_of(orjson.dumps(shape), datetime.now(UTC))


def test_a_window_a_frame_could_not_carry_is_none():
    now = datetime.now(UTC)
    deep = orjson.dumps(window())[:-1] + b',"d":' + b"[" * 300 + b"]" * 300 + b"}"
    with pytest.raises(NotAWindow, match="cannot be sent on"):
        window_of(deep, now)
    with pytest.raises(NotAWindow, match="bytes >"):
        window_of(orjson.dumps(window(pad="x" * WINDOW_MAX_BYTES)), now)
    with pytest.raises(NotAWindow, match="not JSON"):
        window_of(b"\xff" + orjson.dumps(window()), now)
    assert window_of(orjson.dumps(window(pad="x" * 5000)), now).event_type == "page_view"


def _random_value(rng: random.Random) -> object:
    """A JSON value of any type, small, at most three levels deep."""
    def value(depth: int) -> object:
        choices = [lambda: None, lambda: rng.random() < 0.5,
                   lambda: rng.randint(-2**70, 2**70), lambda: rng.uniform(-1e300, 1e300),
                   lambda: rng.choice(["", "2026-01-01T00:00:00Z", "x" * 40, "\u202e\u0000"]),
                   lambda: contract.format_time(datetime.now(UTC)),
                   lambda: [value(depth + 1) for _ in range(rng.randrange(3))],
                   lambda: {rng.choice(["a", "window_start", "event_type"]): value(depth + 1)
                            for _ in range(rng.randrange(3))}]
        return choices[rng.randrange(len(choices) if depth < 3 else 6)]()
    return value(0)


def _random_message(rng: random.Random) -> Message:
    topic = rng.choice(LIVE_TOPICS)
    kind = rng.randrange(4)
    if kind == 0:  # any bytes
        value = rng.randbytes(rng.randrange(64))
    elif kind == 1:  # a window with one field of any type
        value = json.dumps({**window(), rng.choice(list(window())): _random_value(rng)}
                           ).encode()
    elif kind == 2:  # any JSON
        value = json.dumps(_random_value(rng)).encode()  # orjson writes no int over 64 bits
    else:  # a window cut or with a byte flipped
        raw = bytearray(orjson.dumps(window()))
        raw[rng.randrange(len(raw))] = rng.randrange(256)
        value = bytes(raw[:rng.randrange(len(raw) + 1)])
    headers = [(rng.choice(["dlq.reason", "dlq.reason_code", "h"]),
                rng.choice([None, rng.randbytes(rng.randrange(16))]))
               for _ in range(rng.randrange(3))]
    return Message(topic, value, headers)


def test_random_messages_never_break_a_frame():
    """Property-style: thousands of random messages (a fixed seed, so a failure replays), a
    frame built and encoded after each batch of them."""
    rng, feed = random.Random(21), Feed()
    for _ in range(300):
        feed.add_batch([_random_message(rng) for _ in range(rng.randrange(1, 20))])
        assert_frame_is_whole(feed)
    assert feed.frame()["windows"]  # the well-formed ones among them did show
