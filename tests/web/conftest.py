"""Fixtures for the web tests: ``skinnysip serve`` on a free port, Debian's Chromium driven by
Playwright (sync API), a page that may reach 127.0.0.1 only, Kamailio and the lab call manager.

Screenshots and downloads go to ``$SKINNYSIP_ARTIFACTS`` if set, else to ``artifacts/`` in
pytest's base temp directory (printed at the end of the session).
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from peertools import free_port, require

# Kamailio comes from tests/peers' harness (sip_peers.kamailio), the same as tests/peers' fixture.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "peers"))
from sip_peers import KamailioPeer, kamailio  # noqa: E402
from webtools import CHROMIUM, CHROMIUM_ARGS, LAPTOP, PHONE, open_page  # noqa: E402

from skinnysip.lab.callmanager import LabCallManager, LabConfig  # noqa: E402

_ARTIFACTS: list[Path] = []


@pytest.fixture(scope="session")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = Path(os.environ.get("SKINNYSIP_ARTIFACTS") or tmp_path_factory.getbasetemp() / "artifacts")
    path.mkdir(parents=True, exist_ok=True)
    _ARTIFACTS.append(path)
    return path


@pytest.fixture(scope="session")
def server() -> Iterator[str]:
    """Base URL of a ``skinnysip serve`` subprocess (uvicorn) on a free loopback port."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "skinnysip", "serve", "--host", "127.0.0.1", "--port", str(port)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    try:
        while True:
            if proc.poll() is not None:
                out = proc.stdout.read().decode(errors="replace") if proc.stdout else ""
                raise RuntimeError(f"skinnysip serve exited {proc.returncode}:\n{out[-3000:]}")
            try:
                with urllib.request.urlopen(f"{base}/api/health", timeout=2) as resp:
                    if resp.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError("skinnysip serve did not answer /api/health in 60 s")
            time.sleep(0.2)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


@pytest.fixture(scope="session")
def browser() -> Iterator[object]:
    require("chromium")
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, timeout=60_000)
        try:
            yield b
        finally:
            b.close()


def _guarded_page(browser: object, viewport: dict[str, int]) -> Iterator[object]:
    context, pg, guard = open_page(browser, viewport)
    pg.guard = guard  # type: ignore[attr-defined]
    try:
        yield pg
    finally:
        context.close()  # type: ignore[attr-defined]
    guard.check()


@pytest.fixture
def page(browser: object) -> Iterator[object]:
    """A laptop-sized page (1280 x 900); fails the test if it tried to reach anything but
    127.0.0.1 or logged a script error. ``page.guard`` holds what it saw."""
    yield from _guarded_page(browser, LAPTOP)


@pytest.fixture
def phone_page(browser: object) -> Iterator[object]:
    """As ``page``, phone-sized (390 x 844)."""
    yield from _guarded_page(browser, PHONE)


@pytest.fixture(scope="session")
def kamailio_md5() -> Iterator[KamailioPeer]:
    """The same Kamailio as tests/peers/conftest.py's fixture (MD5 digest registrar)."""
    with kamailio("MD5") as peer:
        yield peer


@pytest.fixture(scope="module")
def lab_cm() -> Iterator[LabCallManager]:
    """The lab call manager (demo config: SEP001122334455 on line 1001, echo on 600) on a
    free port, running in its own event loop thread while the browser tests drive the page."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="lab-cm", daemon=True)
    thread.start()

    async def start() -> LabCallManager:
        return await LabCallManager(LabConfig.demo(keep_alive_interval=5)).start()

    cm = asyncio.run_coroutine_threadsafe(start(), loop).result(30)
    try:
        yield cm
    finally:
        asyncio.run_coroutine_threadsafe(cm.stop(), loop).result(30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if _ARTIFACTS:
        terminalreporter.write_line(f"web test artifacts (screenshots, downloads): {_ARTIFACTS[0]}")
