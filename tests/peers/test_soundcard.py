"""The sound card as a call's microphone and speaker (``net/soundcard.py``, PortAudio through
``sounddevice``), proven without hardware: ALSA's ``file`` plugin makes two PCM devices
defined in a test ``~/.asoundrc`` — a microphone that reads a 700 Hz tone from a raw file
and a speaker that writes what it plays to another — and PortAudio drives them as it drives
a real card (paced by :mod:`skinnysip.net.soundcard`, since they have no clock).

``skinnysip phone --soundcard MIC,SPEAKER`` calls baresip (440 Hz tone, recording) through
Kamailio: baresip's recording has our microphone's 700 Hz, and our speaker file has
baresip's 440 Hz."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from baresip_peer import baresip
from sip_peers import KamailioPeer, kamailio
from test_phone_baresip import registered, share_of

from skinnysip.rtp.audio import dominant_frequencies

pytestmark = [pytest.mark.peer, pytest.mark.timeout(90)]

MIC_TONE, THEIR_TONE = 700.0, 440.0
ASOUNDRC = """pcm.skinnysip_mic {{
    type file
    slave.pcm "null"
    file "/dev/null"
    infile "{home}/mic.raw"
    format "raw"
    hint {{ show on description "test microphone" }}
}}
pcm.skinnysip_speaker {{
    type file
    slave.pcm "null"
    file "{home}/speaker.raw"
    format "raw"
    hint {{ show on description "test speaker" }}
}}
"""


@pytest.fixture
def card_home(tmp_path: Path) -> Path:
    """A HOME whose ~/.asoundrc defines the two test devices; mic.raw holds 60 s of 700 Hz
    (16-bit little-endian, 8000 Hz: the rate the call opens the card at)."""
    pytest.importorskip("sounddevice")
    t = np.arange(8000 * 60) / 8000
    (np.sin(2 * np.pi * MIC_TONE * t) * 8000).astype("<i2").tofile(tmp_path / "mic.raw")
    (tmp_path / ".asoundrc").write_text(ASOUNDRC.format(home=tmp_path))
    return tmp_path


def test_portaudio_sees_the_test_devices(card_home: Path) -> None:
    """The devices exist for PortAudio (in a fresh process: ALSA reads ~/.asoundrc at start)."""
    out = subprocess.run([sys.executable, "-c", "from skinnysip.net.soundcard import list_devices as l; "
                          "print([d['name'] for d in l()])"], capture_output=True, text=True, timeout=30,
                         env={**os.environ, "HOME": str(card_home)})
    assert "skinnysip_mic" in out.stdout and "skinnysip_speaker" in out.stdout, out.stderr


@pytest.fixture(scope="module")
def pbx() -> Iterator[KamailioPeer]:
    with kamailio(pbx=True) as peer:
        yield peer


async def test_call_with_the_sound_card(pbx: KamailioPeer, card_home: Path) -> None:
    async with baresip("bob", pbx.users["bob"], f"127.0.0.1:{pbx.udp_port}", tone_hz=THEIR_TONE) as bob:
        await registered(pbx, "bob")
        env = {**os.environ, "HOME": str(card_home), "SKINNYSIP_PASSWORD": "wonderland"}
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "skinnysip", "phone", f"sip:alice@{pbx.realm}", "--registrar",
            f"127.0.0.1:{pbx.udp_port}", "--call", "bob", "--duration", "4",
            "--soundcard", "skinnysip_mic,skinnysip_speaker", stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE, env=env)
        out, err = await asyncio.wait_for(proc.communicate(), 40)
        assert proc.returncode == 0, (out + err).decode()
        await bob.wait_event("CALL_CLOSED")
        assert share_of(bob.recordings()["dec"], MIC_TONE) >= 0.9  # our microphone reached baresip
    heard = np.fromfile(card_home / "speaker.raw", "<i2")
    assert len(heard) >= 8000 * 3, len(heard)  # the speaker ran (paced) for the call
    freqs = dominant_frequencies(heard)
    voiced = freqs[freqs > 0]
    assert len(voiced) >= 100, len(voiced)  # ≥ 2 s of baresip's audio came out of our speaker
    assert np.mean(np.abs(voiced - THEIR_TONE) < 30) >= 0.9


@pytest.mark.parametrize(("card", "named"), [
    ("nosuchcard", "no microphone 'nosuchcard'"),
    ("skinnysip_mic,nosuchspeaker", "no speaker 'nosuchspeaker'"),
    ("99,skinnysip_speaker", "no microphone 99"),
])
def test_a_sound_card_that_is_not_there_is_refused_before_anything_is_sent(card_home: Path, card: str,
                                                                            named: str) -> None:
    """``--soundcard`` naming a device PortAudio lacks: one line and exit 2 at start, before
    the REGISTER (the registrar here is a port where nothing listens: a phone that went on
    would report the ICMP refusal, exit 3), not an error at the first call."""
    done = subprocess.run([sys.executable, "-m", "skinnysip", "phone", "sip:alice@skinnysip.test", "--registrar",
                           "127.0.0.1:9", "--call", "bob", "--soundcard", card], capture_output=True, text=True,
                          timeout=30, env={**os.environ, "HOME": str(card_home)})
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stderr.startswith(f"error: --soundcard: {named} (PortAudio: "), done.stderr
    assert "Traceback" not in done.stderr and done.stdout == ""
