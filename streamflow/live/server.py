"""`streamflow live`: the page, its WebSocket and a health endpoint (Starlette + uvicorn).

A consumer thread (its own group, from the latest offsets, never committing) feeds the Feed;
a health thread refreshes the stack's health once a second (health.Monitor); a cluster thread
refreshes the Cluster view every CLUSTER_REFRESH_S while a page shows it; a broadcaster
publishes a frame FRAMES_PER_S times a second to every connected page, and each new cluster
document to the pages that subscribed to it (hub). No work is done per client.

No message may stop the page: a frame that cannot be built is logged and skipped, the
broadcaster is started again if it dies, and /health answers 503 while no frame has gone out
for BROADCAST_STALE_S (docs/ARCHITECTURE.md, "the live view").
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import threading
import time
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
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

from streamflow import cluster, cluster_health, kafka_clients
from streamflow.kafka_connection import KafkaConnection
from streamflow.live import access, health
from streamflow.live.feed import TOPICS, Feed
from streamflow.live.hub import Hub
from streamflow.logs import Occasional

log = logging.getLogger("streamflow.live")
STATIC = Path(__file__).with_name("static")
# Frames per second: smooth enough for a dashboard, cheap for 200 clients on 2 cores.
FRAMES_PER_S = 4
# Seconds between two health refreshes: the page's health panel is at most this old.
HEALTH_INTERVAL_S = 1.0
# Seconds between two Cluster view refreshes (only while a page shows it): a handful of admin
# requests each (groups, offsets); lag moves slowly enough to read at this pace.
CLUSTER_REFRESH_S = 3.0
CLUSTER_TIMEOUT_S = 5.0  # for one refresh; a broker that is down shows as an error meanwhile
CLUSTER = "cluster"  # the hub channel
POLICY_VIOLATION = 1008  # WebSocket close code for a refused Origin or token
# Seconds without a finished broadcast round (its frame built and handed to the hub) before
# /health says the broadcaster is down: 20 frame periods, far above a busy box's scheduling
# delays, short enough for a health probe to notice within one check.
BROADCAST_STALE_S = 5.0
# Seconds before a broadcaster that died is started again: no tight crash loop in the log.
BROADCAST_RESTART_S = 1.0
# Seconds between two log lines about frames that could not be built: a frame that keeps
# failing would otherwise log FRAMES_PER_S tracebacks a second.
FRAME_ERROR_LOG_INTERVAL_S = 10.0
# A WebSocket's kernel send buffer, in bytes (Linux books twice this). Left to autotuning it
# grows to 4 MiB (tcp_wmem): a page that stops reading would soak up MiBs of frames, often
# until the keepalive gave up (40 s), before the hub's send blocked and SEND_TIMEOUT_S started.
# Capped, the send blocks a few hundred KB after the page stops (measured: ~260 KiB queued,
# was up to 3.8 MiB); 128 KiB in flight still carries four 200 KB frames a second to a page
# 100 ms away (computed: 128 KiB / 0.1 s = 1.3 MB/s).
WS_SEND_BUFFER_BYTES = 128 * 1024


@dataclass(frozen=True)
class LiveConfig:
    kafka: KafkaConnection
    token: str | None = None
    dagster_url: str = "http://127.0.0.1:3000"
    # Origins allowed besides the page's own (access.parse_allowed_origins).
    allowed_origins: tuple[access.Origin, ...] = ()
    # The supervisor's run-state files (settings.run_dir): where the health panel finds the
    # workers and their /metrics. None: the workers' health is not shown.
    run_dir: Path | None = None
    # The embedded cluster's nodes (cluster_health.embedded_nodes with the stack's settings):
    # a stopped node shows as down, not absent, and the controller is the quorum's leader.
    # None: an external cluster, known by its metadata alone.
    nodes: cluster_health.NodesReader | None = None


class WebSocketProtocol(WebSocketsSansIOProtocol):
    """uvicorn's default WebSocket protocol, its send buffer capped at WS_SEND_BUFFER_BYTES
    from the upgrade on."""

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF,
                                                      WS_SEND_BUFFER_BYTES)


class Live:
    def __init__(self, config: LiveConfig) -> None:
        self.config = config
        self.feed = Feed()
        self.monitor = health.Monitor(config.kafka, config.run_dir, config.nodes)
        self._stop = threading.Event()
        self._cluster_wanted = threading.Event()  # a page opened the Cluster view: refresh now
        self.hub = Hub(on_subscribe=lambda _channel: self._cluster_wanted.set())
        self._cluster: tuple[int, str] = (0, "")  # (version, message), replaced whole
        self._threads: list[threading.Thread] = []
        self._broadcaster: asyncio.Task | None = None
        self._broadcast_at = float("-inf")  # time.monotonic() of the last finished round
        self._frame_error_log = Occasional(FRAME_ERROR_LOG_INTERVAL_S)
        self.frame_errors = 0

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

    def _watch_health(self) -> None:
        while not self._stop.is_set():
            try:
                self.monitor.refresh()
            except Exception:  # noqa: BLE001 - the panel goes stale; the view keeps running
                log.exception("health refresh failed")
            self._stop.wait(HEALTH_INTERVAL_S)

    def _watch_cluster(self) -> None:
        version = 0
        while not self._stop.is_set():
            if self.hub.subscribers.get(CLUSTER, 0) > 0:
                version += 1
                self._cluster = (version, orjson.dumps(self._cluster_document()).decode())
            self._cluster_wanted.wait(CLUSTER_REFRESH_S)
            self._cluster_wanted.clear()

    def _cluster_document(self) -> dict:
        document = {"kind": CLUSTER, "t": time.time()}
        try:
            overview = cluster.overview(self.config.kafka, timeout_s=CLUSTER_TIMEOUT_S)
            nodes = self.config.nodes() if self.config.nodes else None
        except Exception as exc:  # noqa: BLE001 - shown on the page; the next refresh retries
            log.warning("cluster overview failed: %s", exc)
            return {**document, "error": str(exc).splitlines()[0] if str(exc) else
                    type(exc).__name__}
        return {**document, **overview.as_dict(),
                "replication": cluster_health.view_document(overview.replication, nodes)}

    async def _supervise_broadcast(self) -> None:
        """Run the broadcaster; start it again BROADCAST_RESTART_S after it dies. It skips a
        frame it cannot build, so only a fault outside the frames ends up here."""
        while True:
            self._broadcaster = asyncio.create_task(self._broadcast(), name="live-broadcast")
            try:
                await self._broadcaster
                log.error("the live view's broadcaster returned; starting it again")
            except Exception:
                log.exception("the live view's broadcaster died; starting it again in %.0f s",
                              BROADCAST_RESTART_S)
            await asyncio.sleep(BROADCAST_RESTART_S)

    async def _broadcast(self) -> None:
        published = 0
        while True:
            version, message = self._cluster
            if version != published:
                self.hub.publish_to(CLUSTER, message)
                published = version
            if self.hub.clients:
                frame = self._frame_or_none()
                if frame is not None:
                    self.hub.publish(frame)
                    self._broadcast_at = time.monotonic()
            else:
                self._broadcast_at = time.monotonic()
            await asyncio.sleep(1 / FRAMES_PER_S)

    def broadcasting(self) -> bool:
        """The broadcaster runs and finished a round within BROADCAST_STALE_S."""
        return (self._broadcaster is not None and not self._broadcaster.done()
                and time.monotonic() - self._broadcast_at <= BROADCAST_STALE_S)

    def _frame_or_none(self) -> str | None:
        """The frame, or None (logged) when it cannot be built: the next one may be."""
        try:
            return self._frame()
        except Exception:
            self.frame_errors += 1
            if count := self._frame_error_log.count():
                log.exception("live view skipped %d frame(s) it could not build", count)
            return None

    def _frame(self) -> str:
        frame = self.feed.frame()
        snapshot = self.monitor.snapshot
        kafka = snapshot.kafka
        rates = {topic: doc["rate"] for topic, doc in frame["topics"].items()}
        return orjson.dumps({
            **frame,
            # Reading: partitions assigned and the broker answering (an assignment outlives
            # an outage, so the probe decides).
            "connected": frame["connected"] and kafka.reachable is not False,
            "kafka": {"reachable": kafka.reachable, "detail": kafka.detail,
                      "since": kafka.since},
            "health": health.document(snapshot, rates, assigned=frame["connected"]),
            "dagster_url": self.config.dagster_url,
            "clients": len(self.hub.clients)}).decode()

    @contextlib.asynccontextmanager
    async def lifespan(self, _app):
        self._threads = [threading.Thread(target=target, name=name, daemon=True)
                         for target, name in ((self._consume, "live-consumer"),
                                              (self._watch_health, "live-health"),
                                              (self._watch_cluster, "live-cluster"))]
        for thread in self._threads:
            thread.start()
        self._broadcast_at = time.monotonic()
        broadcaster = asyncio.create_task(self._supervise_broadcast())
        try:
            yield
        finally:
            broadcaster.cancel()
            self._stop.set()
            self._cluster_wanted.set()
            for thread in self._threads:
                thread.join(10)

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
        broadcasting = self.broadcasting()
        return JSONResponse({"status": "ok" if broadcasting else "broadcast down",
                             "broadcasting": broadcasting,
                             "kafka_assigned": self.feed.connected,
                             "kafka_reachable": self.monitor.snapshot.kafka.reachable,
                             "clients": len(self.hub.clients), "frames": self.hub.frames,
                             "frame_errors": self.frame_errors,
                             "skipped_messages": self.feed.skipped_counts()},
                            status_code=200 if broadcasting else 503)

    async def websocket(self, websocket: WebSocket):
        refusal = self._refusal(websocket)
        await websocket.accept()
        if refusal is not None:
            # Accepted only to be closed, before any frame: a handshake refused with HTTP 403
            # reaches a browser as a bare 1006, and the page could not tell "refused" from
            # "server down" (it would show "reconnecting…" forever).
            await websocket.close(code=POLICY_VIOLATION, reason=refusal)
            return
        # No first frame when it cannot be built: the broadcaster's next one may be.
        await self.hub.serve(websocket, self._frame_or_none())

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
    # log_config=None: uvicorn keeps our handlers (STREAMFLOW_LOG_FORMAT=json too).
    uvicorn.run(Live(config).app(), host=host, port=port, log_level="warning", log_config=None,
                ws=WebSocketProtocol, ws_ping_interval=20, ws_ping_timeout=20)
