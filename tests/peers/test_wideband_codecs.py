"""G.722 and Opus on the wire: two of our MediaStreams over each codec, and our SIP phone against
baresip limited to each codec (``audio_codecs=G722`` / ``opus``), calling and called.

Audio is proven by listening, as in test_media_stream.py / test_phone_baresip.py: the dominant
frequency of ≥ 95 % of the 20 ms frames of each received recording is the other side's tone."""

from __future__ import annotations

import asyncio
import wave
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from baresip_peer import baresip
from sip_peers import KamailioPeer, kamailio
from test_media_stream import read_wav, talking_pair, tone_share
from test_phone_baresip import OUR_TONE, THEIR_TONE, account, registered, share_of

from skinnysip.phone.api import CallState
from skinnysip.phone.sip_phone import SIPCall, SIPPhone
from skinnysip.rtp import codecs
from skinnysip.rtp.packet import RTPPacket

pytestmark = [pytest.mark.peer, pytest.mark.timeout(120)]

#: (codec, payload type we use, its name)
WIDEBAND = [
    pytest.param(codecs.G722, 9, "G722", id="G722",
                 marks=pytest.mark.skipif(not codecs.G722.is_available, reason="no g722 binding")),
    pytest.param(codecs.OPUS, 111, "opus", id="opus",
                 marks=pytest.mark.skipif(not codecs.OPUS.is_available, reason="no opuslib/libopus")),
]
#: baresip's own names (codec/audio rate/channels) and the channels its aufile source must have
BARESIP = {"G722": ("G722/16000/1", 1), "opus": ("opus/48000/2", 2)}


