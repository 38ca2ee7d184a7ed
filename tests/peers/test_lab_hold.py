"""Music on hold through the lab: our phone 1001 calls our phone 1002 over the lab's proxy and
holds it; the lab sees the re-INVITE offer sendonly answered recvonly and starts the
services' music towards 1002's RTP address; resume stops it (the stream's key is gone).

The lab is a proxy, so the holder's own RTP (a sendonly holder may keep sending; ours sends
silence) still reaches the held phone beside the music; our phone keeps to the first SSRC and
counts the music's packets as foreign. So the music is judged on the wire: tshark captures
what arrives at 1002's RTP port, and the packets of the other SSRC, decoded, are the melody's
notes (dominant frequency of each 20 ms frame)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import numpy as np
import pytest
from test_lab_sip import account, registered, settings

from peertools import TsharkCapture
from skinnysip.lab.runner import Lab
from skinnysip.lab.services import MOH_NOTES
from skinnysip.phone.api import IncomingCall
from skinnysip.phone.sip_phone import SIPPhone
from skinnysip.rtp import codecs
from skinnysip.rtp.audio import dominant_frequencies

pytestmark = [pytest.mark.peer, pytest.mark.timeout(120)]


def melody_share(samples: np.ndarray, rate: int) -> float:
    """Share of 20 ms frames whose dominant frequency is one of the melody's notes."""
    freqs = dominant_frequencies(samples, rate)
    if not len(freqs):
        return 0.0
    notes = np.array([f for f, _ in MOH_NOTES])
    return float(np.mean(np.min(np.abs(freqs[:, None] - notes[None, :]), axis=1) < 15))


async def test_hold_plays_music_to_the_held_party(tmp_path: Path) -> None:
    async with Lab(settings()) as lab:
        assert lab.services is not None, lab.notes
        async with SIPPhone(account(lab, "1001", source="silence")) as holder, \
                SIPPhone(account(lab, "1002", "tcp", auto_answer=0.1, record_dir=str(tmp_path),
                                 source="silence")) as held:
            await registered(lab, "1002")
            call = await holder.call("1002")
            assert await call.wait_connected(15), call.end_reason
            event = await held.next_event(5)
            while event is not None and not isinstance(event, IncomingCall):
                event = await held.next_event(5)
            assert isinstance(event, IncomingCall)
            theirs = event.call
            await asyncio.sleep(2)
            assert lab.services.moh_keys == []
            held_port = theirs.media_report()["local"][1]  # type: ignore[index]
            holder_ssrc = call.media_report()["ssrc"]  # type: ignore[index]
            cap = TsharkCapture(f"udp dst port {held_port}").start()
            t_hold = time.time()
            await call.hold()
            await asyncio.sleep(0.5)
            assert len(lab.services.moh_keys) == 1 and lab.services.moh_keys[0].startswith(call.call_id)
            await asyncio.sleep(4)
            t_resume = time.time()
            await call.resume()
            await asyncio.sleep(0.5)
            assert lab.services.moh_keys == []
            await asyncio.sleep(1)
            cap.stop()
            await call.hangup()
            assert await theirs.wait_ended(10)
    cap.decode_as = [f"udp.port=={held_port},rtp"]
    packets = cap.decode(f"rtp && udp.dstport == {held_port}", ["frame.time_epoch", "rtp.ssrc", "rtp.p_type",
                                                                "rtp.payload"])
    music = [p for p in packets if int(p["rtp.ssrc"][0], 16) != holder_ssrc]
    assert music, "no packets from another source reached the held phone"
    times = [float(p["frame.time_epoch"][0]) for p in music]
    assert min(times) >= t_hold and max(times) <= t_resume + 0.5  # only while held
    assert len(music) >= 150  # ~4 s of 20 ms packets
    codec = codecs.for_payload_type(int(music[0]["rtp.p_type"][0]))  # what 1002's answer listed first
    assert codec is not None
    decoder = codec.decoder(8000)
    audio = np.concatenate([np.asarray(decoder.decode(bytes.fromhex(p["rtp.payload"][0].replace(":", ""))))
                            for p in music])
    assert melody_share(audio, 8000) >= 0.8
