"""The service's /docs and /redoc pages work offline: every asset comes from the server itself."""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator

import pytest
import uvicorn
from domainvlm.core.service import create_app
from fastapi.testclient import TestClient

from tests.plugins.colours import ColourSystem

URL = re.compile(r"""(?:src|href)\s*=\s*["']([^"']+)["']|(https?://[^\s"'<>)]+)""")
CONTENT_TYPES = {".js": "javascript", ".css": "text/css", ".png": "image/png"}


@pytest.fixture(scope="module")
def app():
    return create_app(ColourSystem().encoder())


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_docs_page_loads_only_assets_the_server_serves(app, page):
    client = TestClient(app)
    html = client.get(page)
    assert html.status_code == 200 and "text/html" in html.headers["content-type"]
    local, external = set(), set()
    for attribute, bare in URL.findall(html.text):
        (local if attribute.startswith("/") else external).add(attribute or bare)
    assert not external, f"{page} loads from outside the server: {external}"
    assert {url.rsplit(".", 1)[-1] for url in local} >= {"js", "png"}
    for url in local:
        asset = client.get(url)
        assert asset.status_code == 200, url
        assert CONTENT_TYPES["." + url.rsplit(".", 1)[-1]] in asset.headers["content-type"]
        assert len(asset.content) > 1000
    if page == "/docs":
        assert '"validatorUrl": null' in html.text  # no spec upload to validator.swagger.io


@pytest.fixture(scope="module")
def server(app) -> Iterator[str]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    service = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=service.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not service.started and time.monotonic() < deadline:
        time.sleep(0.05)
    yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    service.should_exit = True
    thread.join(timeout=10)


def test_swagger_ui_renders_in_a_browser_with_the_network_off(server, tmp_path):
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.skip("needs chromium on PATH (Debian: apt-get install chromium)")
    offline = [
        # every host name but the server's fails to resolve, and anything else goes to a dead proxy
        "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
        "--proxy-server=http://127.0.0.1:9",
        "--proxy-bypass-list=127.0.0.1",
    ]
    command = [
        browser,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        f"--user-data-dir={tmp_path / 'profile'}",
        *offline,
        "--virtual-time-budget=15000",
        "--dump-dom",
        f"{server}/docs",
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    dom = done.stdout
    assert done.returncode == 0, done.stderr[-2000:]
    # Swagger UI ran: it fetched /openapi.json and drew one block per endpoint.
    assert 'class="swagger-ui' in dom
    for path in ("/v1/health", "/v1/zeroshot", "/v1/search"):
        assert path in dom
    assert "Zero-shot classification and knowledge-base search" in dom
