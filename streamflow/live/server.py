"""`streamflow live`: the page, its WebSocket and a health endpoint (Starlette + uvicorn).

A consumer thread (its own group, from the latest offsets, never committing) feeds the Feed;
a broadcaster publishes a frame FRAMES_PER_S times a second to every connected page.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import threading
import uuid
from dataclasses import dataclass
from pathlib import Path

import orjson
from confluent_kafka import KafkaError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.staticfiles import StaticFiles
from starlette.websockets import WebSocket

from streamflow import kafka_clients
from streamflow.live.feed import TOPICS, Feed
from streamflow.live.hub import Hub

log = logging.getLogger("streamflow.live")
STATIC = Path(__file__).with_name("static")
# Frames per second: smooth enough for a dashboard, cheap for 200 clients on 2 cores.
FRAMES_PER_S = 4
POLICY_VIOLATION = 1008  # WebSocket close code for a refused token


@dataclass(frozen=True)
class LiveConfig:
    bootstrap_servers: str
    token: str | None = None
    dagster_url: str = "http://127.0.0.1:3000"


class Live:
    def __init__(self, config: LiveConfig) -> None:
        self.config = config
        self.feed = Feed()
        self.hub = Hub()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- Kafka -----------------------------------------------------------------------------
    def _consume(self) -> None:
        consumer = kafka_clients.consumer(
            self.config.bootstrap_servers, f"live-view-{uuid.uuid4().hex[:8]}",
            **{"auto.offset.reset": "latest", "fetch.wait.max.ms": 50})
        consumer.subscribe(list(TOPICS))
        try:
            while not self._stop.is_set():
                good = []
                for msg in consumer.consume(500, 0.1):
                    if msg.error() is None:
                        good.append(msg)
                    elif msg.error().code() != KafkaError._PARTITION_EOF:
                        log.warning("consumer error: %s", msg.error())
                self.feed.add_batch(good)
                self.feed.connected = bool(consumer.assignment())
        finally:
            consumer.close()

    async def _broadcast(self) -> None:
        while True:
            if self.hub.clients:
                self.hub.publish(self._frame())
            await asyncio.sleep(1 / FRAMES_PER_S)

    def _frame(self) -> str:
        return orjson.dumps({**self.feed.frame(), "dagster_url": self.config.dagster_url,
                             "clients": len(self.hub.clients)}).decode()

    @contextlib.asynccontextmanager
    async def lifespan(self, _app):
        self._thread = threading.Thread(target=self._consume, name="live-consumer", daemon=True)
        self._thread.start()
        broadcaster = asyncio.create_task(self._broadcast())
        try:
            yield
        finally:
            broadcaster.cancel()
            self._stop.set()
            self._thread.join(10)

    # -- HTTP ------------------------------------------------------------------------------
    def _authorised(self, token: str | None) -> bool:
        expected = self.config.token
        return expected is None or (
            token is not None and hmac.compare_digest(token.encode(), expected.encode()))

    async def index(self, _request: Request):
        return FileResponse(STATIC / "index.html")

    async def health(self, _request: Request):
        return JSONResponse({"status": "ok", "kafka_assigned": self.feed.connected,
                             "clients": len(self.hub.clients), "frames": self.hub.frames})

    async def websocket(self, websocket: WebSocket):
        token = websocket.query_params.get("token")
        if not self._authorised(token):
            await websocket.close(code=POLICY_VIOLATION)
            return
        await websocket.accept()
        await self.hub.serve(websocket, self._frame())

    def app(self) -> Starlette:
        return Starlette(routes=[
            Route("/", self.index),
            Route("/health", self.health),
            WebSocketRoute("/ws", self.websocket),
            Mount("/static", StaticFiles(directory=STATIC), name="static"),
        ], lifespan=self.lifespan)


def run_live(config: LiveConfig, port: int, host: str = "127.0.0.1") -> None:
    import uvicorn

    uvicorn.run(Live(config).app(), host=host, port=port, log_level="warning",
                ws_ping_interval=20, ws_ping_timeout=20)
