"""One WebRTC call from Chromium to our softphone, run by ``test_web_webrtc.py`` inside a
network namespace of its own (Chromium gathers no candidate on loopback, so the namespace has
a veth pair of its own as well: its traffic stays in the namespace).

Our phone listens for SIP over WebSocket (``transport="ws"``) on 127.0.0.1 as an ICE lite,
DTLS-SRTP phone answering by itself and sending a 440 Hz tone; headless Chromium (its fake
microphone a 1000 Hz tone) loads ``browser_sip_call.html`` from a local HTTP server (a secure
context) and calls it. Prints one JSON object: the page's result (``log``, ``answer``,
``readings``, ``stats``), our call's media report and the share of our recording's 20 ms
frames at 1000 Hz. Or, with ``lab``, the page logs in to the lab over its WebSocket port and
calls the echo; with ``browser``, the page registers at the lab and our phone calls it.
Arguments: ``phone``, ``lab`` or ``browser``, ``CODEC`` (``any`` or a codec name our phone
is limited to) and a work directory.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import http.server
import json
import shutil
import socketserver
import sys
import threading
import wave
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from playwright import sync_api
from webtools import CHROMIUM, CHROMIUM_ARGS, LoopThread

from peertools import free_port
from skinnysip.phone.api import DTMFReceived, IncomingCall, PhoneError
from skinnysip.phone.sip_phone import SIPAccount, SIPPhone
from skinnysip.rtp.audio import dominant_frequencies

MIC_TONE, OUR_TONE = 1000.0, 440.0
SECONDS = 4
DIGITS = "19*#"  # sent by the page to our phone with Chromium's RTCDTMFSender (RFC 4733)


def tone_wav(path: Path, hz: float, seconds: float = 15.0, rate: int = 48000) -> Path:
    t = np.arange(int(rate * seconds)) / rate
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes((0.5 * np.sin(2 * np.pi * hz * t) * 32767).astype(np.int16).tobytes())
    return path


def share_at(path: Path, hz: float) -> tuple[float, float]:
    """(the share of the recording's sounding 20 ms frames whose dominant frequency is ``hz``
    ± 25 Hz, the share of frames that sound at all), after the first 0.5 s (ICE and DTLS).
    Frames are silent while the page's digits go as RFC 4733 events instead of audio (4 of
    100 ms in a 4 s call): counted apart, they do not decide what was heard."""
    with wave.open(str(path)) as w:
        samples = np.frombuffer(w.readframes(w.getnframes()), dtype=np.int16)
        rate = w.getframerate()
    freqs = dominant_frequencies(samples[int(0.5 * rate):], rate)
    if not len(freqs):
        return 0.0, 0.0
    sounding = freqs > 0
    return (float(np.mean(np.abs(freqs[sounding] - hz) < 25)) if sounding.any() else 0.0,
            float(np.mean(sounding)))


@contextlib.contextmanager
def chromium_page(site_port: int, mic: Path) -> Iterator[Any]:
    """Headless Chromium whose microphone is ``mic``, on the scenario page (a secure context:
    served from 127.0.0.1)."""
    args = [*CHROMIUM_ARGS, "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream",
            f"--use-file-for-fake-audio-capture={mic}", "--autoplay-policy=no-user-gesture-required"]
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=args, timeout=60_000)
        try:
            page = browser.new_page()
            page.goto(f"http://127.0.0.1:{site_port}/index.html")
            yield page
        finally:
            browser.close()


def browser_call(page: Any, url: str, target: str, from_: str, auth: dict[str, str] | None) -> dict[str, Any]:
    """The page's call to ``target`` over the WebSocket ``url`` (digits sent when no ``auth``)."""
    return page.evaluate(  # type: ignore[no-any-return]
        "([url, target, seconds, from, auth, digits]) => window.browserCall(url, target, seconds, from, auth, digits)",
        [url, target, SECONDS, from_, auth, DIGITS if auth is None else ""])


@contextlib.contextmanager
def webrtc_lab(loop: LoopThread) -> Iterator[Any]:
    """The lab with SHA-256 digest (what WebCrypto can compute, it has no MD5) and a WebSocket port."""
    from skinnysip.lab.config import LabSettings
    from skinnysip.lab.runner import Lab

    lab = Lab(LabSettings(hosts=("127.0.0.1",), sip_port=0, sips_port=0, sccp_port=0, ws_port=0,
                          algorithm="SHA-256"))
    loop.run(lab.start())
    try:
        yield lab
    finally:
        loop.run(lab.close())


def call_the_lab(loop: LoopThread, site_port: int, mic: Path, work: Path) -> dict[str, Any]:
    """The page logs in as 1001 (the 407 answered) and calls 600, the echo."""
    with webrtc_lab(loop) as lab, chromium_page(site_port, mic) as page:
        domain = lab.settings.domain
        result = browser_call(page, f"ws://{lab.sip['ws']}/", f"sip:600@{domain}", f"sip:1001@{domain}",
                              {"user": "1001", "password": "demo1001"})
        result["ours"] = {"calls": lab.calls()}
        return result


