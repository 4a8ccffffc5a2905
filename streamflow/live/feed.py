"""What the live view knows: per-topic counts and rates, the newest messages, the latest
windows and dead letters. Fed by a consumer thread, read by the frame builder (thread-safe).

Any message the broker accepted is counted; what cannot be shown (an `analytics` message
that is no window, or one that broke the feed in a way nobody foresaw) is skipped, counted in
`skipped` and logged at most once per SKIP_LOG_INTERVAL_S, and never stops the feed
(docs/ARCHITECTURE.md, "the live view").
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from datetime import UTC, datetime

from streamflow import topics
from streamflow.errors import NotAWindow
from streamflow.live.messages import dead_letter_label, preview, window_of
from streamflow.logs import Occasional

log = logging.getLogger("streamflow.live")
TOPICS = (topics.USER_EVENTS, topics.ANALYTICS, topics.NOTIFICATIONS, topics.DEAD_LETTER)
HISTORY_S = 180     # seconds of per-second counts kept for (and shown in) the chart
NEWEST = 25         # newest messages kept per topic
WINDOWS_KEPT = 300  # the newest 30 windows' worth of (window, event type) pairs
WINDOWS_SHOWN = 60
# Seconds between two log lines about skipped messages: a flood of bad messages is one line
# per interval (with the count), not one per message.
SKIP_LOG_INTERVAL_S = 10.0


class Feed:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.totals = dict.fromkeys(TOPICS, 0)
        self.skipped = dict.fromkeys(TOPICS, 0)  # messages that could not be shown
        self.series = {t: deque(maxlen=HISTORY_S) for t in TOPICS}  # (second, count)
        self.newest = {t: deque(maxlen=NEWEST) for t in TOPICS}
        self.windows: dict[tuple[datetime, str], dict] = {}
        self.connected = False
        self._skip_log = Occasional(SKIP_LOG_INTERVAL_S)

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
                self._add_message(msg)
                continue
            newest = keep.setdefault(topic, [])
            newest.append(msg)
            if len(newest) > 2 * NEWEST:
                del newest[:NEWEST]
        for topic, newest in keep.items():
            newest = newest[-NEWEST:]
            self._count(topic, counts[topic] - len(newest))
            for msg in newest:
                self._add_message(msg)

    def _add_message(self, msg) -> None:
        try:
            self.add(msg.topic(), msg.value(), msg.headers, msg.timestamp()[1])
        except Exception as exc:  # noqa: BLE001 - no message may stop the feed (see above)
            self.skip(msg.topic(), f"{type(exc).__name__}: {exc}")

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

    def add(self, topic: str, value: bytes | None, headers_fn, timestamp_ms: int) -> None:
        """One message (``headers_fn``: its ``headers`` method, read for dead letters only)."""
        now = time.time()
        item = {"topic": topic, "at": timestamp_ms, "payload": preview(value)}
        if topic == topics.DEAD_LETTER:
            item["reason_code"], item["reason"] = dead_letter_label(headers_fn)
        window, why = None, ""
        if topic == topics.ANALYTICS:
            try:
                window = window_of(value, datetime.fromtimestamp(now, UTC))
            except NotAWindow as exc:
                why = f"not a window: {exc}"
        with self._lock:
            self._count_locked(topic, 1, int(now))
            self.newest[topic].append(item)
            if window is not None:
                self.windows[(window.start, window.event_type)] = window.document
                if len(self.windows) > WINDOWS_KEPT:
                    for key in sorted(self.windows)[:-WINDOWS_KEPT]:
                        del self.windows[key]
        if why:
            self.skip(topic, why)

    def skip(self, topic: str, why: str) -> None:
        """Count a message that could not be shown; log one line per SKIP_LOG_INTERVAL_S."""
        with self._lock:
            self.skipped[topic] = self.skipped.get(topic, 0) + 1
        if count := self._skip_log.count():
            log.warning("live view skipped %d message(s) it cannot show; the newest, on %s: %s",
                        count, topic, why[:300])

    def skipped_counts(self) -> dict[str, int]:
        with self._lock:
            return dict(self.skipped)

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
                "windows": [self.windows[k] for k in sorted(self.windows)[-WINDOWS_SHOWN:]],
                "skipped": dict(self.skipped),
            }
