"""The live page in a real browser (Debian's Chromium driven by Playwright) fed by the broker."""

from __future__ import annotations

import contextlib
import http.server
import threading
import time
import uuid
from collections.abc import Iterator

import orjson

from streamflow import topics
from streamflow.kafka_clients import producer
from tests.e2e.conftest import screenshot
from tests.helpers.live import start_live

XSS_USER = "<img src=x onerror=window.__xss=1>"
XSS_NOTE = "<script>window.__xss=2</script>"


def total(page) -> int:
    return page.evaluate(
        "() => window.__lastFrame ? window.__lastFrame.topics['user-events'].total : 0")


def test_page_updates_shows_payloads_as_text_and_reconnects(platform, tmp_path, browser_page):
    page = browser_page
    proc, port = start_live(platform, tmp_path)
    try:
        page.goto(f"http://127.0.0.1:{port}/")
        page.wait_for_selector("#state[data-state=open]", timeout=30_000)
        before = total(page)

        prod = producer(platform.kafka)
        marker = uuid.uuid4().hex
        for _ in range(40):
            prod.produce(topics.USER_EVENTS, orjson.dumps({"event_id": str(uuid.uuid4())}), b"k")
        prod.produce(topics.USER_EVENTS, orjson.dumps({
            "event_id": str(uuid.uuid4()), "user_id": XSS_USER, "note": XSS_NOTE,
            "marker": marker}), b"k")
        assert prod.flush(30) == 0

        page.wait_for_function("n => window.__lastFrame && "
                               "window.__lastFrame.topics['user-events'].total >= n",
                               arg=before + 41, timeout=30_000)
        page.wait_for_selector(f"#events li:has-text('{marker}')", timeout=30_000)
        assert total(page) >= before + 41
        shown = page.inner_text("#events")
        assert XSS_USER in shown and XSS_NOTE in shown  # the markup is visible as text
        assert page.evaluate("() => window.__xss") is None  # and none of it ran
        assert page.evaluate("() => document.querySelectorAll('#events img, #events script')"
                             ".length") == 0
        page.click(f"#events li:has-text('{marker}')")
        assert marker in page.inner_text("#inspector")

        screenshot(page, "live-view")

        proc.terminate()  # the server goes away ...
        proc.wait(30)
        page.wait_for_selector("#state[data-state=closed]", timeout=30_000)
        proc, _ = start_live(platform, tmp_path, port=port)  # ... and comes back
        page.wait_for_selector("#state[data-state=open]", timeout=60_000)
        started = time.monotonic()
        page.wait_for_function("t => window.__lastFrame && window.__lastFrame.t > t",
                               arg=time.time(), timeout=30_000)
        assert time.monotonic() - started < 30
    finally:
        proc.terminate()
        proc.wait(30)


# A page of another site (another port of 127.0.0.1 is another origin) trying to read the
# stream: it records what its WebSocket to the live view receives and how that ends.
HIJACK = """<!doctype html><script>
window.__result = new Promise(resolve => {
  const ws = new WebSocket("ws://127.0.0.1:%d/ws"), got = [];
  ws.onmessage = (e) => got.push(e.data);
  ws.onclose = (e) => resolve({code: e.code, reason: e.reason, frames: got.length});
  setTimeout(() => resolve({code: null, reason: "", frames: got.length}), 5000);
});
</script>"""


@contextlib.contextmanager
def foreign_site(html: str) -> Iterator[str]:
    class Page(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            body = html.encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Page)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


def test_a_page_of_another_origin_cannot_read_the_stream(platform, tmp_path, browser_page):
    proc, port = start_live(platform, tmp_path)
    try:
        with foreign_site(HIJACK % port) as url:
            browser_page.goto(url)
            result = browser_page.evaluate("() => window.__result")
        assert result == {"code": 1008, "reason": "origin not allowed", "frames": 0}
    finally:
        proc.terminate()
        proc.wait(30)


def test_the_page_opened_with_a_token_keeps_it_in_a_cookie(platform, tmp_path, browser_page):
    page = browser_page
    proc, port = start_live(platform, tmp_path, STREAMFLOW_LIVE_TOKEN="page-token")
    try:
        page.goto(f"http://127.0.0.1:{port}/?token=page-token")
        page.wait_for_function("() => window.__lastFrame", timeout=30_000)
        assert "token" not in page.url  # out of the address bar, history and bookmarks
        assert page.evaluate("() => document.cookie") == ""  # HttpOnly, and sent to /ws only
        page.reload()  # the cookie alone opens the stream again: a frame arrives. (The state
        # alone would not say so: a refused socket is "open" until its 1008 close comes.)
        page.wait_for_function("() => window.__lastFrame", timeout=30_000)
        assert page.get_attribute("#state", "data-state") == "open"

        stranger = page.context.browser.new_page()  # another context: no cookie
        stranger.goto(f"http://127.0.0.1:{port}/?token=wrong")
        stranger.wait_for_selector("#state:has-text('refused: token required')",
                                   timeout=30_000)
        assert stranger.evaluate("() => window.__lastFrame") is None
        stranger.close()
    finally:
        proc.terminate()
        proc.wait(30)
