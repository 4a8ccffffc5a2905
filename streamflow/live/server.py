"""`streamflow live`: the page, its WebSocket and a health endpoint (Starlette + uvicorn).

A consumer thread (its own group, from the latest offsets, never committing) feeds the Feed;
a broadcaster publishes a frame FRAMES_PER_S times a second to every connected page.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import uuid
from dataclasses import dataclass
from pathlib import Path

import orjson
from confluent_kafka import KafkaError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, RedirectResponse
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.staticfiles import StaticFiles
from starlette.websockets import WebSocket

from streamflow import kafka_clients
from streamflow.kafka_connection import KafkaConnection
from streamflow.live import access
from streamflow.live.feed import TOPICS, Feed
from streamflow.live.hub import Hub

log = logging.getLogger("streamflow.live")
STATIC = Path(__file__).with_name("static")
# Frames per second: smooth enough for a dashboard, cheap for 200 clients on 2 cores.
FRAMES_PER_S = 4
POLICY_VIOLATION = 1008  # WebSocket close code for a refused Origin or token


@dataclass(frozen=True)
class LiveConfig:
    kafka: KafkaConnection
    token: str | None = None
    dagster_url: str = "http://127.0.0.1:3000"
    # Origins allowed besides the page's own (access.parse_allowed_origins).
    allowed_origins: tuple[access.Origin, ...] = ()


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
            self.config.kafka, f"live-view-{uuid.uuid4().hex[:8]}",
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
    def _refusal(self, websocket: WebSocket) -> str | None:
        """Why this handshake is refused (the close reason), or None. The Origin is checked
        first: a foreign page is told nothing about the token."""
        token = self.config.token
        own = access.own_origin(websocket.url.scheme, websocket.headers.get("host"),
                                token_set=bool(token))
        if not access.origin_allowed(websocket.headers.get("origin"), own,
                                     self.config.allowed_origins):
            return "origin not allowed"
        presented = (access.bearer_token(websocket.headers.get("authorization")),
                     websocket.cookies.get(access.TOKEN_COOKIE),
                     websocket.query_params.get("token"))
        if token and not access.token_matches(token, presented):
            return "token required"
        return None

    async def index(self, request: Request):
        token = request.query_params.get("token")
        if self.config.token and token and access.token_matches(self.config.token, [token]):
            # Trade the token in the address bar (history, bookmarks, screenshots) for a cookie
            # that page scripts cannot read and that no other site's request carries.
            response = RedirectResponse("/", status_code=303)
            response.set_cookie(access.TOKEN_COOKIE, token, path="/ws", httponly=True,
                                samesite="strict", secure=request.url.scheme == "https")
            return response
        return FileResponse(STATIC / "index.html")

    async def health(self, _request: Request):
        return JSONResponse({"status": "ok", "kafka_assigned": self.feed.connected,
                             "clients": len(self.hub.clients), "frames": self.hub.frames})

    async def websocket(self, websocket: WebSocket):
        refusal = self._refusal(websocket)
        await websocket.accept()
        if refusal is not None:
            # Accepted only to be closed, before any frame: a handshake refused with HTTP 403
            # reaches a browser as a bare 1006, and the page could not tell "refused" from
            # "server down" (it would show "reconnecting…" forever).
            await websocket.close(code=POLICY_VIOLATION, reason=refusal)
            return
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

    access.require_token_off_loopback(host, config.token)
    uvicorn.run(Live(config).app(), host=host, port=port, log_level="warning",
                ws_ping_interval=20, ws_ping_timeout=20)
