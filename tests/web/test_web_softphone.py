"""The softphone panel of the web page in headless Chromium: a phone of ``skinnysip serve``
registered to Kamailio (PBX mode) and calling baresip, all driven through the page.

- the panel registers (live state from the event WebSocket), calls baresip (auto-answer), the
  call goes to confirmed and the quality figures rise, the dial pad's DTMF reaches baresip (its
  CALL_DTMF_START events), hold/resume, mute/unmute, the call's ladder and pcapng with its RTP (read by tshark), hang up;
  baresip calls the page's phone, the page rings, answer, hang up; MESSAGEs both ways;
  unregister;
- audio: Chromium's fake microphone (a 1000 Hz WAV) reaches baresip's recording through the
  call's audio WebSocket, and baresip's 440 Hz tone is heard by the page's AnalyserNode.

Screenshots of the panel go to the artifacts directory.
"""

from __future__ import annotations

import json
import subprocess
import time
import urllib.request
import wave
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from baresip_peer import Baresip, baresip
from presence_peer import kamailio_presence, presence_baresip
from sip_peers import KamailioPeer, kamailio
from webtools import (
    CHROMIUM,
    CHROMIUM_ARGS,
    LAPTOP,
    NO_DNS,
    PHONE,
    LoopThread,
    heard_tones,
    mostly,
    open_page,
    tshark_rows,
    wav_frames,
)

pytestmark = [pytest.mark.peer, pytest.mark.timeout(240)]

THEIR_TONE = 440.0  # what baresip sends
MIC_TONE = 1000.0   # what Chromium's fake microphone says
UI_MS = 30_000
OTHER_HOST = "skinnysip-web.test"  # mapped to 127.0.0.1 inside mic_browser only


@pytest.fixture(scope="module")
def pbx() -> Iterator[KamailioPeer]:
    with kamailio(pbx=True, flow_timer=120) as peer:  # SIP outbound and GRUUs when a phone asks
        yield peer


@pytest.fixture(scope="module")
def peers_loop() -> Iterator[LoopThread]:
    loop = LoopThread()
    try:
        yield loop
    finally:
        loop.close()


@pytest.fixture
def bob(pbx: KamailioPeer, peers_loop: LoopThread) -> Iterator[Baresip]:
    """baresip as bob (auto-answer, 440 Hz), its current contact alice (for ``message``)."""
    manager = baresip("bob", pbx.users["bob"], f"127.0.0.1:{pbx.udp_port}", tone_hz=THEIR_TONE,
                      contact=f"sip:alice@{pbx.realm}")
    peer = peers_loop.run(manager.__aenter__())
    try:
        deadline = time.monotonic() + 15
        while not pbx.contacts("bob"):
            assert time.monotonic() < deadline, "baresip never registered"
            time.sleep(0.1)
        yield peer
    finally:
        peers_loop.run(manager.__aexit__(None, None, None))


def register(page: Any, pbx: KamailioPeer, source: str = "tone:440", transport: str = "udp") -> None:
    page.click("#tab-phone")
    page.select_option("#phone-protocol", "sip")
    page.fill("#phone-aor", f"sip:alice@{pbx.realm}")
    page.fill("#phone-password", pbx.users["alice"])
    page.fill("#phone-registrar", f"127.0.0.1:{pbx.port(transport)}")
    page.select_option("#phone-transport", transport)
    page.fill("#phone-source", source)
    page.fill("#phone-expires", "60")
    page.click("#phone-register")
    page.wait_for_selector('#phone-reg-state[data-state="registered"]', timeout=UI_MS)


def call_state(page: Any, state: str) -> None:
    try:
        page.wait_for_selector(f'#phone-call-state[data-state="{state}"]', timeout=UI_MS)
    except Exception as exc:  # say what the page showed instead
        shown = page.evaluate("""() => ({state: document.getElementById('phone-call-state').textContent,
            errors: [...document.querySelectorAll('.form-error, .field-error')].map(e => e.textContent).join(' | '),
            log: [...document.querySelectorAll('#phone-log li')].map(e => e.textContent)})""")
        raise AssertionError(f"the call never became {state}: {shown}") from exc


def quality(page: Any, key: str) -> str:
    return page.locator(f'#phone-quality tr[data-key="{key}"] td').text_content() or ""


def baresip_digits(peer: Baresip) -> list[str]:
    return [str(e.get("param")) for e in peer.events if e.get("type") == "CALL_DTMF_START"]


