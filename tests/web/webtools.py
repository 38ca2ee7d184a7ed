"""Helpers for the web tests: the browser's settings and a page guarded to 127.0.0.1, drive a
tester form, read a downloaded pcapng with tshark, run async peers beside Playwright."""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from peertools import require

# Constants and the page guard live here (not in conftest.py) so test modules can import them:
# with tests/peers on the path too, "conftest" names the other directory's module.
CHROMIUM = "/usr/bin/chromium"
#: Chromium resolves no name but loopback's: its background services (autofill, accounts,
#: updates) otherwise send DNS queries off the machine despite --disable-background-networking
NO_DNS = "MAP * ~NOTFOUND, EXCLUDE localhost, EXCLUDE 127.0.0.1"
CHROMIUM_ARGS = [
    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run", f"--host-resolver-rules={NO_DNS}",
]
LAPTOP = {"width": 1280, "height": 900}
PHONE = {"width": 390, "height": 844}
REDOC_LOGO = "https://cdn.redoc.ly/redoc/logo-mini.svg"
UI_TIMEOUT_MS = 45_000  # one UI wait on a loaded 2-core machine (a probe is a few seconds at most)


@dataclass
class Guard:
    """What a page tried that it should not have: requests beyond 127.0.0.1, script errors."""

    blocked: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)  # stopped by the page's Content-Security-Policy

    def check(self) -> None:
        assert self.blocked == [], f"the page tried to leave 127.0.0.1: {self.blocked}"
        assert self.errors == [], f"script errors: {self.errors}"
        # The one thing our pages' policy is known to stop: ReDoc's Redocly logo from its CDN.
        others = [r for r in self.refused if REDOC_LOGO not in r]
        assert others == [], f"stopped by Content-Security-Policy: {others}"


def open_page(browser: object, viewport: dict[str, int]) -> tuple[object, object, Guard]:
    guard = Guard()
    context = browser.new_context(viewport=viewport, accept_downloads=True)  # type: ignore[attr-defined]
    context.set_default_timeout(UI_TIMEOUT_MS)

    def only_loopback(route: object, request: object) -> None:
        url = request.url  # type: ignore[attr-defined]
        if urlparse(url).hostname == "127.0.0.1":
            route.continue_()  # type: ignore[attr-defined]
        else:
            guard.blocked.append(url)
            route.abort()  # type: ignore[attr-defined]

    context.route("**/*", only_loopback)
    page = context.new_page()
    page.on("pageerror", lambda exc: guard.errors.append(f"pageerror: {exc}"))

    def console(msg: object) -> None:
        text = msg.text  # type: ignore[attr-defined]
        # Chromium logs every 4xx fetch; a 400 is how the API refuses a field (the tests provoke it)
        if msg.type != "error":  # type: ignore[attr-defined]
            return
        url = (getattr(msg, "location", None) or {}).get("url", "")
        if "Content Security Policy" in text:
            guard.refused.append(text)
        elif "responded with a status of 404" in text and url.endswith("/api/lab"):
            pass  # the page asks whether the server runs a lab: 404 is "no" (the lab panel stays hidden)
        elif "responded with a status of 400" not in text:
            guard.errors.append(f"console.error: {text}")

    page.on("console", console)
    return context, page, guard

EXPERT_WARN = 0x00600000  # Wireshark PI_WARN; PI_ERROR is 0x00800000


def run_form(page: Any, kind: str, fields: dict[str, str], checks: dict[str, bool] | None = None,
             selects: dict[str, str] | None = None) -> dict[str, Any]:
    """Fill the ``kind`` (sip/sccp) form by element id suffix, press Run with the keyboard
    focus on it, wait for the result and return the result JSON the page rendered."""
    for suffix, value in (selects or {}).items():
        page.select_option(f"#{kind}-{suffix}", value)
    for suffix, value in fields.items():
        page.fill(f"#{kind}-{suffix}", value)
    for suffix, on in (checks or {}).items():
        page.set_checked(f"#{kind}-{suffix}", on)
    before = page.locator(f"#{kind}-status").text_content() or ""
    page.click(f"#{kind}-run")
    page.wait_for_function(
        """([kind, before]) => {
             const s = document.getElementById(kind + '-status').textContent;
             return s !== before && !s.startsWith('Running') && s !== '';
           }""",
        arg=[kind, before],
    )
    page.wait_for_selector(f"#{kind}-result .headline")
    return json.loads(page.locator(f"#{kind}-result details.json pre").text_content())


