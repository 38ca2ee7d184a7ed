"""The lab panel of the web page in headless Chromium: the newcomer test.

A fresh ``skinnysip serve --lab`` (free ports through ``--lab-config``), the page: the lab
panel shows the lab's addresses, demo accounts and extensions; "use demo account 1001" fills
the softphone, which registers, calls 600 (echo) and hears its own tone come back (the page's
AnalyserNode reports the frequency), hangs up — all within 60 s of wall time from the server's
start. Then the lab's own record of the call (``GET /api/lab/calls``) is drawn as a ladder.
Without a lab (``/api/lab`` 404) the panel stays hidden.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from webtools import heard_tones, mostly

from peertools import free_port

pytestmark = [pytest.mark.peer, pytest.mark.timeout(180)]

TONE = 700.0  # what the demo account sends; the echo service sends it back
NEWCOMER_SECONDS = 60.0
UI_MS = 30_000


def _wait_health(base: str, deadline: float, proc: subprocess.Popen[bytes] | None = None) -> None:
    while True:
        if proc is not None and proc.poll() is not None:
            out = proc.stdout.read().decode(errors="replace") if proc.stdout else ""
            raise RuntimeError(f"skinnysip serve exited {proc.returncode}:\n{out[-3000:]}")
        try:
            with urllib.request.urlopen(f"{base}/api/health", timeout=2) as resp:
                if resp.status == 200:
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"{base} did not answer /api/health")
        time.sleep(0.1)


@pytest.fixture
def serve_lab(tmp_path: Path) -> Iterator[tuple[str, float]]:
    """A fresh ``skinnysip serve --lab`` on free ports (the lab's through ``--lab-config``,
    loopback only): (base URL, the monotonic time it was started)."""
    sip, sips, sccp, http = free_port(), free_port(), free_port(), free_port()
    config = tmp_path / "lab.toml"
    config.write_text(f'hosts = ["127.0.0.1"]\n\n[ports]\nsip = {sip}\nsips = {sips}\nsccp = {sccp}\n')
    started = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-m", "skinnysip", "serve", "--host", "127.0.0.1", "--port", str(http),
                             "--lab", "--lab-config", str(config)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{http}"
    try:
        _wait_health(base, started + 30, proc)
        yield base, started
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


def newcomer(page: Any, base: str, artifacts: Path, prefix: str) -> dict[str, Any]:
    """The newcomer's path through the page; returns what the lab panel showed."""
    page.goto(f"{base}/")
    page.wait_for_selector("#tab-lab:not([hidden])", timeout=UI_MS)
    page.click("#tab-lab")
    page.wait_for_selector('#lab-info button.use-account[data-user="1001"]')
    shown = {
        "udp": page.locator('#lab-info tr[data-key="sip-udp"] td').text_content(),
        "sccp": page.locator('#lab-info tr[data-key="sccp"] td').text_content(),
        "extensions": page.locator("#lab-info table.lab-extensions tbody tr").all_text_contents(),
    }
    page.screenshot(path=str(artifacts / f"{prefix}-lab-panel.png"), full_page=True)
    page.click('#lab-info button.use-account[data-user="1001"]')
    assert page.get_attribute("#tab-phone", "aria-selected") == "true"
    assert page.input_value("#phone-aor").startswith("sip:1001@")
    page.fill("#phone-source", f"tone:{TONE:.0f}")
    page.click("#phone-register")
    page.wait_for_selector('#phone-reg-state[data-state="registered"]', timeout=UI_MS)
    page.fill("#phone-target", "600")
    page.click("#phone-call")
    page.wait_for_selector('#phone-call-state[data-state="confirmed"]', timeout=UI_MS)
    page.click("#phone-listen")
    page.wait_for_selector('#phone-listen[aria-pressed="true"]', timeout=UI_MS)
    shown["heard"] = heard_tones(page)
    page.screenshot(path=str(artifacts / f"{prefix}-lab-echo-call.png"), full_page=True)
    page.click("#phone-hangup")
    page.wait_for_selector('#phone-call-state[data-state="terminated"]', timeout=UI_MS)
    return shown


def echoed(heard: list[int]) -> bool:
    return mostly(heard, TONE)


