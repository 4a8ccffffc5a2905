"""No message stops the live page: every hostile message of tests/corpus/live_inputs.py on every
topic the live view reads, through the real broker; then a page that connects afterwards still
gets frames, and /health tells the truth about the broadcaster."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.error
import urllib.request
import uuid

import orjson
import websockets
import websockets.sync.client

from streamflow import topics
from streamflow.kafka_clients import producer
from streamflow.live.server import BROADCAST_STALE_S, LiveConfig
from tests.conftest import wait_for
from tests.corpus.live_inputs import LIVE_TOPICS, live_corpus, window
from tests.helpers.live import live_in_process


def health(port: int) -> tuple[int, dict]:
    """/health as (HTTP status, body): a 503 carries its body too."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as exc:
        return exc.code, json.load(exc)


def new_client_frames(port: int, count: int) -> list[dict]:
    """``count`` frames on a connection opened now (a WebSocket error or a 10 s silence fails)."""
    async def receive():
        async with websockets.connect(f"ws://127.0.0.1:{port}/ws", max_size=2**24) as ws:
            return [json.loads(await asyncio.wait_for(ws.recv(), 10)) for _ in range(count)]

    return asyncio.run(receive())


def frame_built_after(ws, moment: float) -> dict:
    """The first frame ``ws`` receives that was built after ``moment`` (time.time()): older
    ones may wait in its buffer. A 10 s silence fails."""
    while True:
        frame = json.loads(ws.recv(timeout=10))
        if frame["t"] > moment:
            return frame


def markers_missing(frame: dict, marker: str) -> list[str]:
    """The parts of the frame that do not show the marker sent to their topic."""
    shown = {"events": any(marker in e["payload"] for e in frame["events"]),
             "notifications": any(marker in n["payload"] for n in frame["notifications"]),
             "dead_letters": any(marker in d["payload"] for d in frame["dead_letters"]),
             "windows": any(w["event_type"] == marker for w in frame["windows"])}
    return [part for part, ok in shown.items() if not ok]


def markers_shown(frame: dict, marker: str) -> bool:
    """The frame shows the marker sent to each topic after the corpus."""
    return not markers_missing(frame, marker)


def test_no_message_on_any_topic_stops_the_live_view(platform, live):
    prod = producer(platform.kafka)
    corpus = live_corpus()
    for item in corpus:  # all on partition 0, so a marker sent last is read last
        prod.produce(item.topic, item.value, item.key, headers=item.headers, partition=0)
        prod.poll(0)
    marker = f"marker-{uuid.uuid4().hex}"
    for topic in LIVE_TOPICS:
        value = orjson.dumps(window(marker) if topic == topics.ANALYTICS else {"m": marker})
        prod.produce(topic, value, b"marker", partition=0)
    assert prod.flush(60) == 0

    # A page that connects after all of it gets frames, and they show what came after it.
    def caught_up() -> bool:
        return any(markers_shown(frame, marker) for frame in new_client_frames(live, 4))

    def what_it_showed() -> str:
        frame = new_client_frames(live, 1)[0]
        return (f"missing: {markers_missing(frame, marker)}; the frame's windows: "
                f"{[(w.get('window_start'), w.get('event_type')) for w in frame['windows']][-5:]}; "
                f"health: {health(live)}")

    wait_for(caught_up, timeout_s=60, interval_s=0.5,
             message="a new client's frames showing the markers sent after the corpus",
             detail=what_it_showed)
    assert len(new_client_frames(live, 8)) == 8
    status, body = health(live)
    assert (status, body["status"], body["kafka_assigned"]) == (200, "ok", True), body
    no_window = sum(item.topic == topics.ANALYTICS and not item.is_window for item in corpus)
    assert body["skipped_messages"][topics.ANALYTICS] >= no_window, body


def test_health_says_the_broadcaster_is_down_and_it_comes_back(platform, monkeypatch):
    """A fault outside the frames kills the broadcaster: /health answers 503 until it runs
    again, and it is started again by itself."""
    with live_in_process(LiveConfig(platform.kafka)) as (live, port), \
            websockets.sync.client.connect(f"ws://127.0.0.1:{port}/ws", max_size=2**24) as ws:
        ws.recv(timeout=10)
        assert health(port)[0] == 200

        def broken(_frame: str) -> None:
            raise RuntimeError("the hub broke (injected by the test)")

        monkeypatch.setattr(live.hub, "publish", broken)
        wait_for(lambda: health(port)[0] == 503, timeout_s=BROADCAST_STALE_S + 30,
                 message="/health reporting the broadcaster down")
        assert health(port)[1]["status"] == "broadcast down"

        monkeypatch.undo()
        restored = time.time()
        wait_for(lambda: health(port)[0] == 200, timeout_s=30,
                 message="/health reporting the broadcaster back")
        frame_built_after(ws, restored)  # the page that stayed connected gets frames again
        assert len(new_client_frames(port, 3)) == 3


def test_a_frame_that_cannot_be_built_is_skipped_and_the_frames_resume(platform, monkeypatch):
    with live_in_process(LiveConfig(platform.kafka)) as (live, port), \
            websockets.sync.client.connect(f"ws://127.0.0.1:{port}/ws", max_size=2**24) as ws:
        ws.recv(timeout=10)
        built = live.feed.frame

        def unbuildable() -> dict:
            raise TypeError("'<' not supported (injected by the test)")

        monkeypatch.setattr(live.feed, "frame", unbuildable)
        # No frame goes out meanwhile: /health says so, and a page connecting now is still
        # served (it gets frames once they can be built again), not closed.
        wait_for(lambda: health(port)[0] == 503, timeout_s=BROADCAST_STALE_S + 30,
                 message="/health reporting that no frame goes out")
        with websockets.sync.client.connect(f"ws://127.0.0.1:{port}/ws",
                                            max_size=2**24) as late:
            monkeypatch.setattr(live.feed, "frame", built)
            restored = time.time()
            frame_built_after(late, restored)
        frame_built_after(ws, restored)
        wait_for(lambda: health(port)[0] == 200, timeout_s=30, message="/health ok again")
        assert health(port)[1]["frame_errors"] > 0
