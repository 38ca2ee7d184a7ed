"""Helpers for the web tests: drive a tester form, read a downloaded pcapng with tshark."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

from peertools import require

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
