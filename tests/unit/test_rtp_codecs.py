"""The codec registry (skinnysip.rtp.codecs) and wideband offer/answer (RFC 3551 G.722, RFC 7587
Opus): round trips keep a tone's frequency; offers list wideband codecs first with their
rtpmap/fmtp; answers and negotiate pick the first common codec in the offerer's order."""

from __future__ import annotations

import numpy as np
import pytest

from skinnysip.net.media import MediaConfig
from skinnysip.rtp import codecs
from skinnysip.rtp.audio import dominant_frequencies
from skinnysip.rtp.tones import sine
from skinnysip.sdp import AUDIO_CODECS, SessionDescription, audio_answer, audio_offer_for, negotiate

needs_g722 = pytest.mark.skipif(not codecs.G722.is_available, reason="the g722 binding is not installed")
needs_opus = pytest.mark.skipif(not codecs.OPUS.is_available, reason="opuslib/libopus is not installed")


def round_trip(codec: codecs.Codec, rate: int, freq: float = 1000.0, ptime: float = 0.02,
               decode_rate: int | None = None) -> tuple[np.ndarray, list[bytes]]:
    """1 s of ``freq`` at ``rate`` through a fresh encoder and decoder, ``ptime`` frames."""
    signal = sine(freq, 1.0, rate=rate, amplitude=0.3).astype(np.int16)
    enc, dec = codec.encoder(rate), codec.decoder(decode_rate or rate)
    n = int(rate * ptime)
    payloads = [enc.encode(signal[i:i + n]) for i in range(0, len(signal), n)]
    return np.concatenate([dec.decode(p) for p in payloads]), payloads


def dominant_share(samples: np.ndarray, rate: int, freq: float, skip: float = 0.1) -> float:
    freqs = dominant_frequencies(samples[int(skip * rate):], rate)
    return float(np.mean(np.abs(freqs - freq) < 25))


def test_registry_describes_the_codecs() -> None:
    assert [c.name for c in codecs.KNOWN] == ["opus", "G722", "PCMU", "PCMA"]
    assert (codecs.G722.payload_type, codecs.G722.clock_rate, codecs.G722.audio_rate) == (9, 8000, 16000)
    assert (codecs.OPUS.static, codecs.OPUS.clock_rate, codecs.OPUS.rtpmap(96)) == (False, 48000, "96 opus/48000/2")
    assert codecs.G722.rtpmap() == "9 G722/8000" and codecs.PCMU.rtpmap() == "0 PCMU/8000"
    assert codecs.G722.ticks(160, 8000) == 160 and codecs.OPUS.ticks(160, 8000) == 960
    assert codecs.matching("OPUS", 48000, 2) is codecs.OPUS and codecs.matching("opus", 48000, 1) is None
    assert codecs.matching("g722", 8000, None) is codecs.G722 and codecs.matching("G722", 16000, None) is None
    assert codecs.for_payload_type(9) is codecs.G722 and codecs.for_payload_type(96) is None
    assert codecs.PCMU in codecs.available() and codecs.PCMA in codecs.available()
    assert AUDIO_CODECS == tuple(c.payload_type for c in codecs.available())
    with pytest.raises(ValueError):
        codecs.PCMU.encoder(16000)


def test_codec_names_become_payload_types_in_order() -> None:
    assert codecs.payload_types(["pcma", "PCMU", "PCMA"]) == (8, 0)  # any case, duplicates dropped
    for names, message in [(["MP3"], "unknown codec 'MP3'"), ([], "name at least one codec")]:
        with pytest.raises(ValueError, match=message):
            codecs.payload_types(names)


def test_an_answer_takes_only_the_codecs_given_and_refuses_an_offer_without_them() -> None:
    offer = audio_offer_for("127.0.0.1", 4000, codecs=(0, 8))  # PCMU first
    _, session = audio_answer(offer, "127.0.0.1", 5000, codecs=codecs.payload_types(["PCMA"]))
    assert (session.payload_type, session.encoding) == (8, "PCMA")
    _, refused = audio_answer(audio_offer_for("127.0.0.1", 4000, codecs=(0,)), "127.0.0.1", 5000, codecs=(8,))
    assert refused.rejected  # the phone answers such an INVITE 488


