"""SIP over WebSocket (RFC 7118) from the browser's side, in headless Chromium:

- the page's softphone over WSS to Kamailio's websocket module (the path field appears for
  ws/wss; the handshake asks for it), with a browser's ``.invalid`` Contact, calling carol (an
  API phone over UDP): confirmed, and carol hears it;
- Chromium's own WebSocket — the client every browser phone (JsSIP, SIP.js) uses — talking
  SIP to ``skinnysip sip listen --transport ws``: the ``sip`` subprotocol agreed, an OPTIONS
  sent as a text message answered 200 with the Via marked ``received``, a message without
  the subprotocol refused.
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sip_peers import KamailioPeer, kamailio
from test_web_softphone import UI_MS, _api, call_state, wait_for

from peertools import free_port, stop_process, wait_tcp

pytestmark = [pytest.mark.peer, pytest.mark.timeout(240)]


@pytest.fixture(scope="module")
def ws_pbx() -> Iterator[KamailioPeer]:
    with kamailio(pbx=True, websocket=True) as peer:
        yield peer


def test_the_page_phone_registers_over_wss_and_calls(page: Any, server: str, ws_pbx: KamailioPeer) -> None:
    pbx = ws_pbx
    carol = _api(server, "POST", "/api/phones", {
        "aor": f"sip:carol@{pbx.realm}", "password": pbx.users["carol"], "registrar": f"127.0.0.1:{pbx.udp_port}",
        "autoAnswer": 100, "expires": 60})
    try:
        page.goto(f"{server}/")
        page.click("#tab-phone")
        page.select_option("#phone-protocol", "sip")
        assert page.locator("#phone-ws-path").is_hidden()
        page.select_option("#phone-transport", "wss")
        assert page.locator("#phone-ws-path").is_visible()
        page.fill("#phone-ws-path", "/from-chromium")
        page.check("#phone-ws-invalid-host")  # as JsSIP registers: Kamailio must route by the WebSocket
        page.fill("#phone-aor", f"sip:alice@{pbx.realm}")
        page.fill("#phone-password", pbx.users["alice"])
        page.fill("#phone-registrar", f"127.0.0.1:{pbx.wss_port}")
        page.fill("#phone-expires", "60")
        page.uncheck("#phone-tls-verify")  # Kamailio's test certificate is self-signed
        page.click("#phone-register")
        page.wait_for_selector('#phone-reg-state[data-state="registered"]', timeout=UI_MS)
        contacts = pbx.contacts("alice")
        assert len(contacts) == 1 and re.search(r"@[0-9a-f]{12}\.invalid;transport=ws$", contacts[0]), contacts
        log = Path(pbx.log_file).read_text(errors="replace")
        assert re.search(r"websocket handshake from \S+ for /from-chromium", log), log[-2000:]
        page.fill("#phone-target", "carol")
        page.click("#phone-call")
        call_state(page, "confirmed")
        wait_for(lambda: _api(server, "GET", f"/api/phones/{carol['id']}/calls")[-1]["media"]["received"]["packets"]
                 > 50, "carol hearing the page's phone")
        page.click("#phone-hangup")
        page.click("#phone-unregister")
        page.wait_for_selector('#phone-reg-state[data-state="unregistered"]', timeout=UI_MS)
    finally:
        _api(server, "DELETE", f"/api/phones/{carol['id']}")


@pytest.fixture
def ws_listener() -> Iterator[int]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "skinnysip", "sip", "listen", "--transport", "ws", "--port",
                             str(port), "--json"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_tcp("127.0.0.1", port, 20, proc)
        yield port
    finally:
        stop_process(proc)


BROWSER_SIP_CLIENT = """async ([url, protocols, request]) => {
    const ws = new WebSocket(url, protocols);
    const opened = await new Promise((resolve) => {
        ws.onopen = () => resolve(true);
        ws.onerror = () => resolve(false);
        setTimeout(() => resolve(false), 5000);
    });
    if (!opened) return {opened, protocol: ws.protocol, answer: null};
    const answer = await new Promise((resolve) => {
        ws.onmessage = (ev) => resolve(ev.data);
        setTimeout(() => resolve(null), 5000);
        ws.send(request);
    });
    ws.close();
    return {opened, protocol: ws.protocol, answer};
}"""


def test_chromiums_websocket_speaks_sip_to_our_listener(browser: Any, server: str, ws_listener: int) -> None:
    """A page of ours (a loopback origin, so Chromium's local-network checks let it reach
    another loopback port; its Content-Security-Policy, which allows WebSockets to itself only,
    bypassed for this one context) runs a browser phone's first steps by hand."""
    context = browser.new_context(bypass_csp=True)
    try:
        page = context.new_page()
        page.goto(f"{server}/")
        url = f"ws://127.0.0.1:{ws_listener}/"
        request = ("OPTIONS sip:127.0.0.1 SIP/2.0\r\n"
                   "Via: SIP/2.0/WS df7jal23ls0d.invalid;branch=z9hG4bK-chromium-1\r\n"
                   "Max-Forwards: 70\r\nFrom: <sip:browser@df7jal23ls0d.invalid>;tag=chromium\r\n"
                   "To: <sip:127.0.0.1>\r\nCall-ID: chromium-ws-1\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n")
        result = page.evaluate(BROWSER_SIP_CLIENT, [url, ["sip"], request])
        assert result["opened"] and result["protocol"] == "sip", result
        answer = result["answer"]
        assert answer is not None and answer.startswith("SIP/2.0 200 OK\r\n"), result
        assert "branch=z9hG4bK-chromium-1;received=127.0.0.1" in answer and "Call-ID: chromium-ws-1" in answer, answer
        # without the subprotocol the handshake is refused (400): the browser never opens the socket
        refused = page.evaluate(BROWSER_SIP_CLIENT, [url, [], request])
        assert refused["opened"] is False, refused
    finally:
        context.close()
