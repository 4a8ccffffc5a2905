"""The hub drops a stalled client, and closing it cannot hang either."""

import asyncio

from streamflow.live import hub as hub_module
from streamflow.live.hub import Hub


class StalledSocket:
    """A client whose TCP send buffer is full: every send and the close wait for ever."""

    def __init__(self) -> None:
        self.closing = False

    async def send_text(self, _message: str) -> None:
        await asyncio.Event().wait()

    async def receive(self) -> dict:
        await asyncio.Event().wait()
        return {}

    async def close(self) -> None:
        self.closing = True
        await asyncio.Event().wait()


def test_a_stalled_client_is_dropped_and_its_close_is_bounded(monkeypatch):
    monkeypatch.setattr(hub_module, "SEND_TIMEOUT_S", 0.05)
    hub, socket = Hub(), StalledSocket()

    async def scenario() -> None:
        # Not a speed target: a serve() that waited on the close would never return.
        await asyncio.wait_for(hub.serve(socket, first_frame="{}"), 5)

    asyncio.run(scenario())
    assert socket.closing and hub.clients == set()