def test_g711_round_trip() -> None:
    out, payloads = round_trip(codecs.PCMA, 8000)
    assert len(payloads[0]) == 160 and dominant_share(out, 8000, 1000.0) == 1.0


@needs_g722
@pytest.mark.parametrize(("rate", "decode_rate"), [(16000, 16000), (8000, 8000), (8000, 16000), (16000, 8000)])
def test_g722_round_trip_keeps_the_tone(rate: int, decode_rate: int) -> None:
    """64 kbit/s: 160 octets per 20 ms at either PCM rate; the 8 kHz mode interworks with 16 kHz."""
    out, payloads = round_trip(codecs.G722, rate, decode_rate=decode_rate)
    assert {len(p) for p in payloads} == {160}
    assert len(out) == decode_rate
    assert dominant_share(out, decode_rate, 1000.0) >= 0.95
    rms = float(np.sqrt(np.mean(out[decode_rate // 10:].astype(float) ** 2)))
    assert rms == pytest.approx(0.3 * 32767 / np.sqrt(2), rel=0.1)


@needs_opus
@pytest.mark.parametrize(("rate", "ptime"), [(48000, 0.02), (8000, 0.02), (8000, 0.06), (16000, 0.01)])
def test_opus_round_trip_keeps_the_tone(rate: int, ptime: float) -> None:
    out, payloads = round_trip(codecs.OPUS, rate, ptime=ptime)
    assert len(out) == rate and all(0 < len(p) < 400 for p in payloads)
    assert dominant_share(out, rate, 1000.0) >= 0.95


@needs_opus
def test_opus_decoder_refuses_garbage_with_value_error() -> None:
    with pytest.raises(ValueError):
        codecs.OPUS.decoder(8000).decode(b"\x03")  # code 3 without its frame count (RFC 6716 §3.2.5)


# ---------------------------------------------------------------- SDP


OFFER = (
    "v=0\r\no=- 1 1 IN IP4 192.0.2.10\r\ns=-\r\nc=IN IP4 192.0.2.10\r\nt=0 0\r\n"
    "m=audio 40000 RTP/AVP {formats}\r\na=rtpmap:96 opus/48000/2\r\na=fmtp:96 useinbandfec=1;stereo=1\r\n"
    "a=rtpmap:9 G722/8000\r\na=rtpmap:8 PCMA/8000\r\na=rtpmap:0 PCMU/8000\r\n"
    "a=rtpmap:101 telephone-event/8000\r\na=rtpmap:102 telephone-event/48000\r\na=ptime:20\r\n"
)


def offer(formats: str) -> SessionDescription:
    return SessionDescription.parse(OFFER.format(formats=formats))


@needs_g722
@needs_opus
def test_our_offer_lists_wideband_first_with_rtpmap_and_fmtp() -> None:
    media = audio_offer_for("127.0.0.1", 4000).media[0]
    assert media.formats == ["111", "9", "0", "8", "101", "110"]
    maps = media.rtpmaps()
    assert (maps[111].encoding, maps[111].clock_rate, maps[111].channels) == ("opus", 48000, 2)
    assert (maps[9].encoding, maps[9].clock_rate) == ("G722", 8000)
    assert (maps[101].clock_rate, maps[110].clock_rate) == (8000, 48000)
    assert media.fmtps() == {111: "useinbandfec=1", 101: "0-16", 110: "0-16"}
    assert "a=rtpmap:111 opus/48000/2" in audio_offer_for("127.0.0.1", 4000).to_bytes().decode()
    # no Opus offered: no telephone-event/48000
    assert audio_offer_for("127.0.0.1", 4000, codecs=(9, 0)).media[0].formats == ["9", "0", "101"]


@needs_g722
@needs_opus
@pytest.mark.parametrize(("formats", "pt", "encoding", "te"), [
    ("96 9 8 0 101 102", 96, "opus", 102),  # opus under the offerer's type, events at 48 kHz
    ("96 9 8 0 101", 96, "opus", None),      # no telephone-event/48000 offered: no events for opus
    ("9 96 0 101 102", 9, "G722", 101),
    ("0 9 96 101", 0, "PCMU", 101),
])
def test_answer_takes_the_offerers_first_common_codec(formats: str, pt: int, encoding: str, te: int | None) -> None:
    answer, session = audio_answer(offer(formats), "127.0.0.1", 5000)
    assert (session.payload_type, session.encoding, session.telephone_event) == (pt, encoding, te)
    media = SessionDescription.parse(answer.to_bytes()).media[0]
    assert media.formats == [str(pt)] + ([str(te)] if te is not None else [])
    assert media.rtpmaps()[pt].encoding == encoding
    if encoding == "opus":
        assert session.clock_rate == 48000 and session.fmtp == "useinbandfec=1;stereo=1"
        assert media.fmtps()[96] == "useinbandfec=1" and media.rtpmaps()[96].channels == 2
        cfg = MediaConfig(payload_type=session.payload_type, telephone_event=session.telephone_event)
        assert cfg.audio_codec is codecs.OPUS  # a dynamic type without a name: our one dynamic codec
    # limited to G.711 by the caller: G.722 and opus are passed over
    assert audio_answer(offer(formats), "127.0.0.1", 5000, codecs=(8, 0))[1].encoding in ("PCMU", "PCMA")


@needs_g722
@needs_opus
def test_negotiate_reads_the_codec_the_answer_picked() -> None:
    ours = audio_offer_for("127.0.0.1", 4000)
    theirs = ("v=0\r\no=- 1 1 IN IP4 10.0.0.2\r\ns=-\r\nc=IN IP4 10.0.0.2\r\nt=0 0\r\n"
              "m=audio 7000 RTP/AVP {f}\r\n{maps}a=sendrecv\r\n")
    opus = negotiate(ours, SessionDescription.parse(theirs.format(
        f="111 110", maps="a=rtpmap:111 opus/48000/2\r\na=rtpmap:110 telephone-event/48000\r\n")))
    assert (opus.payload_type, opus.encoding, opus.clock_rate, opus.telephone_event) == (111, "opus", 48000, 110)
    g722 = negotiate(ours, SessionDescription.parse(theirs.format(
        f="9 101", maps="a=rtpmap:9 G722/8000\r\na=rtpmap:101 telephone-event/8000\r\n")))
    assert (g722.payload_type, g722.encoding, g722.clock_rate, g722.telephone_event) == (9, "G722", 8000, 101)
    # an answer that renumbers opus is still opus; its 8 kHz events do not go with opus
    renumbered = negotiate(ours, SessionDescription.parse(theirs.format(
        f="100 101", maps="a=rtpmap:100 opus/48000/2\r\na=rtpmap:101 telephone-event/8000\r\n")))
    assert (renumbered.payload_type, renumbered.encoding, renumbered.telephone_event) == (100, "opus", None)
    g711_only = audio_offer_for("127.0.0.1", 4000, codecs=(0, 8))
    with pytest.raises(ValueError):
        negotiate(g711_only, SessionDescription.parse(theirs.format(f="9", maps="a=rtpmap:9 G722/8000\r\n")))


def test_media_config_validates_codecs() -> None:
    MediaConfig(payload_type=0, codec="pcmu").validate()
    for bad in (MediaConfig(payload_type=8, codec="PCMU"), MediaConfig(payload_type=0, codec="speex"),
                MediaConfig(payload_type=101, telephone_event=101)):
        with pytest.raises(ValueError):
            bad.validate()
    if codecs.OPUS.is_available:
        MediaConfig(payload_type=100, codec="opus", ptime=0.04).validate()
        with pytest.raises(ValueError):
            MediaConfig(payload_type=100, codec="opus", ptime=0.03).validate()
    if codecs.G722.is_available:
        assert MediaConfig(payload_type=9).audio_codec is codecs.G722
