"""Fan-out of frames to WebSocket clients; a slow client never holds up the others.

Each client has one slot holding the newest frame and its own sender task. A new frame
replaces an unsent one (frames are whole snapshots, so coalescing loses nothing), and a send
that takes longer than SEND_TIMEOUT_S disconnects that client alone.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field

SEND_TIMEOUT_S = 10.0


@dataclass(eq=False)
class Client:
    websocket: object
    latest: str | None = None
    ready: asyncio.Event = field(default_factory=asyncio.Event)


class Hub:
    def __init__(self) -> None:
        self.clients: set[Client] = set()
        self.frames = 0  # published so far (/health)

    def publish(self, frame: str) -> None:
        self.frames += 1
        for client in self.clients:
            client.latest = frame
            client.ready.set()

    async def serve(self, websocket, first_frame: str | None) -> None:
        """Send frames to one client until it leaves (or stalls past SEND_TIMEOUT_S)."""
        client = Client(websocket)
        self.clients.add(client)
        if first_frame is not None:
            client.latest = first_frame
            client.ready.set()
        receiver = asyncio.create_task(self._drain(websocket))
        try:
            while not receiver.done():
                await client.ready.wait()
                client.ready.clear()
                frame, client.latest = client.latest, None
                if frame is None:
                    continue
                await asyncio.wait_for(websocket.send_text(frame), SEND_TIMEOUT_S)
        except (TimeoutError, RuntimeError, OSError):
            pass  # stalled or gone: only this client is dropped
        except Exception as exc:  # noqa: BLE001 - starlette raises its own disconnect types
            if type(exc).__name__ not in ("WebSocketDisconnect", "ClientDisconnected"):
                raise
        finally:
            self.clients.discard(client)
            receiver.cancel()
            with contextlib.suppress(Exception):
                await websocket.close()

    @staticmethod
    async def _drain(websocket) -> None:
        """Read (and ignore) what the client sends; returns when it disconnects."""
        with contextlib.suppress(Exception):
            while True:
                message = await websocket.receive()
                if message.get("type") == "websocket.disconnect":
                    return
