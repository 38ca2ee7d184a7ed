"""The page against a server that wants its bearer token (``skinnysip serve --token``, which a
server beyond loopback always has): the 401 opens the "API token" box and says so at the form;
with the token given the SIP tester runs, and the softphone registers, follows its event
WebSocket (token as the ``skinnysip.bearer.<token>`` subprotocol) and unregisters."""

from __future__ import annotations

import secrets
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sip_peers import KamailioPeer
from webtools import LAPTOP, open_page, run_form

from peertools import free_port

pytestmark = pytest.mark.peer

UI_MS = 30_000


@pytest.fixture(scope="module")
def token_server() -> Iterator[tuple[str, str]]:
    token = secrets.token_urlsafe(24)
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "skinnysip", "serve", "--host", "127.0.0.1", "--port", str(port),
                             "--token", token], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    try:
        while True:
            assert proc.poll() is None, (proc.stdout.read() if proc.stdout else b"").decode(errors="replace")
            try:
                with urllib.request.urlopen(f"{base}/api/health", timeout=2):
                    break
            except OSError:
                assert time.monotonic() < deadline, "skinnysip serve --token did not answer"
                time.sleep(0.2)
        yield base, token
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


def test_page_asks_for_the_token_and_then_works(browser: Any, token_server: tuple[str, str],
                                                kamailio_md5: KamailioPeer, artifacts: Path) -> None:
    base, token = token_server
    k = kamailio_md5
    context, page, guard = open_page(browser, LAPTOP)
    try:
        page.goto(f"{base}/")
        page.wait_for_selector("#token-box:not([hidden])", timeout=UI_MS)  # the page's lab question got a 401
        page.fill("#sip-host", "127.0.0.1")
        page.fill("#sip-port", str(k.udp_port))
        page.click("#sip-run")
        page.wait_for_selector("#sip-form-error:not([hidden])", timeout=UI_MS)
        assert "API token" in (page.locator("#sip-form-error").text_content() or "")
        assert page.get_attribute("#token-box", "open") is not None
        page.screenshot(path=str(artifacts / "laptop-token-needed.png"), full_page=True)

        page.fill("#api-token", token)
        page.click("#token-use")
        res = run_form(page, "sip", {"host": "127.0.0.1", "port": str(k.udp_port)})
        assert res["success"] is True, res["error"]

        # the softphone: POSTs carry the header, the event socket the subprotocol
        page.click("#tab-phone")
        page.fill("#phone-aor", f"sip:alice@{k.realm}")
        page.fill("#phone-password", k.users["alice"])
        page.fill("#phone-registrar", f"127.0.0.1:{k.udp_port}")
        page.fill("#phone-expires", "60")
        page.click("#phone-register")
        page.wait_for_selector('#phone-reg-state[data-state="registered"]', timeout=UI_MS)
        page.wait_for_function("() => window.skinnysipPhone.state.ws && window.skinnysipPhone.state.ws.readyState === 1",
                               timeout=UI_MS)
        assert page.evaluate("window.skinnysipPhone.state.ws.protocol") == f"skinnysip.bearer.{token}"
        page.click("#phone-unregister")
        page.wait_for_selector('#phone-reg-state[data-state="unregistered"]', timeout=UI_MS)
        with urllib.request.urlopen(urllib.request.Request(f"{base}/api/phones",
                                                           headers={"Authorization": f"Bearer {token}"}),
                                    timeout=10) as resp:
            assert b'"phones":[]' in resp.read().replace(b" ", b"")
    finally:
        context.close()
    # Chromium logs each 401 answer as a console error; nothing else may be there
    assert [e for e in guard.errors if "status of 401" not in e] == []
    assert guard.blocked == []
