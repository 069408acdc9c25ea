"""The web page's tests (tests/serve/test_web*.py, test_photos_web.py): skip, or under
GEOINDEX_REQUIRE_BROWSER=1 (CI) fail, when the built page, chromium or Playwright is missing; the
browser's settings; an app served on a real socket."""

import contextlib
import os
import socket
import threading
import time
from pathlib import Path

import pytest

import geoindex.serve.web as serve_web

REQUIRE_BROWSER = os.environ.get("GEOINDEX_REQUIRE_BROWSER") == "1"


def skip_or_fail(reason: str):
    if REQUIRE_BROWSER:
        pytest.fail(f"{reason} (GEOINDEX_REQUIRE_BROWSER=1)")
    pytest.skip(reason)


def need_built_page():
    if not (serve_web.STATIC_DIR / "index.html").is_file():
        skip_or_fail(f"the page is not built ({serve_web.STATIC_DIR}): run `{serve_web.BUILD_HINT}`")


CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
TIMEOUT_MS = 20_000


@contextlib.contextmanager
def running(app, start_timeout_s: float = 30):
    """``app`` on a free loopback port, served by uvicorn in a thread; yields its base URL."""
    import uvicorn

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + start_timeout_s
    while not srv.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            pytest.fail("uvicorn did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        srv.should_exit = True
        thread.join(10)