def call_the_browser(loop: LoopThread, site_port: int, mic: Path, work: Path) -> dict[str, Any]:
    """The page registers as 1002 at the lab over its WebSocket; our phone, 1001 over UDP, an
    ICE lite DTLS-SRTP offerer, calls it through the lab, talks :data:`SECONDS` s and hangs up."""
    with webrtc_lab(loop) as lab:
        domain = lab.settings.domain
        phone = SIPPhone(SIPAccount(aor=f"sip:1001@{domain}", password="demo1001", registrar=lab.sip["udp"],
                                    ice=True, srtp="dtls", source=f"tone:{OUR_TONE:g}", record_dir=str(work / "rec")))
        try:
            loop.run(phone.start())
            with chromium_page(site_port, mic) as page:
                page.evaluate("([url, aor, registrar, seconds, auth]) => { window.answered = "
                              "window.browserAnswer(url, aor, registrar, seconds, auth); }",
                              [f"ws://{lab.sip['ws']}/", f"sip:1002@{domain}", f"sip:{domain}", SECONDS + 10,
                               {"user": "1002", "password": "demo1002"}])
                page.wait_for_function("() => window.registered === true", timeout=15_000)
                call = loop.run(phone.call("1002"))
                connected = loop.run(call.wait_connected(15))
                if connected:
                    loop.run(asyncio.sleep(SECONDS))
                report = call.media_report()
                with contextlib.suppress(PhoneError):  # it may have ended already: the result says why
                    loop.run(call.hangup())
                result: dict[str, Any] = page.evaluate("() => window.answered")
            recordings = sorted((work / "rec").glob("*-rx.wav"))
            result["ours"] = {"connected": connected, "end_reason": call.end_reason, "report": report,
                              "exchange": [m.summary for m in call.exchange],
                              "heard": share_at(recordings[0], MIC_TONE) if recordings else (0.0, 0.0),
                              "offer": str(call.local_sdp) if call.local_sdp is not None else None}
            return result
        finally:
            loop.run(phone.close())


def call_the_phone(loop: LoopThread, site_port: int, mic: Path, work: Path, codec: str) -> dict[str, Any]:
    """Our phone listens on a WebSocket (ICE lite, DTLS-SRTP, answering by itself); the page
    calls it and sends :data:`DIGITS`."""
    port = free_port()
    account = SIPAccount(aor="sip:alice@127.0.0.1", register=False, transport="ws", listen_host="127.0.0.1",
                         listen_port=port, auto_answer=0.2, ice=True, srtp="dtls", source=f"tone:{OUR_TONE:g}",
                         record_dir=str(work / "rec"), codecs=None if codec == "any" else (codec,))
    phone = SIPPhone(account)
    loop.run(phone.start())
    try:
        with chromium_page(site_port, mic) as page:
            result = browser_call(page, f"ws://127.0.0.1:{port}/", f"sip:alice@127.0.0.1:{port};transport=ws",
                                  "sip:browser@browser.invalid", None)
        call, digits = loop.run(incoming_call(phone))
        report = call.media_report() if call is not None else None
        recordings = sorted((work / "rec").glob("*-rx.wav"))
        result["ours"] = {"report": report, "heard": share_at(recordings[0], MIC_TONE) if recordings else (0.0, 0.0),
                          "recordings": len(recordings), "digits": digits}
        return result
    finally:
        loop.run(phone.close())


async def incoming_call(phone: SIPPhone) -> tuple[Any, list[tuple[str, str]]]:
    """The call the browser placed (the first IncomingCall among the phone's queued events)
    and the digits it heard, as (digit, method)."""
    call, digits = None, []
    while True:
        event = await phone.next_event(0.5)
        if event is None:
            return call, digits
        if isinstance(event, IncomingCall) and call is None:
            call = event.call
        elif isinstance(event, DTMFReceived):
            digits.append((event.digit, event.method))


def main(target: str, codec: str, work: Path) -> dict[str, Any]:
    page_dir = work / "site"
    page_dir.mkdir(parents=True, exist_ok=True)
    shutil.copy(Path(__file__).with_name("browser_sip_call.html"), page_dir / "index.html")
    mic = tone_wav(work / "mic.wav", MIC_TONE)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(page_dir))
    handler.log_message = lambda *args: None  # type: ignore[method-assign]
    site = socketserver.TCPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=site.serve_forever, daemon=True).start()
    loop = LoopThread()
    try:
        if target == "lab":
            return call_the_lab(loop, site.server_address[1], mic, work)
        if target == "browser":
            return call_the_browser(loop, site.server_address[1], mic, work)
        return call_the_phone(loop, site.server_address[1], mic, work, codec)
    finally:
        loop.close()
        site.shutdown()


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1], sys.argv[2], Path(sys.argv[3])), default=str))