def field(page: Any, kind: str, key: str) -> str:
    """The rendered value of result field ``key`` (the fields table row data-key=key)."""
    return page.locator(f'#{kind}-result table.fields').first.locator(f'tr[data-key="{key}"] td').text_content()


def ladder_labels(page: Any, kind: str) -> list[str]:
    return page.locator(f"#{kind}-result svg.ladder-svg g.msg text.label").all_text_contents()


def tshark_rows(path: Path, *fields: str, decode_as: list[str] | None = None,
                display_filter: str | None = None) -> list[list[str]]:
    """``tshark -r path -T fields -e …`` as rows of strings (timeout 60 s)."""
    cmd = [require("tshark"), "-r", str(path), "-T", "fields", "-E", "separator=\t", "-o", "tcp.analyze_sequence_numbers:TRUE"]
    for d in decode_as or []:
        cmd += ["-d", d]
    if display_filter:
        cmd += ["-Y", display_filter]
    for f in fields:
        cmd += ["-e", f]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return [line.split("\t") for line in out.stdout.splitlines() if line.strip()]


def assert_clean_capture(path: Path, decode_as: list[str] | None = None) -> None:
    """tshark opens the file and finds no malformed packet and no expert warning or error."""
    bad = tshark_rows(path, "frame.number", "_ws.col.Info", decode_as=decode_as,
                      display_filter=f"_ws.malformed || _ws.expert.severity >= {EXPERT_WARN}")
    assert bad == [], f"tshark complains about {path}: {bad}"


class LoopThread:
    """An asyncio event loop in a daemon thread, for async peers (baresip's control socket)
    beside Playwright's sync API: :meth:`run` a coroutine there and wait (bounded) for it."""

    def __init__(self) -> None:
        import asyncio
        import threading

        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="web-test-peers", daemon=True)
        self.thread.start()

    def run(self, coro: Any, timeout: float = 30.0) -> Any:
        import asyncio

        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


def wav_frames(path: Path, frame: float = 0.02) -> tuple[Any, Any]:
    """Per ``frame`` seconds of a 16-bit mono WAV: the dominant frequency (Hz) and the RMS level
    (int16 units), as two numpy arrays."""
    import wave

    import numpy as np

    from skinnysip.rtp.audio import dominant_frequencies

    with wave.open(str(path)) as w:
        samples = np.frombuffer(w.readframes(w.getnframes()), dtype=np.int16)
        rate = w.getframerate()
    n = int(rate * frame)
    count = len(samples) // n
    rms = np.sqrt(np.mean(samples[:count * n].reshape(count, n).astype(np.float64) ** 2, axis=1)) if count else np.zeros(0)
    return dominant_frequencies(samples, rate), rms


def heard_tones(page: Any, count: int = 30, timeout: float = 20.0, every_ms: int = 100) -> list[int]:
    """The dominant frequency (Hz) the page's AnalyserNode reports, every ``every_ms`` ms, until
    ``count`` non-silent readings were taken or ``timeout`` s passed (a loaded machine may starve
    the audio thread for a moment: silent readings are skipped, not counted as misses)."""
    import time

    readings: list[int] = []
    deadline = time.monotonic() + timeout
    while len(readings) < count and time.monotonic() < deadline:
        peak = page.evaluate("() => window.skinnysipPhone.hearing()")
        if peak:
            readings.append(int(peak["hz"]))
        page.wait_for_timeout(every_ms)
    return readings


def mostly(readings: list[int], hz: float, share: float = 0.8, least: int = 20, within: float = 10.0) -> bool:
    """At least ``least`` readings and ``share`` of them within ``within`` Hz of ``hz``."""
    return len(readings) >= least and sum(abs(r - hz) <= within for r in readings) >= share * len(readings)
