"""The live view server against the real broker: frames, fan-out, slow clients, token."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import socket
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import orjson
import pytest
import websockets
import websockets.sync.client

from streamflow import topics
from streamflow.kafka_clients import producer
from streamflow.live.hub import SEND_TIMEOUT_S
from streamflow.live.server import FRAMES_PER_S, WS_SEND_BUFFER_BYTES
from tests.conftest import wait_for
from tests.helpers.live import start_live


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


# The stalled client: its receive buffer is this small (bytes; Linux doubles it), so the
# server's side fills after a few frames rather than after the default 128 KiB.
STALLED_RCVBUF = 4096
# Seconds the healthy clients count frames while the stalled one holds up its sender: shorter
# than the hub's SEND_TIMEOUT_S, so the whole interval falls inside the stall.
COUNT_INTERVAL_S = 6.0
HEALTHY_CLIENTS = 20


def stalled_client(port: int) -> socket.socket:
    """A WebSocket client that completes the handshake by hand and then never reads: its
    receive window closes, and the server's send buffer fills behind it."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, STALLED_RCVBUF)  # before connect
    sock.connect(("127.0.0.1", port))
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(f"GET /ws HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
                 f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                 "Sec-WebSocket-Version: 13\r\n\r\n".encode())
    head = b""
    while b"\r\n\r\n" not in head:  # byte by byte: not one byte of a frame is read
        byte = sock.recv(1)
        assert byte, f"the live view closed the handshake: {head!r}"
        head += byte
    assert head.startswith(b"HTTP/1.1 101 "), head
    return sock


def send_queue(server_port: int, client_port: int) -> int | None:
    """Bytes the live view's socket to this client holds unacknowledged (the kernel's send
    queue, /proc/net/tcp `tx_queue`); None once that connection is gone."""
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, remote = fields[1], fields[2]
        if (int(local.rsplit(":", 1)[1], 16), int(remote.rsplit(":", 1)[1], 16)) == (
                server_port, client_port) and fields[3] == "01":  # ESTABLISHED
            return int(fields[4].split(":")[0], 16)
    return None


def health(port: int) -> dict:
    return json.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5).read())


def fill_frames(kafka, port: int) -> None:
    """Make every frame ~200 KB (40 analytics windows of 5000 characters: the frame carries
    the newest 60 windows whole), so a stalled client fills the server's buffers in seconds
    rather than minutes; returns once the live view's frames are that big."""
    prod = producer(kafka)
    for i in range(40):
        prod.produce(topics.ANALYTICS, orjson.dumps({
            "window_start": f"2000-01-01T00:{i:02d}:00Z", "event_type": "stall-test",
            "pad": "x" * 5000}), b"k")
    assert prod.flush(30) == 0

    async def big_frame():
        async with websockets.connect(f"ws://127.0.0.1:{port}/ws", max_size=2**22) as ws:
            for _ in range(120):
                if len(await asyncio.wait_for(ws.recv(), 10)) > 150_000:
                    return True
        return False

    assert asyncio.run(big_frame()), "frames never carried the stall test's windows"


async def count_frames(url: str, seconds: float) -> int:
    async with websockets.connect(url, max_size=2**22) as ws:
        received = 0
        deadline = time.monotonic() + seconds
        with contextlib.suppress(TimeoutError):
            while (left := deadline - time.monotonic()) > 0:
                await asyncio.wait_for(ws.recv(), left)
                received += 1
        return received


def test_a_stalled_client_does_not_slow_the_others(platform, live):
    fill_frames(platform.kafka, live)
    stalled = stalled_client(live)
    try:
        client_port = stalled.getsockname()[1]
        # The server's send queue to the stalled client stops growing (frames come 4 times a
        # second): the kernel buffer is full, and the hub's send to it no longer completes.
        sizes: list[int | None] = []

        def send_buffer_full() -> bool:
            sizes.append(send_queue(live, client_port))
            return len(sizes) > 4 and sizes[-1] is not None and sizes[-1] > 0 and len(
                set(sizes[-4:])) == 1

        wait_for(send_buffer_full, timeout_s=60, interval_s=0.5,
                 message="the live view's send buffer to the stalled client to fill")
        stalled_at = time.monotonic()
        before = health(live)["frames"]

        async def crowd():
            return await asyncio.gather(*(count_frames(f"ws://127.0.0.1:{live}/ws",
                                                       COUNT_INTERVAL_S)
                                          for _ in range(HEALTHY_CLIENTS)))

        counts = asyncio.run(crowd())
        broadcast = health(live)["frames"] - before
        # The broadcaster kept its pace (loosely: two busy cores), and every healthy client got
        # nearly every frame it broadcast meanwhile (less the ones around connect and close).
        assert broadcast >= COUNT_INTERVAL_S * FRAMES_PER_S / 2, (broadcast, counts)
        assert min(counts) >= 0.8 * broadcast - 2, (broadcast, counts)
        # The stalled client is dropped once one send has waited SEND_TIMEOUT_S (well before
        # uvicorn's keepalive, 20 s ping + 20 s timeout, would close it).
        wait_for(lambda: health(live)["clients"] == 0,
                 timeout_s=SEND_TIMEOUT_S + 5 - (time.monotonic() - stalled_at),
                 message="the stalled client dropped")
    finally:
        stalled.close()


# What the live view's socket to a stalled client may hold: the send buffer Linux books (twice
# the cap) and slack for its last segment. Autotuned, it would grow to MiBs.
STALLED_QUEUE_MAX = 4 * WS_SEND_BUFFER_BYTES


def test_a_stalled_client_is_dropped_after_a_bounded_amount_of_data(platform, live):
    """A client that stops reading takes at most a capped send buffer of frames before the
    hub's send to it blocks and it is dropped; a reading client keeps getting frames."""
    fill_frames(platform.kafka, live)
    frames_read = 0
    stop = threading.Event()

    def read() -> None:
        nonlocal frames_read
        with websockets.sync.client.connect(f"ws://127.0.0.1:{live}/ws",
                                            max_size=2**22) as ws:
            while not stop.is_set():
                ws.recv(timeout=10)  # a TimeoutError fails the test: the frames stopped
                frames_read += 1

    with ThreadPoolExecutor(1) as pool:
        reader = pool.submit(read)
        try:
            wait_for(lambda: frames_read or reader.done(), timeout_s=30,
                     message="the reading client's first frame")
            stalled = stalled_client(live)
            try:
                client_port = stalled.getsockname()[1]
                wait_for(lambda: health(live)["clients"] == 2, timeout_s=30,
                         message="both clients connected")
                queued: list[int] = []

                def dropped() -> bool:
                    queued.append(send_queue(live, client_port) or 0)
                    return health(live)["clients"] == 1 or reader.done()

                wait_for(dropped, timeout_s=SEND_TIMEOUT_S + 60,
                         message="the stalled client dropped")
                assert not reader.done(), reader.result()
                assert 0 < max(queued) <= STALLED_QUEUE_MAX, max(queued)
                after_drop = frames_read
                wait_for(lambda: frames_read >= after_drop + 3 or reader.done(), timeout_s=30,
                         message="frames to the reading client after the drop")
            finally:
                stalled.close()
        finally:
            stop.set()
        reader.result()


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
