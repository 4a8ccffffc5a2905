"""The live view server against the real broker: frames, fan-out, slow clients, token."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
import urllib.request

import orjson
import pytest
import websockets

from streamflow import topics
from streamflow.infra.processes import free_port
from streamflow.kafka_clients import producer
from tests.conftest import wait_for, worker_env


def start_live(platform, tmp_path, port: int | None = None, host: str = "127.0.0.1", **env
               ) -> tuple[subprocess.Popen, int]:
    port = port or free_port()
    log = open(tmp_path / f"live-{port}.log", "wb")  # noqa: SIM115 - lives with the process
    proc = subprocess.Popen([sys.executable, "-m", "streamflow.cli", "live", "--port", str(port),
                             "--host", host],
                            env=worker_env(platform, **env), stdout=log,
                            stderr=subprocess.STDOUT)

    def healthy():
        assert proc.poll() is None, (tmp_path / f"live-{port}.log").read_text()
        try:
            body = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/health",
                                                     timeout=2).read())
        except OSError:
            return False
        return body["kafka_assigned"]

    wait_for(healthy, timeout_s=60, message="live view healthy and assigned")
    return proc, port


@pytest.fixture
def live(platform, tmp_path):
    proc, port = start_live(platform, tmp_path)
    yield port
    proc.terminate()
    proc.wait(30)


async def frames(url: str, count: int, timeout_s: float = 30) -> list[dict]:
    async with websockets.connect(url, max_size=2**22) as ws:
        return [json.loads(await asyncio.wait_for(ws.recv(), timeout_s)) for _ in range(count)]


def test_frames_follow_the_stream(platform, live):
    prod = producer(platform.kafka)
    marker = f"marker-{time.time_ns()}"
    for _ in range(50):
        prod.produce(topics.USER_EVENTS, orjson.dumps({"event_id": marker}), b"k")
    prod.flush(30)

    async def until_marker():
        async with websockets.connect(f"ws://127.0.0.1:{live}/ws", max_size=2**22) as ws:
            for _ in range(200):
                frame = json.loads(await asyncio.wait_for(ws.recv(), 10))
                if any(marker in e["payload"] for e in frame["events"]):
                    return frame
        return None

    frame = asyncio.run(until_marker())
    assert frame is not None
    assert frame["topics"][topics.USER_EVENTS]["total"] >= 50
    assert set(frame["topics"]) == {topics.USER_EVENTS, topics.ANALYTICS, topics.NOTIFICATIONS,
                                    topics.DEAD_LETTER}


def test_200_clients_all_receive_frames(live):
    async def crowd():
        return await asyncio.gather(*(frames(f"ws://127.0.0.1:{live}/ws", 3)
                                      for _ in range(200)))

    received = asyncio.run(crowd())
    assert len(received) == 200 and all(len(f) == 3 for f in received)


def test_a_stalled_client_does_not_slow_the_others(live):
    async def scenario():
        stalled = await websockets.connect(f"ws://127.0.0.1:{live}/ws", max_size=2**22)
        try:
            started = time.monotonic()
            got = await asyncio.gather(*(frames(f"ws://127.0.0.1:{live}/ws", 12)
                                         for _ in range(20)))
            return got, time.monotonic() - started
        finally:
            await stalled.close()

    got, elapsed = asyncio.run(scenario())
    assert all(len(f) == 12 for f in got)
    assert elapsed < 20  # 12 frames at 4/s take ~3 s; a blocked fan-out would never finish


def test_token_is_required_when_set(platform, tmp_path):
    proc, port = start_live(platform, tmp_path, STREAMFLOW_LIVE_TOKEN="s3cret-token")
    try:
        for suffix in ("", "?token=wrong"):
            with pytest.raises(websockets.exceptions.WebSocketException):
                asyncio.run(frames(f"ws://127.0.0.1:{port}/ws{suffix}", 1, timeout_s=5))
        assert len(asyncio.run(frames(f"ws://127.0.0.1:{port}/ws?token=s3cret-token", 1))) == 1
    finally:
        proc.terminate()
        proc.wait(30)


def test_the_cluster_view_goes_only_to_pages_that_ask(live):
    async def scenario():
        async with websockets.connect(f"ws://127.0.0.1:{live}/ws", max_size=2**22) as ws:
            before = [json.loads(await asyncio.wait_for(ws.recv(), 10)) for _ in range(8)]
            await ws.send(json.dumps({"subscribe": "cluster"}))
            for _ in range(200):
                message = json.loads(await asyncio.wait_for(ws.recv(), 15))
                if message.get("kind") == "cluster":
                    return before, message
        return before, None

    before, cluster = asyncio.run(scenario())
    assert not any("kind" in frame for frame in before)  # frames only, until asked
    assert any(frame["kafka"]["reachable"] for frame in before)
    assert [c["name"] for c in before[-1]["health"]["components"]][0] == "Kafka"
    assert cluster is not None and "error" not in cluster
    assert {t["name"] for t in cluster["topics"]} >= {
        topics.USER_EVENTS, topics.ANALYTICS, topics.NOTIFICATIONS, topics.DEAD_LETTER}
    assert cluster["brokers"] and cluster["brokers"][0]["port"] > 0
    # The live view's own consumer group is listed, with its member.
    assert any(g["group_id"].startswith("live-view-") and g["member_count"] == 1
               for g in cluster["groups"])