def heard_share(path: Path, freq: float) -> float:
    """:func:`share_of` for a recording of any channel count (baresip's opus dumps are stereo)."""
    with wave.open(str(path)) as w:
        channels, rate = w.getnchannels(), w.getframerate()
        samples = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
    if channels == 1:
        return share_of(path, freq)
    mono = samples[: len(samples) - len(samples) % channels].reshape(-1, channels)[:, 0].astype(np.int16)
    mono_path = path.with_name(path.stem + "-ch0.wav")
    with wave.open(str(mono_path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(mono.tobytes())
    return share_of(mono_path, freq)


@pytest.mark.parametrize(("codec", "pt", "name"), WIDEBAND)
async def test_two_streams_hear_each_other(tmp_path: Path, codec: codecs.Codec, pt: int, name: str) -> None:
    a, b = await talking_pair("127.0.0.1", tmp_path, payload_type=pt)
    seen: list[RTPPacket] = []
    receive = b._rtp_datagram

    def spy(data: bytes, addr: tuple[str, int]) -> None:
        seen.append(RTPPacket.parse(data)) if len(data) > 1 and not 192 <= data[1] <= 223 else None
        receive(data, addr)

    b._rtp_datagram = spy  # type: ignore[method-assign]
    await asyncio.sleep(2.0)
    final_a = await a.close()
    await asyncio.sleep(0.1)
    final_b = await b.close()
    for stream, final, hears in ((a, final_a, 660.0), (b, final_b, 440.0)):
        rx, seconds = read_wav(stream.recordings["rx"])
        assert tone_share(rx, hears) >= 0.95, (stream.name, name, final["sent"], final["jitter_buffer"])
        assert abs(seconds - final["duration"]) < 0.1
        assert final["codec"] == name and final["payload_type"] == pt
        assert final["received"]["lost"] == 0 and final["received"]["decode_errors"] == 0
        assert final["received"]["jitter_ms"] < 10 and final["quality"]["mos"] > 4.0
        assert final["jitter_buffer"]["played"] >= 80
    # the wire: RTP timestamps step by 20 ms at the codec's RTP clock (G.722: 8000 Hz; Opus: 48000 Hz)
    audio = [p for p in seen if p.payload_type == pt]
    assert len(audio) > 50
    steps = {(y.timestamp - x.timestamp) % (1 << 32) for x, y in zip(audio, audio[1:], strict=False)}
    frame = codec.clock_rate // 50
    assert frame in steps and all(step % frame == 0 for step in steps)  # a stalled loop skips whole frames
    if codec is codecs.G722:
        assert {len(p.payload) for p in audio} == {160}  # 64 kbit/s


@pytest.mark.skipif(not codecs.OPUS.is_available, reason="no opuslib/libopus")
async def test_dtmf_over_opus_uses_the_48_khz_clock(tmp_path: Path) -> None:
    a, b = await talking_pair("127.0.0.1", None, payload_type=111)
    try:
        await asyncio.sleep(0.3)
        await a.send_dtmf("1#", duration=0.1)
        await asyncio.sleep(0.4)
    finally:
        await a.close()
        rb = await b.close()
    assert [d["digit"] for d in rb["dtmf"] if d["method"] == "rfc4733"] == ["1", "#"]
    assert all(abs(d["duration"] - 0.1) < 0.025 for d in rb["dtmf"])  # 4800 units of 48 kHz


async def answered_call(phone: SIPPhone, timeout: float = 10.0) -> SIPCall:
    """The first call of ``phone`` to be confirmed (our auto-answer took it) within ``timeout``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        for call in phone.calls:
            if call.state is CallState.CONFIRMED:
                return call
        await asyncio.sleep(0.1)
    raise AssertionError(f"no call answered within {timeout} s")


@pytest.fixture(scope="module")
def pbx() -> Iterator[KamailioPeer]:
    with kamailio(pbx=True) as peer:
        yield peer


@pytest.mark.parametrize(("codec", "pt", "name"), WIDEBAND)
async def test_phone_and_baresip_limited_to_the_codec(pbx: KamailioPeer, tmp_path: Path, codec: codecs.Codec,
                                                      pt: int, name: str) -> None:
    """We call baresip (it answers our wideband-first offer with the one codec it has), then
    baresip calls us (it offers only that codec); we hear its tone and it hears ours both times."""
    their_name, channels = BARESIP[name]
    async with baresip("bob", pbx.users["bob"], f"127.0.0.1:{pbx.udp_port}", tone_hz=THEIR_TONE,
                       codec_modules=("g722", "opus"), extra_account=f"audio_codecs={their_name}",
                       tone_channels=channels) as bob:
        await registered(pbx, "bob")
        async with SIPPhone(account(pbx, "alice", auto_answer=0.1, record_dir=str(tmp_path))) as phone:
            out = await phone.call("bob")
            assert await out.wait_connected(15), out.end_reason
            assert out.audio is not None and out.audio.encoding == name
            await asyncio.sleep(2.5)
            report = out.media_report()
            await out.hangup()
            await bob.wait_event("CALL_CLOSED")
            assert report is not None and report["codec"] == name
            assert share_of(Path(report["recordings"]["rx"]), THEIR_TONE) >= 0.95
            assert heard_share(bob.recordings()["dec"], OUR_TONE) >= 0.95

            await bob.command("dial", f"sip:alice@{pbx.realm}")
            incoming = await answered_call(phone)
            assert incoming.audio is not None
            assert incoming.audio.encoding == name
            await asyncio.sleep(2.5)
            await bob.command("hangup")
            assert await incoming.wait_ended(10)
            report = incoming.media_report()
            assert report is not None and report["codec"] == name
            assert share_of(Path(report["recordings"]["rx"]), THEIR_TONE) >= 0.95
            assert heard_share(bob.recordings()["dec"], OUR_TONE) >= 0.95


@pytest.mark.skipif(not (codecs.G722.is_available and codecs.OPUS.is_available), reason="no g722 or opus binding")
async def test_the_phone_offers_and_accepts_only_the_codecs_it_is_given(pbx: KamailioPeer, tmp_path: Path) -> None:
    """Our phone limited to PCMA (``SIPAccount.codecs``) against baresip with opus, G.722, PCMU
    and PCMA: our offer lists PCMA alone (and telephone-event), baresip answers PCMA; baresip's
    own offer of all four is answered with PCMA (RFC 3264 §6.1); each side hears the other."""
    async with baresip("bob", pbx.users["bob"], f"127.0.0.1:{pbx.udp_port}", tone_hz=THEIR_TONE,
                       codec_modules=("g722", "opus")) as bob:
        await registered(pbx, "bob")
        async with SIPPhone(account(pbx, "alice", auto_answer=0.1, record_dir=str(tmp_path),
                                    codecs=("pcma",))) as phone:
            out = await phone.call("bob")
            assert await out.wait_connected(15), out.end_reason
            assert isinstance(out, SIPCall) and out.offer is not None
            offered = out.offer.media[0]
            assert [offered.rtpmaps()[pt].encoding for pt in offered.payload_types] == ["PCMA", "telephone-event"]
            assert out.audio is not None and out.audio.encoding == "PCMA"
            await asyncio.sleep(2.5)
            report = out.media_report()
            await out.hangup()
            await bob.wait_event("CALL_CLOSED")
            assert report is not None and report["codec"] == "PCMA"
            assert share_of(Path(report["recordings"]["rx"]), THEIR_TONE) >= 0.95
            assert heard_share(bob.recordings()["dec"], OUR_TONE) >= 0.95

            await bob.command("dial", f"sip:alice@{pbx.realm}")
            incoming = await answered_call(phone)
            assert isinstance(incoming, SIPCall) and incoming.remote_offer is not None
            theirs = incoming.remote_offer.media[0]
            assert {theirs.rtpmaps()[pt].encoding.upper() for pt in theirs.payload_types} >= {"OPUS", "G722", "PCMA"}
            assert incoming.audio is not None and incoming.audio.encoding == "PCMA"
            await asyncio.sleep(2.5)
            await bob.command("hangup")
            assert await incoming.wait_ended(10)
            report = incoming.media_report()
            assert report is not None and report["codec"] == "PCMA"
            assert share_of(Path(report["recordings"]["rx"]), THEIR_TONE) >= 0.95
            assert heard_share(bob.recordings()["dec"], OUR_TONE) >= 0.95
