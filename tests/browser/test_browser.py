"""The shop from a real browser: headless Chromium runs a connect-web page against the port.

The page (``tests/browser/src/app.ts``: protobuf-es v2 code that buf generates
from the same protos, ``@connectrpc/connect-web``, bundled by esbuild) is
served from one origin and calls the shop's Connect port on another, allowed
by ``--cors-origin``: it places an order over Connect (JSON), reads it back
over Connect (binary), asks for an unknown order (NOT_FOUND) and lists the
customer's orders over gRPC-Web (server streaming). Chromium (Debian's
``chromium-headless-shell``, see ``install-chromium``), driven over the
DevTools protocol (``cdp.py``), waits until the page says it is done; its DOM
must show all of it, and a screenshot is kept under ``.cache/artifacts/``.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import http.server
import os
import re
import shutil
import subprocess
import threading
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from examples.shop.app import app
from tests.browser.cdp import Browser
from wirebus.connect import ConnectConfig, ConnectServer
from wirebus.testing import AppHarness

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
ARTIFACTS = ROOT / ".cache" / "artifacts"
BROWSER = shutil.which("chromium-headless-shell") or shutil.which("chromium")

if BROWSER is None or shutil.which("npm") is None:
    pytest.skip(
        "no headless Chromium or npm (tests/browser/install-chromium): browser test skipped",
        allow_module_level=True,
    )

pytestmark = pytest.mark.slow


def _run(args: list[str], cwd: Path, timeout: float = 300) -> str:
    """Run a tool (npm with its cache in .cache/npm, buf from the venv); its output."""
    env = {**os.environ, "npm_config_cache": str(ROOT / ".cache" / "npm")}
    env.update(npm_config_fund="false", npm_config_audit="false")
    env["PATH"] = f"{ROOT / '.venv' / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    done = subprocess.run(
        args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
    assert done.returncode == 0, f"{' '.join(args)} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


@pytest.fixture(scope="module")
def page_dir() -> Path:
    """tests/browser with its packages installed, its code generated and its page bundled."""
    stamp = HERE / "node_modules" / ".wirebus-installed"
    digest = hashlib.sha256((HERE / "package-lock.json").read_bytes()).hexdigest()
    if not (stamp.is_file() and stamp.read_text() == digest):
        _run(["npm", "ci", "--no-audit", "--no-fund"], HERE, timeout=600)
        stamp.write_text(digest)
    _run(["buf", "generate", "--template", "tests/browser/buf.gen.yaml"], ROOT)
    _run(["npm", "run", "--silent", "typecheck"], HERE)
    _run(["npm", "run", "--silent", "build"], HERE)
    return HERE


@pytest.fixture
def page_server(page_dir: Path) -> Iterator[str]:
    """The page's origin: a static HTTP server of tests/browser on 127.0.0.1."""
    handler = functools.partial(_QuietHandler, directory=str(page_dir))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
async def shop_url(page_server: str) -> AsyncIterator[str]:
    """The shop's Connect port, allowing calls from the page's origin only."""
    async with AppHarness(app) as harness:
        config = ConnectConfig(port=0, cors_origins=(page_server,), grace_seconds=1.0)
        async with ConnectServer(app, config, mediator=harness.mediator) as server:
            yield server.url


def drive(url: str) -> tuple[str, bytes]:
    """Open ``url`` in headless Chromium, wait until the page is done: its DOM and a PNG."""
    assert BROWSER is not None
    with Browser(BROWSER) as browser:
        browser.navigate(url)
        status = "document.getElementById('status')?.textContent"
        browser.wait_for(f"{status} === 'done' || {status}?.startsWith('failed')", within=30)
        return browser.evaluate("document.documentElement.outerHTML"), browser.screenshot()


def text_of(dom: str, element_id: str) -> str:
    found = re.search(rf'id="{element_id}">(.*?)</', dom, re.S)
    assert found, f"no #{element_id} in the page:\n{dom}"
    return found.group(1)


async def test_a_browser_places_an_order_and_lists_it_over_connect_and_grpc_web(
    page_server: str, shop_url: str, tmp_path: Path
) -> None:
    customer = f"browser-{uuid.uuid4().hex[:8]}"
    url = f"{page_server}/index.html?api={shop_url}&customer={customer}"
    dom, png = await asyncio.to_thread(drive, url)
    assert text_of(dom, "status") == "done", dom
    order_id = text_of(dom, "placed")
    assert re.fullmatch(r"[0-9a-f-]{36}", order_id)
    assert text_of(dom, "total").startswith("2500 cents, ")
    assert text_of(dom, "error") == "5"  # connect-web's Code.NotFound
    rows = re.findall(r"<li>(.*?)</li>", text_of_list(dom))
    assert rows == [f"{order_id} {customer} 2500"]
    shot = tmp_path / "shop.png"
    shot.write_bytes(png)
    assert png.startswith(b"\x89PNG")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    kept = ARTIFACTS / "browser-shop.png"
    shutil.copyfile(shot, kept)
    print(f"browser screenshot: {kept}")


def text_of_list(dom: str) -> str:
    found = re.search(r'<ul id="orders">(.*?)</ul>', dom, re.S)
    assert found, dom
    return found.group(1)
