"""Browser fixtures: Debian's Chromium (/usr/bin/chromium, never a downloaded browser) driven
by Playwright, one browser per test module and a fresh context per test; and a live server
run in this process, for configurations the CLI does not make (a run directory, a closed
Kafka port)."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import uvicorn
from playwright.sync_api import sync_playwright

from streamflow.infra.processes import free_port
from streamflow.live.server import Live, LiveConfig, WebSocketProtocol
from tests.conftest import ROOT, wait_for

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = ROOT / "test-artifacts"
# Chromium flags for a closed network, as root, headless (see the machine notes).
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="module")
def chromium():
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} missing: `make test` installs Debian's chromium "
                    "(scripts/system-packages)")
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)
        yield browser
        browser.close()


@pytest.fixture
def browser_page(chromium):
    context = chromium.new_context(viewport={"width": 1300, "height": 1000})
    yield context.new_page()
    context.close()


def screenshot(page, name: str, selector: str | None = None) -> Path:
    """test-artifacts/<name>.png: the whole page, or the element ``selector`` names."""
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    if selector is None:
        page.screenshot(path=str(path), full_page=True)
    else:
        page.locator(selector).screenshot(path=str(path))
    return path


@contextlib.contextmanager
def live_in_process(config: LiveConfig) -> Iterator[tuple[Live, int]]:
    """The live server on a free port in a thread of this process; stopped on exit."""
    live, port = Live(config), free_port()
    server = uvicorn.Server(uvicorn.Config(live.app(), host="127.0.0.1", port=port,
                                           log_level="warning", ws=WebSocketProtocol))
    thread = threading.Thread(target=server.run, name="live-server", daemon=True)
    thread.start()
    try:
        wait_for(lambda: server.started or not thread.is_alive(), timeout_s=30,
                 message="the live server listening")
        assert thread.is_alive(), "the live server did not start"
        yield live, port
    finally:
        server.should_exit = True
        thread.join(30)
