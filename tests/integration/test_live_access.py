"""Who may read the live view, against the real server: Origin check, token channels, the
refusal to listen beyond loopback without a token."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import urllib.error
import urllib.request
from typing import NamedTuple

import pytest
import websockets

from streamflow.infra.processes import free_port
from tests.conftest import worker_env
from tests.helpers.cli import assert_one_error_line
from tests.helpers.live import start_live

ALLOWED = "https://dash.example.com"
TOKEN = "s3cret-live-token"
POLICY_VIOLATION = 1008


class Outcome(NamedTuple):
    close_code: int | None  # None: the connection was still open after FRAMES frames
    close_reason: str
    frames: int


FRAMES = 2


async def _attempt(url: str, origin: str | None, headers: dict[str, str] | None,
                   **connect) -> Outcome:
    async with websockets.connect(url, origin=origin, additional_headers=headers,
                                  max_size=2**22, proxy=None, **connect) as ws:
        received = 0
        try:
            while received < FRAMES:
                await asyncio.wait_for(ws.recv(), 10)
                received += 1
        except websockets.ConnectionClosed as closed:
            rcvd = closed.rcvd
            return Outcome(rcvd and rcvd.code, rcvd.reason if rcvd else "", received)
        return Outcome(None, "", received)


def attempt(url: str, origin: str | None = None, headers: dict[str, str] | None = None,
            **connect) -> Outcome:
    """Open the WebSocket and read up to FRAMES frames; how it ended and what came first."""
    return asyncio.run(_attempt(url, origin, headers, **connect))


OPEN = Outcome(None, "", FRAMES)
FOREIGN = Outcome(POLICY_VIOLATION, "origin not allowed", 0)
NO_TOKEN = Outcome(POLICY_VIOLATION, "token required", 0)


@pytest.fixture(scope="module")
def open_live(platform, tmp_path_factory):
    """No token, loopback, one origin allowed besides its own."""
    proc, port = start_live(platform, tmp_path_factory.mktemp("open-live"),
                            STREAMFLOW_LIVE_ALLOWED_ORIGINS=f" {ALLOWED}, http://[::1]:9,")
    yield port
    proc.terminate()
    proc.wait(30)


@pytest.fixture(scope="module")
def token_live(platform, tmp_path_factory):
    """A token, listening on every interface (allowed because of the token)."""
    proc, port = start_live(platform, tmp_path_factory.mktemp("token-live"), host="0.0.0.0",
                            STREAMFLOW_LIVE_TOKEN=TOKEN)
    yield port
    proc.terminate()
    proc.wait(30)


def test_a_foreign_origin_is_closed_with_1008_before_any_frame_own_and_listed_get_frames(
        open_live):
    url = f"ws://127.0.0.1:{open_live}/ws"
    for origin in ("https://evil.example", f"http://127.0.0.1:{open_live + 1}",
                   f"https://127.0.0.1:{open_live}", "http://dash.example.com", "null"):
        assert attempt(url, origin) == FOREIGN, origin
    for origin in (f"http://127.0.0.1:{open_live}", ALLOWED, f"{ALLOWED}:443", None):
        assert attempt(url, origin) == OPEN, origin


def test_a_rebound_name_is_not_our_own_origin_without_a_token(open_live):
    # DNS rebinding: evil.example resolves to 127.0.0.1 now, so its page's handshake carries
    # Host and Origin evil.example:<port> alike. Connect to 127.0.0.1 under that name.
    name = f"evil.example:{open_live}"
    assert attempt(f"ws://{name}/ws", f"http://{name}", host="127.0.0.1") == FOREIGN


@pytest.mark.parametrize("channel", ["header", "cookie", "query"])
def test_the_token_is_accepted_from_each_channel_and_a_wrong_one_refused(token_live, channel):
    def via(token: str) -> Outcome:
        url, headers = f"ws://127.0.0.1:{token_live}/ws", {}
        if channel == "header":
            headers["Authorization"] = f"Bearer {token}"
        elif channel == "cookie":
            headers["Cookie"] = f"streamflow_live_token={token}"
        else:
            url += f"?token={token}"
        return attempt(url, f"http://127.0.0.1:{token_live}", headers)

    assert via(TOKEN) == OPEN
    assert via("wrong-token") == NO_TOKEN
    assert via(TOKEN[:-1]) == NO_TOKEN


def test_with_a_token_a_foreign_origin_is_still_refused(token_live):
    url = f"ws://127.0.0.1:{token_live}/ws?token={TOKEN}"
    assert attempt(url, "https://evil.example") == FOREIGN
    assert attempt(f"ws://127.0.0.1:{token_live}/ws") == NO_TOKEN  # and no token, no stream


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


def test_the_page_trades_a_right_token_for_an_http_only_cookie(token_live):
    opener = urllib.request.build_opener(_NoRedirect)
    with pytest.raises(urllib.error.HTTPError) as redirected:
        opener.open(f"http://127.0.0.1:{token_live}/?token={TOKEN}", timeout=10)
    assert redirected.value.code == 303
    assert redirected.value.headers["Location"] == "/"
    cookie = redirected.value.headers["Set-Cookie"]
    assert cookie.startswith(f"streamflow_live_token={TOKEN};")
    for attribute in ("HttpOnly", "Path=/ws", "SameSite=strict"):
        assert attribute.lower() in cookie.lower(), cookie
    with opener.open(f"http://127.0.0.1:{token_live}/?token=wrong", timeout=10) as page:
        assert page.status == 200 and b"StreamFlow live" in page.read()  # no cookie for it
        assert page.headers["Set-Cookie"] is None


def run_cli_live(platform, *args: str, **env: str) -> subprocess.CompletedProcess:
    """`streamflow live` expected to stop at once (a server would outlive the timeout)."""
    return subprocess.run([sys.executable, "-m", "streamflow.cli", "live",
                           "--port", str(free_port()), *args],
                          env=worker_env(platform, **env), capture_output=True, text=True,
                          timeout=30)


@pytest.mark.parametrize(("host", "token"), [
    ("0.0.0.0", None), ("::", None), ("live.example.com", None), ("0.0.0.0", ""),
])
def test_listening_beyond_loopback_without_a_token_is_refused(platform, host, token):
    env = {} if token is None else {"STREAMFLOW_LIVE_TOKEN": token}
    done = run_cli_live(platform, "--host", host, **env)
    assert_one_error_line(done, host, "STREAMFLOW_LIVE_TOKEN")


def test_a_malformed_allowed_origin_stops_the_start_with_one_line(platform):
    done = run_cli_live(platform, STREAMFLOW_LIVE_ALLOWED_ORIGINS="https://ok.example,ok.example")
    assert_one_error_line(done, "STREAMFLOW_LIVE_ALLOWED_ORIGINS", "'ok.example'")
