"""Fan-out of frames to WebSocket clients; a slow client never holds up the others.

Each client has one slot per channel holding the newest message and its own sender task. A new
message replaces an unsent one of its channel (messages are whole snapshots, so coalescing
loses nothing), and a send that takes longer than SEND_TIMEOUT_S disconnects that client alone.
A client that stops reading blocks a send once its socket's buffers are full, which the server
keeps to a few hundred KB (server.WS_SEND_BUFFER_BYTES).

Every client gets the frames. The other channels (the Cluster view) go only to the clients that
asked, with `{"subscribe": "<channel>"}` (and `{"unsubscribe": ...}`): a script or a page not
showing them pays nothing for them, and the frame stays small.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import orjson

# Seconds one send may wait for a client's buffers to take it: a page on a slow link still gets
# a frame through; one that stopped reading is dropped.
SEND_TIMEOUT_S = 10.0
FRAME = "frame"
CHANNELS = ("cluster",)  # what a client may subscribe to besides the frames
# A request is a few dozen bytes: a longer text is not parsed (nor anything binary).
MAX_REQUEST_CHARS = 200


@dataclass(eq=False)
class Client:
    websocket: object
    pending: dict[str, str] = field(default_factory=dict)  # channel -> newest unsent message
    channels: set[str] = field(default_factory=lambda: {FRAME})
    ready: asyncio.Event = field(default_factory=asyncio.Event)

    def offer(self, channel: str, message: str) -> None:
        self.pending[channel] = message
        self.ready.set()


def subscription(text: str | None) -> tuple[str, bool] | None:
    """A client's request as (channel, subscribe?), or None for anything else (ignored)."""
    if not text or len(text) > MAX_REQUEST_CHARS:
        return None
    try:
        request = orjson.loads(text)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(request, dict):
        return None
    for verb, subscribe in (("subscribe", True), ("unsubscribe", False)):
        if request.get(verb) in CHANNELS:
            return request[verb], subscribe
    return None


class Hub:
    def __init__(self, on_subscribe: Callable[[str], None] | None = None) -> None:
        self.clients: set[Client] = set()
        self.frames = 0  # published so far (/health)
        self.latest: dict[str, str] = {}  # channel -> newest message, for new subscribers
        # Subscribers per channel; read by the live server's refresh threads (an int read).
        self.subscribers: Counter[str] = Counter()
        self._on_subscribe = on_subscribe or (lambda _channel: None)

    def publish(self, frame: str) -> None:
        self.frames += 1
        for client in self.clients:
            client.offer(FRAME, frame)

    def publish_to(self, channel: str, message: str) -> None:
        self.latest[channel] = message
        for client in self.clients:
            if channel in client.channels:
                client.offer(channel, message)

    def _subscribe(self, client: Client, channel: str, subscribe: bool) -> None:
        if subscribe and channel not in client.channels:
            client.channels.add(channel)
            self.subscribers[channel] += 1
            if channel in self.latest:
                client.offer(channel, self.latest[channel])
            self._on_subscribe(channel)
        elif not subscribe and channel in client.channels:
            client.channels.discard(channel)
            client.pending.pop(channel, None)
            self.subscribers[channel] -= 1

    async def serve(self, websocket, first_frame: str | None) -> None:
        """Send messages to one client until it leaves (or stalls past SEND_TIMEOUT_S)."""
        client = Client(websocket)
        self.clients.add(client)
        if first_frame is not None:
            client.offer(FRAME, first_frame)
        receiver = asyncio.create_task(self._receive(client))
        try:
            while not receiver.done():
                await client.ready.wait()
                client.ready.clear()
                while client.pending:
                    channel = next(iter(client.pending))
                    message = client.pending.pop(channel)
                    await asyncio.wait_for(websocket.send_text(message), SEND_TIMEOUT_S)
        except (TimeoutError, RuntimeError, OSError):
            pass  # stalled or gone: only this client is dropped
        except Exception as exc:  # noqa: BLE001 - starlette raises its own disconnect types
            if type(exc).__name__ not in ("WebSocketDisconnect", "ClientDisconnected"):
                raise
        finally:
            self.clients.discard(client)
            for channel in CHANNELS:
                self._subscribe(client, channel, False)
            receiver.cancel()
            # Bounded too: closing a stalled client waits on the same full send buffer, and
            # would hold this task and its socket until the keepalive gave up (~40 s).
            with contextlib.suppress(Exception):
                await asyncio.wait_for(websocket.close(), SEND_TIMEOUT_S)

    async def _receive(self, client: Client) -> None:
        """Apply the client's subscriptions (ignore anything else); returns when it
        disconnects, and wakes the sender so it notices."""
        try:
            while True:
                message = await client.websocket.receive()
                if message.get("type") == "websocket.disconnect":
                    return
                if (request := subscription(message.get("text"))) is not None:
                    self._subscribe(client, *request)
        except Exception:  # noqa: BLE001 - any failure to read means the client is gone
            pass
        finally:
            client.ready.set()