def wait_for(check: Any, what: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"no {what} within {timeout} s"
        time.sleep(0.1)


def test_softphone_calls_baresip_and_takes_its_call(page: Any, server: str, pbx: KamailioPeer, bob: Baresip,
                                                   peers_loop: LoopThread, artifacts: Path) -> None:
    page.goto(f"{server}/")
    register(page, pbx)
    assert pbx.contacts("alice"), "Kamailio has no binding for alice"
    page.screenshot(path=str(artifacts / "laptop-softphone-registered.png"), full_page=True)
    # a lost event stream is opened again (and the phone's state taken once); the rest of this
    # test runs on the new one
    first_socket = page.evaluate_handle("() => window.skinnysipPhone.state.ws")
    page.evaluate("() => window.skinnysipPhone.state.ws.close(4000, 'test: connection lost')")
    page.wait_for_function("(old) => { const ws = window.skinnysipPhone.state.ws;"
                           " return ws && ws !== old && ws.readyState === 1; }", arg=first_socket, timeout=UI_MS)

    # call baresip: confirmed, then the quality figures rise with every media event
    page.fill("#phone-target", "bob")
    page.click("#phone-call")
    call_state(page, "confirmed")
    peers_loop.run(bob.wait_event("CALL_ESTABLISHED"))
    page.wait_for_function("() => Number(document.querySelector('#phone-quality tr[data-key=packetsReceived] td')"
                           "?.textContent) > 20", timeout=UI_MS)
    first = int(quality(page, "packetsReceived"))
    page.wait_for_function(f"() => Number(document.querySelector('#phone-quality tr[data-key=packetsReceived] td')"
                           f"?.textContent) > {first + 20}", timeout=UI_MS)
    assert int(quality(page, "packetsSent")) > 20
    assert quality(page, "codec").startswith("PCM")
    assert float(quality(page, "mos")) > 3.5

    # the dial pad: each key is one RFC 4733 event at baresip
    for key in "15#":
        page.click(f'#phone-dialpad button[data-digit="{key}"]')
        page.wait_for_selector(f'#phone-dtmf-sent:has-text("sent {key}")')
    wait_for(lambda: baresip_digits(bob) == ["1", "5", "#"], f"digits 1 5 # at baresip (got {baresip_digits(bob)})")

    # hold and resume: the state says so and the buttons follow
    page.click("#phone-hold")
    page.wait_for_selector('#phone-call-state:has-text("on hold")', timeout=UI_MS)
    assert page.is_disabled("#phone-hold") and page.is_enabled("#phone-resume")
    page.click("#phone-resume")
    page.wait_for_function("() => !document.getElementById('phone-call-state').textContent.includes('hold')",
                           timeout=UI_MS)
    # mute and unmute: a toggle (silence sent, no re-INVITE); the state and the button say so
    page.click("#phone-mute")
    page.wait_for_selector('#phone-call-state:has-text("(muted)")', timeout=UI_MS)
    assert page.inner_text("#phone-mute") == "Unmute" and page.get_attribute("#phone-mute", "aria-pressed") == "true"
    page.click("#phone-mute")
    page.wait_for_function("() => !document.getElementById('phone-call-state').textContent.includes('muted')",
                           timeout=UI_MS)
    assert page.inner_text("#phone-mute") == "Mute"
    page.screenshot(path=str(artifacts / "laptop-softphone-in-call.png"), full_page=True)

    # the call's ladder: INVITE (407, INVITE again), 200, ACK and two re-INVITEs, with an RTP band
    page.wait_for_function("() => document.querySelectorAll('#phone-call-ladder g.msg').length >= 10", timeout=UI_MS)
    labels = page.locator("#phone-call-ladder g.msg text.label").all_text_contents()
    assert labels[0].startswith("INVITE sip:bob@") and "407 Proxy Authentication Required (udp)" in labels
    assert sum(label.startswith("INVITE") for label in labels) >= 4  # the call, its retry, hold, resume
    assert "RTP PCM" in (page.locator("#phone-call-ladder text.rtp-label").text_content() or "")

    # hang up from the page: baresip sees the call close
    page.click("#phone-hangup")
    call_state(page, "terminated")
    peers_loop.run(bob.wait_event("CALL_CLOSED"))
    page.wait_for_function("() => [...document.querySelectorAll('#phone-call-ladder g.msg text.label')]"
                           ".some(t => t.textContent.startsWith('BYE'))", timeout=UI_MS)
    with page.expect_download() as info:
        page.click("#phone-call-ladder button.download-pcap")
    pcap = artifacts / "softphone-call.pcapng"
    info.value.save_as(pcap)
    methods = [r[0] for r in tshark_rows(pcap, "sip.Method", display_filter="sip.Request-Line")]
    assert methods[0] == "INVITE" and "ACK" in methods and methods[-1] == "BYE"
    # the call's RTP both ways (and RTCP) are in it, on the ports of the SDP offer and answer
    ours = int(tshark_rows(pcap, "sdp.media.port", display_filter='sip.Method == "INVITE" && sdp')[0][0])
    theirs = int(tshark_rows(pcap, "sdp.media.port", display_filter="sip.Status-Code == 200 && sdp")[0][0])
    media = [f"udp.port=={ours},rtp", f"udp.port=={ours + 1},rtcp"]
    rtp = tshark_rows(pcap, "udp.srcport", "udp.dstport", decode_as=media, display_filter="rtp")
    assert {(int(a), int(b)) for a, b in rtp} == {(ours, theirs), (theirs, ours)}, f"RTP flows {set(map(tuple, rtp))}"
    assert len(rtp) >= 100 and tshark_rows(pcap, "frame.number", decode_as=media, display_filter="rtcp")
    assert tshark_rows(pcap, "frame.number", decode_as=media, display_filter="_ws.malformed") == []

    # baresip calls the page's phone (the page is on another tab): the Softphone tab says it
    # rings, the page answers, then hangs up
    page.click("#tab-sip")
    n = len(bob.events)
    peers_loop.run(bob.command("dial", f"sip:alice@{pbx.realm}"))
    page.wait_for_selector("#tab-phone.ringing", timeout=UI_MS)
    assert page.locator("#tab-phone").text_content() == "Softphone: ringing"
    page.click("#tab-phone")
    page.wait_for_selector("#phone-incoming:not([hidden])", timeout=UI_MS)
    assert "bob" in (page.locator("#phone-incoming-from").text_content() or "")
    page.screenshot(path=str(artifacts / "laptop-softphone-ringing.png"), full_page=True)
    page.click("#phone-answer")
    call_state(page, "confirmed")
    peers_loop.run(bob.wait_event("CALL_ESTABLISHED", after=n))
    assert page.locator("#phone-incoming").is_hidden()
    assert page.locator("#tab-phone").text_content() == "Softphone"
    page.click("#phone-hangup")
    call_state(page, "terminated")
    peers_loop.run(bob.wait_event("CALL_CLOSED", after=n))
    assert page.locator("#phone-calls tbody tr").count() == 2

    # and once more: the page rejects it (486), baresip's call closes with that answer
    n = len(bob.events)
    peers_loop.run(bob.command("dial", f"sip:alice@{pbx.realm}"))
    page.wait_for_selector("#phone-incoming:not([hidden])", timeout=UI_MS)
    page.click("#phone-reject")
    call_state(page, "terminated")
    closed = peers_loop.run(bob.wait_event("CALL_CLOSED", after=n))
    assert "486" in str(closed.get("param")), closed
    assert page.locator("#phone-incoming").is_hidden()

    # instant messages both ways
    peers_loop.run(bob.command("message", "hi alice"))
    page.wait_for_selector('#phone-messages li[data-direction="in"]:has-text("hi alice")', timeout=UI_MS)
    page.fill("#phone-message-target", "bob")
    page.fill("#phone-message-text", "hello from the page")
    page.click("#phone-message-send")
    page.wait_for_selector('#phone-messages li[data-direction="out"]:has-text("hello from the page")', timeout=UI_MS)
    wait_for(lambda: "hello from the page" in bob.log.read_text(errors="replace"), "the message in baresip's log")
    page.screenshot(path=str(artifacts / "laptop-softphone-messages.png"), full_page=True)

    # unregister: Kamailio forgets alice
    page.click("#phone-unregister")
    page.wait_for_selector('#phone-reg-state[data-state="unregistered"]', timeout=UI_MS)
    wait_for(lambda: not pbx.contacts("alice"), "alice's binding removed")


def test_softphone_errors_sit_next_to_their_fields(phone_page: Any, server: str, pbx: KamailioPeer,
                                                   artifacts: Path) -> None:
    page = phone_page
    page.goto(f"{server}/")
    # keyboard only: the tab list's arrows reach the Softphone tab, Tab walks into its form,
    # Enter in a field submits it
    page.focus("#tab-sip")
    page.keyboard.press("ArrowRight")
    page.keyboard.press("ArrowRight")
    assert page.get_attribute("#tab-phone", "aria-selected") == "true"
    order = []
    for _ in range(4):
        page.keyboard.press("Tab")
        order.append(page.evaluate("document.activeElement.id || document.activeElement.textContent"))
    assert order == ["API docs", "ReDoc", "phone-protocol", "phone-aor"]
    page.keyboard.type("alice")  # not a URI
    page.keyboard.press("Tab")
    page.keyboard.press("Tab")
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.id") == "phone-registrar"
    page.keyboard.type("127.0.0.1:99999")
    page.keyboard.press("Enter")
    page.wait_for_selector("#phone-aor-error")
    assert page.evaluate("document.activeElement.id") == "phone-aor"  # the first field in error
    assert "not a valid SIP URI" in (page.locator("#phone-aor-error").text_content() or "")
    assert "host[:port]" in (page.locator("#phone-registrar-error").text_content() or "")
    assert page.get_attribute("#phone-aor", "aria-invalid") == "true"
    # a phone-sized screen: nothing but the ladders scrolls sideways, every control has a label
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    unlabelled = page.evaluate("""() => [...document.querySelectorAll('#panel-phone input, #panel-phone select')]
        .filter(i => !i.labels || i.labels.length === 0).map(i => i.id)""")
    assert unlabelled == []
    page.screenshot(path=str(artifacts / "phone-softphone-errors.png"), full_page=True)
    # the SCCP account form: its own fields, the SCCP tester's device types
    page.select_option("#phone-protocol", "sccp")
    assert page.locator("#phone-aor").is_hidden() and page.locator("#phone-host").is_visible()
    assert page.locator("#phone-device-type option").count() == page.locator("#sccp-device-type option").count()


# ------------------------------------------------------------------ audio in the browser

def _tone_wav(path: Path, freq: float, seconds: float = 20.0, rate: int = 48000) -> Path:
    t = np.arange(int(seconds * rate)) / rate
    samples = (0.5 * 32767 * np.sin(2 * np.pi * freq * t)).astype(np.int16)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(samples.tobytes())
    return path


@pytest.fixture(scope="module")
def mic_browser(browser: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A second Chromium (same Playwright) whose microphone is a 1000 Hz tone (fake capture
    device, no permission prompt) and which resolves OTHER_HOST to 127.0.0.1."""
    wav = _tone_wav(tmp_path_factory.mktemp("mic") / "mic.wav", MIC_TONE)
    args = [*(a for a in CHROMIUM_ARGS if not a.startswith("--host-resolver-rules=")),
            "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream",
            f"--use-file-for-fake-audio-capture={wav}", "--autoplay-policy=no-user-gesture-required",
            f"--host-resolver-rules=MAP {OTHER_HOST} 127.0.0.1, {NO_DNS}"]
    b = browser.browser_type.launch(executable_path=CHROMIUM, args=args, timeout=60_000)
    try:
        yield b
    finally:
        b.close()


def test_listen_and_speak_through_the_browser(mic_browser: Any, server: str, pbx: KamailioPeer, bob: Baresip,
                                              peers_loop: LoopThread, artifacts: Path) -> None:
    context, page, guard = open_page(mic_browser, LAPTOP)
    try:
        context.grant_permissions(["microphone"], origin=server)
        page.goto(f"{server}/")
        register(page, pbx, source="silence")  # before the microphone the call sends silence
        page.fill("#phone-target", "bob")
        page.click("#phone-call")
        call_state(page, "confirmed")
        peers_loop.run(bob.wait_event("CALL_ESTABLISHED"))

        # listen: the page's AnalyserNode hears baresip's tone
        page.click("#phone-listen")
        page.wait_for_selector('#phone-listen[aria-pressed="true"]', timeout=UI_MS)
        heard = heard_tones(page, count=40)
        assert mostly(heard, THEIR_TONE, least=30), f"the page heard {heard}"
        page.wait_for_selector("#phone-hearing:has-text(\"hearing 44\")", timeout=UI_MS)  # shown too

        # speak: the fake microphone's 1000 Hz replaces the silence baresip was getting
        page.click("#phone-mic")
        page.wait_for_selector('#phone-mic[aria-pressed="true"]', timeout=UI_MS)
        page.wait_for_function("() => /mic: sent (\\d+)/.test(document.getElementById('phone-audio-status').textContent)"
                               " && Number(/mic: sent (\\d+)/.exec(document.getElementById('phone-audio-status')"
                               ".textContent)[1]) > 150", timeout=UI_MS)
        page.wait_for_timeout(1000)
        page.screenshot(path=str(artifacts / "laptop-softphone-audio.png"), full_page=True)

        # the socket's edges: its hello names the format; 0.5 s+ in one message is refused
        # (1009); an unknown call is 4404
        edges = page.evaluate("""async () => {
            const st = window.skinnysipPhone.state;
            const open = (path, send) => new Promise((resolve) => {
                const ws = new WebSocket(`ws://${location.host}${path}`);
                const seen = [];
                ws.onopen = () => { if (send) ws.send(new Int16Array(send)); };
                ws.onmessage = (ev) => { if (typeof ev.data === "string") seen.push(JSON.parse(ev.data)); };
                ws.onclose = (ev) => resolve({code: ev.code, hello: seen[0] || null});
                setTimeout(() => { ws.close(); resolve({code: "timeout"}); }, 10000);
            });
            return {
                big: await open(`/api/phones/${st.id}/calls/${st.selected}/audio`, 4500),
                unknown: await open(`/api/phones/${st.id}/calls/999999/audio`, 0),
            };
        }""")
        assert edges["big"]["code"] == 1009, edges
        assert edges["big"]["hello"] == {"event": "audio", "call": edges["big"]["hello"]["call"], "format": "s16le",
                                         "rate": 8000, "channels": 1}
        assert edges["unknown"]["code"] == 4404, edges
        # microphone off: the call sends the account's source (silence) again, still listening
        page.click("#phone-mic")
        page.wait_for_selector('#phone-mic[aria-pressed="false"]', timeout=UI_MS)
        assert page.get_attribute("#phone-listen", "aria-pressed") == "true"
        page.wait_for_timeout(2000)
        page.click("#phone-hangup")
        call_state(page, "terminated")
        peers_loop.run(bob.wait_event("CALL_CLOSED"))
        page.click("#phone-unregister")
        page.wait_for_selector('#phone-reg-state[data-state="unregistered"]', timeout=UI_MS)
        guard.check()
    finally:
        context.close()
    time.sleep(0.5)  # baresip finishes its WAV files on CALL_CLOSED
    freqs, _ = wav_frames(bob.recordings()["dec"])
    voiced = freqs[freqs > 0]
    assert len(voiced) >= 100, f"baresip heard only {len(voiced)} non-silent 20 ms frames"
    share = float(np.mean(np.abs(voiced - MIC_TONE) < 25))
    assert share >= 0.9, f"{share:.0%} of baresip's non-silent frames are the microphone's {MIC_TONE:.0f} Hz"
    # the last second before the hang-up (after "Microphone off") is silence again
    tail = freqs[-60:-10]
    assert float(np.mean(tail == 0)) >= 0.9, f"after the microphone went off baresip heard {tail}"


def test_microphone_is_refused_off_localhost(mic_browser: Any, server: str, artifacts: Path) -> None:
    """Only a secure page gets a microphone: the same server under another host name (mapped to
    127.0.0.1 by Chromium's resolver rules) shows the button off and says why; Listen stays."""
    port = server.rsplit(":", 1)[1]
    context = mic_browser.new_context(viewport=PHONE)
    try:
        page = context.new_page()
        page.goto(f"http://{OTHER_HOST}:{port}/#phone")
        assert page.evaluate("window.isSecureContext") is False
        assert page.is_disabled("#phone-mic")
        hint = page.locator("#phone-mic-hint").text_content() or ""
        assert f"The microphone is off on {OTHER_HOST}" in hint and "127.0.0.1" in hint
        page.screenshot(path=str(artifacts / "phone-softphone-no-mic.png"), full_page=True)
    finally:
        context.close()


def test_sccp_softphone_calls_the_lab_echo_and_hears_it(page: Any, server: str, lab_cm: Any,
                                                        artifacts: Path) -> None:
    """The SCCP account form: a station registers to the lab call manager, dials 600 (echo),
    the call's SCCP states and ladder show, and Listen hears the station's own tone back."""
    page.goto(f"{server}/#phone")
    page.select_option("#phone-protocol", "sccp")
    page.fill("#phone-host", "127.0.0.1")
    page.fill("#phone-port", str(lab_cm.port))
    page.fill("#phone-device-name", "SEP001122334455")
    page.fill("#phone-source", "tone:800")
    page.click("#phone-register")
    page.wait_for_selector('#phone-reg-state[data-state="registered"]', timeout=UI_MS)
    page.fill("#phone-target", "600")
    page.click("#phone-call")
    call_state(page, "confirmed")
    page.click("#phone-listen")
    page.wait_for_selector('#phone-listen[aria-pressed="true"]', timeout=UI_MS)
    heard = heard_tones(page)
    assert mostly(heard, 800.0), f"the page heard {heard}"
    # hold and resume: the call manager closes the media and opens new streams; the audio
    # socket follows the call onto them and the echo is heard again
    page.click("#phone-hold")
    page.wait_for_selector('#phone-call-state:has-text("on hold")', timeout=UI_MS)
    page.click("#phone-resume")
    page.wait_for_function("() => !document.getElementById('phone-call-state').textContent.includes('hold')",
                           timeout=UI_MS)
    page.wait_for_timeout(500)
    heard = heard_tones(page)
    assert mostly(heard, 800.0), f"after resume the page heard {heard}"
    assert page.get_attribute("#phone-listen", "aria-pressed") == "true"
    page.wait_for_function("() => Number(document.querySelector('#phone-quality tr[data-key=packetsReceived] td')"
                           "?.textContent) > 20", timeout=UI_MS)
    # the SCCP ladder: decoded station messages, the call manager's CallState names in the log
    labels = page.locator("#phone-call-ladder g.msg text.label").all_text_contents()
    assert any(label.startswith("OffHook") for label in labels) and any("StartMediaTransmission" in label
                                                                        for label in labels), labels
    assert "[Connected]" in " ".join(page.locator("#phone-log li").all_text_contents())
    page.set_viewport_size(PHONE)
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    page.screenshot(path=str(artifacts / "phone-softphone-sccp-call.png"), full_page=True)
    page.set_viewport_size(LAPTOP)
    page.click("#phone-hangup")
    call_state(page, "terminated")
    page.click("#phone-unregister")
    page.wait_for_selector('#phone-reg-state[data-state="unregistered"]', timeout=UI_MS)


def _api(server: str, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(f"{server}{path}", data=data, method=method,
                                     headers={"Content-Type": "application/json"} if data else {})
    with urllib.request.urlopen(request, timeout=60) as resp:
        return json.load(resp)  # type: ignore[no-any-return]


def test_blind_transfer_from_the_page(page: Any, server: str, pbx: KamailioPeer, bob: Baresip,
                                      peers_loop: LoopThread, artifacts: Path) -> None:
    """The page's alice calls carol (another phone of the same server, auto-answer) and
    transfers her to bob (baresip) with the Transfer form: REFER, carol calls bob, alice's call
    ends as transferred."""
    carol = _api(server, "POST", "/api/phones", {
        "aor": f"sip:carol@{pbx.realm}", "password": pbx.users["carol"], "registrar": f"127.0.0.1:{pbx.udp_port}",
        "autoAnswer": 100, "expires": 60})
    try:
        page.goto(f"{server}/")
        register(page, pbx)
        page.fill("#phone-target", "carol")
        page.click("#phone-call")
        call_state(page, "confirmed")
        page.fill("#phone-transfer-target", "bob")
        page.click("#phone-transfer-go")
        call_state(page, "terminated")
        assert "transferred" in (page.locator("#phone-call-reason").text_content() or "")
        established = peers_loop.run(bob.wait_event("CALL_ESTABLISHED", 15))
        assert "carol" in str(established.get("peeruri"))
        page.wait_for_function("() => [...document.querySelectorAll('#phone-call-ladder g.msg text.label')]"
                               ".some(t => t.textContent.startsWith('REFER'))", timeout=UI_MS)
        page.screenshot(path=str(artifacts / "laptop-softphone-transferred.png"), full_page=True)
        calls = _api(server, "GET", f"/api/phones/{carol['id']}/calls")
        assert any("bob" in c["remote"] and c["state"] == "confirmed" for c in calls), calls
        page.click("#phone-unregister")
        page.wait_for_selector('#phone-reg-state[data-state="unregistered"]', timeout=UI_MS)
    finally:
        _api(server, "DELETE", f"/api/phones/{carol['id']}")


def call_carol_after_a_field_error(page: Any, server: str, pbx: KamailioPeer, field: str, bad: str, says: str,
                                   good: str, before: Any = None) -> tuple[str, int]:
    """On the phone tab: ``bad`` in the ``field`` input is refused next to it (its error text
    has ``says``); with ``good`` instead alice registers and calls carol, connected. The page's
    phone id and call id. ``before``: more form filling first."""
    page.goto(f"{server}/")
    page.click("#tab-phone")
    if before is not None:
        before()
    page.fill(f"#{field}", bad)
    page.fill("#phone-aor", f"sip:alice@{pbx.realm}")
    page.click("#phone-register")
    page.wait_for_selector(f"#{field}-error", timeout=UI_MS)
    assert says in (page.locator(f"#{field}-error").text_content() or "")
    page.fill(f"#{field}", good)
    register(page, pbx)
    page.fill("#phone-target", "carol")
    page.click("#phone-call")
    call_state(page, "confirmed")
    return (page.evaluate("() => window.skinnysipPhone.state.id"),
            page.evaluate("() => window.skinnysipPhone.state.selected"))


def test_outbound_and_gruu_chosen_on_the_page(page: Any, server: str, pbx: KamailioPeer) -> None:
    """The two checkboxes make the page's phone register with SIP outbound and ask for GRUUs
    (RFC 5626, RFC 5627): Kamailio agrees, and the registration line shows the Flow-Timer and
    the public GRUU, which Kamailio's location table has under the phone's instance."""
    page.goto(f"{server}/")
    page.click("#tab-phone")
    page.check("#phone-outbound")
    page.check("#phone-gruu")
    register(page, pbx, transport="tcp")
    reason = page.locator("#phone-reg-reason").text_content() or ""
    assert "outbound, Flow-Timer 120" in reason and f"GRUU sip:alice@{pbx.realm};gr=urn:uuid:" in reason, reason
    phone_id = page.evaluate("() => window.skinnysipPhone.state.id")
    registration = _api(server, "GET", f"/api/phones/{phone_id}")["registration"]
    instance = registration["gruu"].split(";gr=", 1)[1]
    out = subprocess.run(["kamcmd", "-s", pbx.ctl_socket, "ul.lookup", "location", f"alice@{pbx.realm}"],
                         capture_output=True, text=True, timeout=10).stdout
    assert f"Instance: <{instance}>" in out and "Reg-Id: 1" in out, out
    page.click("#phone-unregister")
    page.wait_for_selector('#phone-reg-state[data-state="unregistered"]', timeout=UI_MS)
    page.uncheck("#phone-outbound")
    page.uncheck("#phone-gruu")


def test_codecs_chosen_on_the_page(page: Any, server: str, pbx: KamailioPeer) -> None:
    """The Codecs field: an unknown name is an error next to it; "PCMA" makes the page's phone
    offer PCMA alone, so its call to carol (another phone of the server, every codec) runs PCMA."""
    carol = _api(server, "POST", "/api/phones", {
        "aor": f"sip:carol@{pbx.realm}", "password": pbx.users["carol"], "registrar": f"127.0.0.1:{pbx.udp_port}",
        "autoAnswer": 100, "expires": 60})
    try:
        phone_id, call_id = call_carol_after_a_field_error(page, server, pbx, "phone-codecs", "PCMA, MP3", "PCMU",
                                                           "PCMA")
        wait_for(lambda: (_api(server, "GET", f"/api/phones/{phone_id}/calls/{call_id}").get("media") or {})
                 .get("codec") == "PCMA", "PCMA on the page's call")
        theirs = _api(server, "GET", f"/api/phones/{carol['id']}/calls")
        assert theirs and theirs[-1]["media"]["codec"] == "PCMA", theirs
        page.click("#phone-unregister")
        page.wait_for_selector('#phone-reg-state[data-state="unregistered"]', timeout=UI_MS)
    finally:
        _api(server, "DELETE", f"/api/phones/{carol['id']}")


def test_srtp_chosen_on_the_page(page: Any, server: str, pbx: KamailioPeer) -> None:
    """The SRTP fields: a suite the server does not know is an error next to its field;
    mandatory with AEAD_AES_256_GCM alone (RFC 7714) makes the page's phone offer RTP/SAVP with
    that one key, and its call to carol (an API phone with SRTP optional, any suite) is keyed so
    on both sides. (Before, neither the API nor the page could make an SRTP phone.)"""
    carol = _api(server, "POST", "/api/phones", {
        "aor": f"sip:carol@{pbx.realm}", "password": pbx.users["carol"], "registrar": f"127.0.0.1:{pbx.udp_port}",
        "autoAnswer": 100, "expires": 60, "srtp": "optional"})
    try:
        phone_id, call_id = call_carol_after_a_field_error(
            page, server, pbx, "phone-srtp-suites", "AEAD_AES_256_GCM, F8_128_HMAC_SHA1_80", "AEAD_AES_256_GCM",
            "AEAD_AES_256_GCM", before=lambda: page.select_option("#phone-srtp", "mandatory"))
        wait_for(lambda: ((_api(server, "GET", f"/api/phones/{phone_id}/calls/{call_id}").get("media") or {})
                          .get("srtp") or {}).get("suite") == "AEAD_AES_256_GCM", "AES-256-GCM on the page's call")
        theirs = _api(server, "GET", f"/api/phones/{carol['id']}/calls")
        assert theirs and theirs[-1]["media"]["srtp"]["suite"] == "AEAD_AES_256_GCM", theirs
        wait_for(lambda: _api(server, "GET", f"/api/phones/{carol['id']}/calls")[-1]["media"]["received"]["packets"]
                 > 50, "carol hearing the page's phone")
        assert _api(server, "GET", f"/api/phones/{carol['id']}/calls")[-1]["media"]["srtp"]["authFailures"] == 0
        page.click("#phone-unregister")
        page.wait_for_selector('#phone-reg-state[data-state="unregistered"]', timeout=UI_MS)
    finally:
        _api(server, "DELETE", f"/api/phones/{carol['id']}")


def test_dtls_srtp_chosen_on_the_page(page: Any, server: str, pbx: KamailioPeer) -> None:
    """DTLS-SRTP chosen on the page: its phone offers UDP/TLS/RTP/SAVP, carol (an API phone with
    SRTP optional) answers it and opens the association (a=setup:active), both sides key SRTP
    from the handshake, and the page's quality table says so."""
    carol = _api(server, "POST", "/api/phones", {
        "aor": f"sip:carol@{pbx.realm}", "password": pbx.users["carol"], "registrar": f"127.0.0.1:{pbx.udp_port}",
        "autoAnswer": 100, "expires": 60, "srtp": "optional"})
    try:
        page.goto(f"{server}/")
        page.click("#tab-phone")
        page.select_option("#phone-protocol", "sip")
        page.select_option("#phone-srtp", "dtls")
        register(page, pbx)
        page.fill("#phone-target", "carol")
        page.click("#phone-call")
        call_state(page, "confirmed")
        page.wait_for_function(
            "() => (document.querySelector('#phone-quality tr[data-key=security] td') || {}).textContent"
            " === 'SRTP AES_CM_128_HMAC_SHA1_80, DTLS server keys'", timeout=UI_MS)
        theirs = _api(server, "GET", f"/api/phones/{carol['id']}/calls")
        dtls = theirs[-1]["media"]["dtls"]
        assert dtls["rtp"]["role"] == "client" and dtls["rtp"]["error"] is None, dtls
        wait_for(lambda: _api(server, "GET", f"/api/phones/{carol['id']}/calls")[-1]["media"]["received"]["packets"]
                 > 50, "carol hearing the page's phone")
        assert _api(server, "GET", f"/api/phones/{carol['id']}/calls")[-1]["media"]["srtp"]["authFailures"] == 0
        page.click("#phone-unregister")
        page.wait_for_selector('#phone-reg-state[data-state="unregistered"]', timeout=UI_MS)
    finally:
        _api(server, "DELETE", f"/api/phones/{carol['id']}")


def test_follow_a_phone_after_a_reload(page: Any, server: str) -> None:
    """A phone outlives the page: after a reload the panel lists the server's phones and
    follows one (its state, its event stream); Unregister then deletes it."""
    made = _api(server, "POST", "/api/phones", {"aor": "sip:dora@127.0.0.1", "register": False})
    try:
        page.goto(f"{server}/#phone")
        page.wait_for_selector("#phone-existing-box:not([hidden])", timeout=UI_MS)
        page.select_option("#phone-existing", made["id"])
        page.click("#phone-follow")
        page.wait_for_selector('#phone-reg-state[data-state="unregistered"]')
        assert made["id"] in (page.locator("#phone-status").text_content() or "")
        page.wait_for_function("() => window.skinnysipPhone.state.ws && window.skinnysipPhone.state.ws.readyState === 1",
                               timeout=UI_MS)
        page.click("#phone-unregister")
        page.wait_for_selector(f'#phone-status:has-text("Phone {made["id"]} closed")', timeout=UI_MS)
        assert made["id"] not in [p["id"] for p in _api(server, "GET", "/api/phones")["phones"]]
    finally:
        if made["id"] in [p["id"] for p in _api(server, "GET", "/api/phones")["phones"]]:
            _api(server, "DELETE", f"/api/phones/{made['id']}")


def test_attended_transfer_from_the_page(page: Any, server: str, pbx: KamailioPeer, artifacts: Path) -> None:
    """RFC 3891 from the panel: alice (the page) calls carol, holds her, calls bob, then on
    carol's call picks "replace call <bob's>" and transfers: carol's INVITE with Replaces takes
    over alice's call with bob; carol and bob (phones of the same server, auto-answer) are
    connected and alice's two calls end."""
    others = {user: _api(server, "POST", "/api/phones", {
        "aor": f"sip:{user}@{pbx.realm}", "password": pbx.users[user], "registrar": f"127.0.0.1:{pbx.udp_port}",
        "autoAnswer": 100, "expires": 60}) for user in ("carol", "bob")}
    try:
        page.goto(f"{server}/")
        register(page, pbx)
        page.fill("#phone-target", "carol")
        page.click("#phone-call")
        call_state(page, "confirmed")
        to_carol = page.evaluate("window.skinnysipPhone.state.selected")
        page.click("#phone-hold")
        page.wait_for_selector('#phone-call-state:has-text("on hold")', timeout=UI_MS)
        page.fill("#phone-target", "bob")
        page.click("#phone-call")
        # carol's call, still selected until the POST answers, is "confirmed" too (on hold): wait
        # for the page to select the new call before reading its state
        page.wait_for_function("(old) => window.skinnysipPhone.state.selected !== old", arg=to_carol,
                               timeout=UI_MS)
        call_state(page, "confirmed")
        to_bob = page.evaluate("window.skinnysipPhone.state.selected")
        assert to_bob != to_carol
        page.click(f'#phone-calls tr[data-call="{to_carol}"] button.pick')
        page.select_option("#phone-transfer-replaces", str(to_bob))
        page.fill("#phone-transfer-target", "bob")
        page.click("#phone-transfer-go")
        call_state(page, "terminated")
        page.wait_for_selector(f'#phone-calls tr[data-call="{to_bob}"][data-state="terminated"]', timeout=UI_MS)
        wait_for(lambda: any("bob" in c["remote"] and c["state"] == "confirmed"
                             for c in _api(server, "GET", f"/api/phones/{others['carol']['id']}/calls")),
                 "carol connected to bob")
        page.screenshot(path=str(artifacts / "laptop-softphone-attended-transfer.png"), full_page=True)
        page.click("#phone-unregister")
        page.wait_for_selector('#phone-reg-state[data-state="unregistered"]', timeout=UI_MS)
    finally:
        for made in others.values():
            _api(server, "DELETE", f"/api/phones/{made['id']}")


def test_a_busy_lamp_and_presence_on_the_page(page: Any, server: str, peers_loop: LoopThread) -> None:
    """The "Presence and busy lamps" block: the page's phone watches bob's line (RFC 4235) at
    Kamailio's presence server; when carol (baresip) calls bob (baresip) the lamp turns busy,
    and idle again after the hangup. Publishing the page's own presence reaches Kamailio."""
    with kamailio_presence(max_expires=60) as presence:
        bob_manager = presence_baresip(presence, "bob", pubint=0)
        carol_manager = presence_baresip(presence, "carol", pubint=0)
        peers_loop.run(bob_manager.__aenter__())
        try:
            carol = peers_loop.run(carol_manager.__aenter__())
            try:
                page.goto(f"{server}/")
                register(page, presence)  # type: ignore[arg-type]
                page.fill("#phone-watch-target", "bob")
                page.select_option("#phone-watch-event", "dialog")
                page.click("#phone-watch-add")
                lamp = f'#phone-watches li[data-key="dialog {presence.aor("bob")}"]'
                page.wait_for_selector(f'{lamp}[data-state="idle"]', timeout=UI_MS)
                peers_loop.run(carol.command("dial", presence.aor("bob")))
                page.wait_for_selector(f'{lamp}[data-state="busy"]', timeout=UI_MS)
                assert f"with {presence.aor('carol')}" in (page.locator(lamp).text_content() or "")
                peers_loop.run(carol.command("hangup"))
                page.wait_for_selector(f'{lamp}[data-state="idle"]', timeout=UI_MS)
                page.select_option("#phone-presence-basic", "closed")
                page.fill("#phone-presence-note", "on the page")
                page.click("#phone-presence-publish")
                wait_for(lambda: any("<basic>closed</basic>" in p and "on the page" in p
                                     for p in presence.received("PUBLISH")), "our PUBLISH at Kamailio")
                page.click("#phone-unregister")
                page.wait_for_selector('#phone-reg-state[data-state="unregistered"]', timeout=UI_MS)
            finally:
                peers_loop.run(carol_manager.__aexit__(None, None, None))
        finally:
            peers_loop.run(bob_manager.__aexit__(None, None, None))


def test_a_callers_stir_shaken_identity_on_the_page(page: Any, server: str, peers_loop: LoopThread,
                                                    tmp_path: Path) -> None:
    """The page's phone, asked to verify callers' identity (the "STIR/SHAKEN" box: the API's
    ``identityFetch``), is called by baresip through Kamailio, which signs the INVITE (RFC 8224
    authentication service, attest A): the incoming banner and the call say the identity was
    verified, with the numbers it vouches for."""
    from stir_peer import cert_server, kamailio_stir, stir_credentials

    creds = stir_credentials(tmp_path / "sti")
    with cert_server(creds.cert.parent) as site, \
            kamailio_stir(creds, site.url("cert.pem"), check="off", sign=True) as stir:
        page.goto(f"{server}/")
        page.click("#tab-phone")
        page.select_option("#phone-protocol", "sip")
        page.fill("#phone-aor", f"sip:12155550111@{stir.realm}")
        page.fill("#phone-registrar", stir.registrar)
        page.fill("#phone-expires", "60")
        page.check("#phone-identity-fetch")
        page.click("#phone-register")
        page.wait_for_selector('#phone-reg-state[data-state="registered"]', timeout=UI_MS)
        manager = baresip("12155550100", "unused", stir.registrar, tone_hz=660.0)
        caller = peers_loop.run(manager.__aenter__())
        try:
            stir.wait_registered("12155550100")
            peers_loop.run(caller.command("dial", f"sip:12155550111@{stir.realm}"))
            page.wait_for_selector("#phone-incoming:not([hidden])", timeout=UI_MS)
            banner = page.locator("#phone-incoming-identity").text_content() or ""
            assert "caller identity verified (attestation A, 12155550100 → 12155550111" in banner, banner
            page.click("#phone-answer")
            call_state(page, "confirmed")
            page.wait_for_selector('#phone-call-identity[data-verified="true"]', timeout=UI_MS)
            peers_loop.run(caller.command("hangup"))
            call_state(page, "terminated")
        finally:
            peers_loop.run(manager.__aexit__(None, None, None))
        assert stir.signs() == [1] and site.requests.count("/cert.pem") == 1