def test_newcomer_serve_lab_register_call_echo_hear_it(page: Any, serve_lab: tuple[str, float],
                                                       artifacts: Path) -> None:
    """From a fresh ``skinnysip serve --lab`` to hearing the echo and hanging up in < 60 s."""
    base, started = serve_lab
    shown = newcomer(page, base, artifacts, "laptop")
    took = time.monotonic() - started
    assert echoed(shown["heard"]), f"the page heard {shown['heard']}, not the echoed {TONE} Hz"
    assert took < NEWCOMER_SECONDS, f"the newcomer's path took {took:.1f} s"
    with urllib.request.urlopen(f"{base}/api/lab", timeout=10) as resp:
        info = json.load(resp)
    assert shown["udp"] == info["sip"]["udp"] and shown["sccp"] == info["sccp"]
    assert any(row.startswith("600") and "echo" in row for row in shown["extensions"])

    # the lab's own record of the call, drawn as a ladder: INVITE … BYE through the lab proxy
    page.click("#tab-lab")
    page.click("#lab-refresh")
    page.wait_for_selector("#lab-calls section.lab-call svg.ladder-svg")
    with urllib.request.urlopen(f"{base}/api/lab/calls", timeout=10) as resp:
        calls = json.load(resp)["calls"]
    call = next(c for c in calls if "600" in c["to"])
    box = page.locator(f'#lab-calls section.lab-call[data-call-id="{call["callId"]}"]')
    labels = box.locator("g.msg text.label").all_text_contents()
    assert labels[0].startswith("INVITE sip:600@") and any(label.startswith("BYE") for label in labels)
    assert len(labels) == len(call["messages"])
    page.screenshot(path=str(artifacts / "laptop-lab-calls.png"), full_page=True)
    # an SCCP device of the lab fills the softphone's SCCP form with the call manager's address
    page.click("#tab-lab")
    page.click('#lab-info button.use-device:has-text("SEP001122334455")')
    assert page.input_value("#phone-protocol") == "sccp" and page.locator("#phone-host").is_visible()
    host, port = info["sccp"].rsplit(":", 1)
    assert page.input_value("#phone-host") == host and page.input_value("#phone-port") == port
    assert page.input_value("#phone-device-name") == "SEP001122334455"


def test_lab_panel_is_hidden_without_a_lab(page: Any, server: str) -> None:
    page.goto(f"{server}/")
    page.wait_for_load_state("networkidle")
    assert page.locator("#tab-lab").is_hidden() and page.locator("#panel-lab").is_hidden()


def test_the_voicemail_lamp_on_the_page(page: Any, serve_lab: tuple[str, float], artifacts: Path) -> None:
    """The softphone's "Message waiting" box subscribes to the lab's mailbox (RFC 3842): the lamp
    says no new messages; 1002 (a phone of the API) leaves a message with ``*1001`` and the lamp
    lights with "1 new"; the page's phone calls 605, hears it, and the lamp goes out."""
    from test_web_softphone import _api, wait_for

    base, _ = serve_lab
    info = _api(base, "GET", "/api/lab")
    page.goto(f"{base}/")
    page.wait_for_selector("#tab-lab:not([hidden])", timeout=UI_MS)
    page.click("#tab-lab")
    page.click('#lab-info button.use-account[data-user="1001"]')
    page.check("#phone-mwi")
    page.click("#phone-register")
    page.wait_for_selector('#phone-reg-state[data-state="registered"]', timeout=UI_MS)
    page.wait_for_selector('#phone-mwi-lamp[data-waiting="no"]', timeout=UI_MS)
    caller = _api(base, "POST", "/api/phones", {"aor": f"sip:1002@{info['domain']}", "password": "demo1002",
                                                "registrar": info["sip"]["udp"], "register": False})
    try:
        call = _api(base, "POST", f"/api/phones/{caller['id']}/calls", {"target": "*1001"})
        wait_for(lambda: _api(base, "GET", f"/api/phones/{caller['id']}/calls/{call['id']}")["state"] == "confirmed",
                 "the deposit call")
        time.sleep(1.5)
        _api(base, "POST", f"/api/phones/{caller['id']}/calls/{call['id']}/hangup")
    finally:
        _api(base, "DELETE", f"/api/phones/{caller['id']}")
    page.wait_for_selector('#phone-mwi-lamp[data-waiting="yes"]', timeout=UI_MS)
    assert "1 new" in (page.locator("#phone-mwi-lamp").text_content() or "")
    page.screenshot(path=str(artifacts / "laptop-voicemail-lamp.png"), full_page=True)
    page.fill("#phone-target", "605")
    page.click("#phone-call")
    page.wait_for_selector('#phone-mwi-lamp[data-waiting="no"]', timeout=UI_MS)
    assert "1 old" in (page.locator("#phone-mwi-lamp").text_content() or "")
