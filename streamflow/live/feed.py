"""What the live view knows: per-topic counts and rates, the newest messages, the latest
windows and dead letters. Fed by a consumer thread, read by the frame builder (thread-safe)."""

from __future__ import annotations

import threading
import time
from collections import deque

import orjson

from streamflow import topics

TOPICS = (topics.USER_EVENTS, topics.ANALYTICS, topics.NOTIFICATIONS, topics.DEAD_LETTER)
HISTORY_S = 180     # seconds of per-second counts kept for (and shown in) the chart
NEWEST = 25         # newest messages kept per topic
PREVIEW_CHARS = 2000  # a payload is cut here: the page shows, it does not archive


def _text(value: bytes | None) -> str:
    return (value or b"").decode("utf-8", "replace")[:PREVIEW_CHARS]


class Feed:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.totals = dict.fromkeys(TOPICS, 0)
        self.series = {t: deque(maxlen=HISTORY_S) for t in TOPICS}  # (second, count)
        self.newest = {t: deque(maxlen=NEWEST) for t in TOPICS}
        self.windows: dict[tuple[str, str], dict] = {}
        self.connected = False

    def add_batch(self, messages: list) -> None:
        """A consumed batch: every message counted, but only the newest NEWEST of each topic
        (and every window) decoded. A burst of 1M events would otherwise cost the live view
        Python work for 2M messages (events + notifications) on the cores the pipeline needs."""
        counts: dict[str, int] = {}
        keep: dict[str, list] = {}
        for msg in messages:
            topic = msg.topic()
            counts[topic] = counts.get(topic, 0) + 1
            if topic == topics.ANALYTICS:
                self.add(topic, msg.value(), msg.headers(), msg.timestamp()[1])
                continue
            newest = keep.setdefault(topic, [])
            newest.append(msg)
            if len(newest) > 2 * NEWEST:
                del newest[:NEWEST]
        for topic, newest in keep.items():
            newest = newest[-NEWEST:]
            self._count(topic, counts[topic] - len(newest))
            for msg in newest:
                self.add(topic, msg.value(), msg.headers(), msg.timestamp()[1])

    def _count(self, topic: str, n: int) -> None:
        if n > 0:
            with self._lock:
                self._count_locked(topic, n, int(time.time()))

    def _count_locked(self, topic: str, n: int, now: int) -> None:
        self.totals[topic] = self.totals.get(topic, 0) + n
        series = self.series[topic]
        if series and series[-1][0] == now:
            series[-1] = (now, series[-1][1] + n)
        else:
            series.append((now, n))

    def add(self, topic: str, value: bytes | None, headers, timestamp_ms: int) -> None:
        now = int(time.time())
        item = {"topic": topic, "at": timestamp_ms, "payload": _text(value)}
        if topic == topics.DEAD_LETTER:
            h = {k: _text(v) for k, v in headers or []}
            item["reason_code"] = h.get("dlq.reason_code", "")
            item["reason"] = h.get("dlq.reason", "")
        with self._lock:
            self._count_locked(topic, 1, now)
            self.newest[topic].append(item)
            if topic == topics.ANALYTICS:
                try:
                    window = orjson.loads(value or b"{}")
                    self.windows[(window["window_start"], window["event_type"])] = window
                except (orjson.JSONDecodeError, KeyError, TypeError):
                    pass
                if len(self.windows) > 300:  # keep the newest 30 windows' worth
                    for key in sorted(self.windows)[:-300]:
                        del self.windows[key]

    def frame(self) -> dict:
        """A snapshot for the page. Frames are whole: a client that misses one loses nothing."""
        now = int(time.time())
        with self._lock:
            topics_doc = {}
            for topic in TOPICS:
                counts = dict(self.series[topic])
                recent = [counts.get(now - i, 0) for i in range(HISTORY_S, 0, -1)]
                topics_doc[topic] = {"total": self.totals[topic],
                                     "rate": sum(recent[-10:]) / 10, "series": recent}
            return {
                "t": time.time(),
                "connected": self.connected,
                "topics": topics_doc,
                "events": list(self.newest[topics.USER_EVENTS])[-15:],
                "notifications": list(self.newest[topics.NOTIFICATIONS])[-10:],
                "dead_letters": list(self.newest[topics.DEAD_LETTER])[-15:],
                "windows": [self.windows[k] for k in sorted(self.windows)[-60:]],
            }
