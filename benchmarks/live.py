"""Live view: produce -> WebSocket client latency, and frames delivered to 200 clients.

Latency is measured at a WebSocket client in this process (the browser adds only rendering).
"""

from __future__ import annotations

import asyncio
import json
import statistics
import subprocess
import time
import urllib.request
import uuid

import orjson
import websockets

from benchmarks.harness import RssSampler, Stack, percentile
from streamflow import kafka_clients, topics
from streamflow.infra.processes import free_port, wait_until
from streamflow.kafka_connection import KafkaConnection
from streamflow.live.server import FRAMES_PER_S

CLIENTS = 200


def _start(st: Stack) -> tuple[subprocess.Popen, int]:
    port = free_port()
    proc = st.start("live", "--port", str(port))

    def assigned() -> bool:
        try:
            return json.loads(urllib.request.urlopen(
                f"http://127.0.0.1:{port}/health", timeout=2).read())["kafka_assigned"]
        except OSError:
            return False

    if not wait_until(assigned, timeout_s=60):
        raise RuntimeError("live view did not become healthy")
    return proc, port


async def _latencies(url: str, kafka: KafkaConnection, samples: int) -> list[float]:
    prod = kafka_clients.producer(kafka, **{"linger.ms": 0})
    sent: dict[str, float] = {}
    seen: list[float] = []
    async with websockets.connect(url, max_size=2**22) as ws:
        async def watch():
            while len(seen) < samples:
                frame = json.loads(await ws.recv())
                now = time.time()
                for event in frame["events"]:
                    for marker, at in list(sent.items()):
                        if marker in event["payload"]:
                            seen.append(now - at)
                            del sent[marker]

        watcher = asyncio.create_task(watch())
        for _ in range(samples):
            marker = uuid.uuid4().hex
            sent[marker] = time.time()
            prod.produce(topics.USER_EVENTS, orjson.dumps({"event_id": str(uuid.uuid4()),
                                                           "marker": marker}), b"bench")
            prod.flush(5)
            await asyncio.sleep(0.3)
        await asyncio.wait_for(watcher, 30)
    return seen


async def _fan_out(url: str, seconds: float) -> int:
    counts = [0] * CLIENTS

    async def client(i: int):
        async with websockets.connect(url, max_size=2**22) as ws:
            deadline = time.monotonic() + seconds
            while time.monotonic() < deadline:
                try:
                    await asyncio.wait_for(ws.recv(), max(deadline - time.monotonic(), 0.01))
                    counts[i] += 1
                except TimeoutError:
                    break

    await asyncio.gather(*(client(i) for i in range(CLIENTS)))
    return sum(counts)


def bench_live(st: Stack, seconds: float = 10.0, samples: int = 50) -> dict:
    proc, port = _start(st)
    rss = RssSampler(proc.pid)
    url = f"ws://127.0.0.1:{port}/ws"
    try:
        latencies = sorted(asyncio.run(_latencies(url, st.kafka, samples)))
        frames = asyncio.run(_fan_out(url, seconds))
    finally:
        proc.terminate()
        proc.wait(30)
        peak = rss.stop()
    return {
        "produce_to_client_p50_s": round(statistics.median(latencies), 3),
        "produce_to_client_p95_s": round(percentile(latencies, 0.95), 3),
        "samples": len(latencies),
        "target_p95_s": 1.0,
        "clients": CLIENTS,
        "frames_per_s_total": round(frames / seconds),
        "frames_per_s_per_client": round(frames / seconds / CLIENTS, 2),
        "server_frame_rate": FRAMES_PER_S,
        "peak_rss_mb": round(peak / 2**20, 1),
    }
