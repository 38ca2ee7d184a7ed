"""MediaStream (skinnysip.net.media) end to end on loopback: two streams talk to each other.

Audio is proven by listening: each side's received recording has the other side's tone as the
dominant frequency of its 20 ms frames, and lasts as long as the call.  Also: PCMU and PCMA,
IPv6, hold stops packets, RFC 4733 DTMF in order, injected loss shows in the statistics and the
MOS, RTCP round trip times and the peer's reports, byte-identical payload echo, the pacing under
a stalled loop, and tshark's RTP/RTCP dissectors as an independent judge of the wire.
"""

from __future__ import annotations

import asyncio
import random
import socket
import struct
import time
import wave
from pathlib import Path

import numpy as np
import pytest

from peertools import TsharkCapture, longest_silence
from peertools import tone_share as frame_share
from skinnysip.net.media import MediaConfig, MediaStream
from skinnysip.rtp.audio import ToneSource, WavSource, dominant_frequencies
from skinnysip.rtp.packet import RTPPacket
from skinnysip.rtp.tones import dtmf, silence

pytestmark = pytest.mark.peer

V4 = "127.0.0.1"
V6 = "::1"


def ipv6_available() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s:
            s.bind((V6, 0))
        return True
    except OSError:
        return False


def read_wav(path: str | Path) -> tuple[np.ndarray, float]:
    with wave.open(str(path), "rb") as w:
        assert (w.getnchannels(), w.getsampwidth(), w.getframerate()) == (1, 2, 8000)
        n = w.getnframes()
        return np.frombuffer(w.readframes(n), dtype="<i2"), n / 8000


def tone_share(samples: np.ndarray, freq: float, tol: float = 15.0) -> float:
    """Share of the 20 ms frames, between the first and last non-silent one, whose dominant
    frequency is ``freq`` (± ``tol`` Hz).  Leading/trailing silence (before the peer's first
    packet was played out, after it stopped) does not count; gaps in the middle do, beyond
    the few a starved machine's playout leaves (:func:`peertools.tone_share`)."""
    freqs = dominant_frequencies(samples)
    sounding = np.nonzero(freqs)[0]
    assert len(sounding), "the recording is silent"
    return frame_share(freqs[sounding[0]:sounding[-1] + 1], freq, tolerance=tol + 1e-9)


async def talking_pair(host: str, tmp_path: Path | None, *, payload_type: int = 0, ptime: float = 0.02,
                       a_freq: float = 440.0, b_freq: float = 660.0, a_kw: dict | None = None,
                       b_kw: dict | None = None) -> tuple[MediaStream, MediaStream]:
    """Two streams on ``host`` sending ``a_freq`` / ``b_freq`` to each other (RTCP 10x faster)."""
    a = await MediaStream.open(host, **{"source": ToneSource(a_freq), "record_dir": tmp_path, "name": "a",
                                        "rtcp_scale": 0.1, **(a_kw or {})})
    try:
        b = await MediaStream.open(host, **{"source": ToneSource(b_freq), "record_dir": tmp_path, "name": "b",
                                            "rtcp_scale": 0.1, **(b_kw or {})})
    except BaseException:
        await a.close()
        raise
    a.apply(MediaConfig(payload_type=payload_type, ptime=ptime, remote=(host, b.local_port)))
    b.apply(MediaConfig(payload_type=payload_type, ptime=ptime, remote=(host, a.local_port)))
    return a, b


async def test_a_recording_that_cannot_be_written_stops_the_recording_not_the_media(tmp_path):
    """b's recordings go to a full disk (/dev/full): its recording stops with the reason in
    the report, while both directions keep flowing and a's recording still hears b's tone."""
    for kind in ("rx", "tx", "mix"):
        (tmp_path / f"b-{kind}.wav").symlink_to("/dev/full")
    a, b = await talking_pair(V4, tmp_path)
    await asyncio.sleep(2.0)
    final_b = await b.close()
    final_a = await a.close()
    assert final_b["errors"]["recording"] in {f"recording {str(tmp_path / f'b-{kind}.wav')!r} stopped: No space "
                                              "left on device" for kind in ("rx", "tx", "mix")}, final_b["errors"]
    assert final_b["errors"]["callback"] == 0 and final_a["errors"]["recording"] is None
    for final in (final_a, final_b):
        assert 90 <= final["sent"]["packets"] <= 115 and final["received"]["packets"] >= 85, final
    rx, _ = read_wav(a.recordings["rx"])
    assert tone_share(rx, 660.0) >= 0.95


@pytest.mark.parametrize(("host", "payload_type"), [(V4, 0), (V4, 8), (V6, 0)],
                         ids=["ipv4-PCMU", "ipv4-PCMA", "ipv6-PCMU"])
async def test_two_streams_hear_each_other(tmp_path, host, payload_type):
    if host == V6 and not ipv6_available():
        pytest.skip("no IPv6 loopback here")
    a, b = await talking_pair(host, tmp_path, payload_type=payload_type)
    assert a.local_port % 2 == 0 and a.rtcp_port == a.local_port + 1
    await asyncio.sleep(2.0)
    live = a.report()
    assert live["final"] is False and live["received"]["packets"] > 50
    final_a = await a.close()
    await asyncio.sleep(0.1)  # let a's RTCP BYE arrive
    final_b = await b.close()

    for stream, final, hears, says in ((a, final_a, 660.0, 440.0), (b, final_b, 440.0, 660.0)):
        rx, rx_seconds = read_wav(stream.recordings["rx"])
        tx, tx_seconds = read_wav(stream.recordings["tx"])
        _, mix_seconds = read_wav(stream.recordings["mix"])
        share = tone_share(rx, hears)
        assert share >= 0.95, f"{stream.name} heard {hears} Hz in only {share:.0%} of frames"
        assert tone_share(tx, says) >= 0.99
        assert abs(rx_seconds - final["duration"]) < 0.1, (rx_seconds, final["duration"])
        assert abs(tx_seconds - rx_seconds) < 0.001 and abs(mix_seconds - rx_seconds) < 0.001
        assert final["final"] is True
        assert final["codec"] == ("PCMU" if payload_type == 0 else "PCMA")
        assert 95 <= final["sent"]["packets"] <= 115, final["sent"]
        assert final["sent"]["late"] <= 3
        received = final["received"]
        assert received["packets"] >= 90 and received["lost"] == 0 and received["parse_errors"] == 0
        assert received["jitter_ms"] < 10
        # RTCP: the peer's reports reached us, with a round trip time and its view of our stream
        assert final["rtcp"]["sent"] >= 2 and final["rtcp"]["received"] >= 2
        assert final["rtt_ms"] is not None and 0 <= final["rtt_ms"] < 50, final["rtt_ms"]
        peer = final["peer"]
        assert peer["sender_reports"] >= 1
        assert peer["fraction_lost"] == 0 and peer["cumulative_lost"] == 0 and peer["jitter_ms"] < 10
        assert final["quality"] is not None and final["quality"]["mos"] > 4.0
    assert final_a["peer"]["cname"] == b.cname and final_b["peer"]["cname"] == a.cname
    assert final_b["peer"]["bye"] is True  # a closed first: its BYE reached b
    assert final_a["peer"]["ssrc"] == b.ssrc and final_a["received"]["ssrc"] == b.ssrc


async def test_hold_stops_packets_and_resume_restarts_them(tmp_path):
    a, b = await talking_pair(V4, None)
    try:
        await asyncio.sleep(0.5)
        assert b.packets_received > 15
        for direction in ("inactive", "recvonly"):
            a.apply(MediaConfig(direction=direction, remote=(V4, b.local_port)))
            assert not a.sending
            await asyncio.sleep(0.1)  # what was in flight
            before, sent_before = b.packets_received, a.packets_sent
            await asyncio.sleep(0.5)
            assert b.packets_received == before, f"{direction}: packets kept arriving"
            assert a.packets_sent == sent_before
            assert a.packets_received > 0 and a.report()["received"]["packets"] > 0  # a still hears b
            with pytest.raises(RuntimeError, match="does not send"):
                await a.send_dtmf("1")
        a.apply(MediaConfig(direction="sendonly", remote=(V4, b.local_port)))
        before = b.packets_received
        await asyncio.sleep(0.5)
        assert b.packets_received - before > 15
    finally:
        await a.close()
        await b.close()


async def test_mute_sends_silence_and_the_stream_goes_on(tmp_path):
    """While a is muted it sends encoded silence in place of its tone: b receives a packet
    every ptime all along (no loss, no gap in RTP), plays out 1 s of silence between a's
    tone before and after, and a's RFC 4733 digits still go through the mute."""
    a, b = await talking_pair(V4, tmp_path)
    try:
        await asyncio.sleep(1.0)
        a.muted = True
        await asyncio.sleep(0.5)
        await a.send_dtmf("7", 0.1)
        await asyncio.sleep(0.5)
        a.muted = False
        await asyncio.sleep(1.0)
        digit = await asyncio.wait_for(b.dtmf_events.get(), 2)
    finally:
        final_a = await a.close()
        await asyncio.sleep(0.1)
        final_b = await b.close()
    assert digit.digit == "7"
    received = final_b["received"]
    assert received["lost"] == 0 and received["packets"] >= final_a["sent"]["packets"] - 3, (received, final_a)
    rx, _ = read_wav(b.recordings["rx"])
    freqs = dominant_frequencies(rx)
    # the tone, then ~1 s muted (the digit's 0.1 s of events carries no audio either), then the tone
    first, quiet, again, last = longest_silence(freqs)
    assert 0.9 <= (again - quiet) * 0.02 <= 1.15, (first, quiet, again, last)
    assert frame_share(freqs[first:quiet], 440.0) >= 0.95 and frame_share(freqs[again:last + 1], 440.0) >= 0.95
    assert final_b["peer"]["fraction_lost"] == 0


async def test_rfc4733_dtmf_received_in_order(tmp_path):
    heard: list[tuple[str, float]] = []
    a, b = await talking_pair(V4, None, b_kw={"on_dtmf": lambda digit, duration: heard.append((digit, duration))})
    try:
        await asyncio.sleep(0.2)
        await a.send_dtmf("1234#", duration=0.1)
        events = [await asyncio.wait_for(b.dtmf_events.get(), 2.0) for _ in range(5)]
        await asyncio.sleep(0.3)
        assert "".join(e.digit for e in events) == "1234#"
        assert all(e.method == "rfc4733" and 0.08 <= e.duration <= 0.13 for e in events), events
        assert [d for d, _ in heard] == list("1234#")
        assert b.dtmf_events.empty()  # nothing heard twice (e.g. in-band too)
        assert [e["digit"] for e in b.report()["dtmf"]] == list("1234#")
        assert a.report()["sent"]["dtmf"] == 5
        with pytest.raises(ValueError, match="not DTMF"):
            await a.send_dtmf("1x")
        a.apply(MediaConfig(telephone_event=None, remote=(V4, b.local_port)))
        with pytest.raises(RuntimeError, match="telephone-event"):
            await a.send_dtmf("1")
    finally:
        await a.close()
        await b.close()


async def test_injected_loss_shows_in_stats_rtcp_and_mos():
    """10 % rx_drop on ~1000 packets (10 ms ptime) against a clean pair run at the same time."""
    lossy = await talking_pair(V4, None, ptime=0.01, b_kw={"rx_drop": 0.1, "seed": 7})
    clean = await talking_pair(V4, None, ptime=0.01)
    try:
        await asyncio.sleep(10.5)
        bad, good = lossy[1].report(), clean[1].report()
        assert bad["received"]["expected"] >= 1000
        assert 0.08 <= bad["received"]["loss"] <= 0.12, bad["received"]
        # drops during the source's probation or after the last packet are no loss (RFC 3550 A.1/A.3)
        assert 0 <= bad["received"]["dropped"] - bad["received"]["lost"] <= 5
        assert good["received"]["lost"] == 0
        assert bad["quality"]["mos"] < good["quality"]["mos"] - 0.3, (bad["quality"], good["quality"])
        # the lossy receiver's RTCP tells the sender about it
        peer_view = lossy[0].report()["peer"]
        assert peer_view["cumulative_lost"] and peer_view["cumulative_lost"] > 50
        assert clean[0].report()["peer"]["cumulative_lost"] == 0
    finally:
        for stream in (*lossy, *clean):
            await stream.close()


async def test_tx_drop_loses_packets_at_the_far_end():
    a, b = await talking_pair(V4, None, a_kw={"tx_drop": 0.2, "seed": 3})
    try:
        await asyncio.sleep(1.5)
        report = b.report()["received"]
        assert a.tx_dropped == a.report()["sent"]["dropped"] > 0
        assert abs(report["lost"] - a.tx_dropped) <= 2, (report, a.tx_dropped)  # in flight at the moment
        assert 0.1 <= report["loss"] <= 0.3, report
    finally:
        await a.close()
        await b.close()


async def test_echo_payload_reflects_payloads_byte_identical():
    echo = await MediaStream.open(V4, echo_payload=True, name="echo")
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((V4, 0))
    sock.setblocking(False)
    try:
        echo.apply(MediaConfig(remote=sock.getsockname()))
        rng = random.Random(1)
        sent = [bytes(rng.getrandbits(8) for _ in range(160)) for _ in range(40)]
        back: list[RTPPacket] = []
        for i, payload in enumerate(sent):
            packet = RTPPacket(0, 1000 + i, 5000 + 160 * i, 0x11223344, payload, marker=i == 0)
            await loop.sock_sendto(sock, packet.to_bytes(), (V4, echo.local_port))
            await asyncio.sleep(0.005)
        deadline = loop.time() + 2.0
        while len(back) < len(sent) and loop.time() < deadline:
            try:
                data = await asyncio.wait_for(loop.sock_recv(sock, 2048), deadline - loop.time())
            except TimeoutError:
                break
            if 128 <= data[0] and not 192 <= data[1] <= 223:  # RTP, not RTCP
                back.append(RTPPacket.parse(data))
        assert [p.payload for p in back] == sent
        assert {p.ssrc for p in back} == {echo.ssrc} and echo.ssrc != 0x11223344
        seqs = [p.sequence_number for p in back]
        assert all((y - x) % 65536 == 1 for x, y in zip(seqs, seqs[1:], strict=False))
        stamps = [p.timestamp for p in back]
        assert all((y - x) % (1 << 32) == 160 for x, y in zip(stamps, stamps[1:], strict=False))
        assert back[0].marker and not any(p.marker for p in back[1:])
    finally:
        sock.close()
        await echo.close()


async def test_echo_mode_sends_back_what_it_hears(tmp_path):
    a = await MediaStream.open(V4, source=ToneSource(440.0), record_dir=tmp_path, name="a")
    b = await MediaStream.open(V4, echo=True, name="b")
    try:
        a.apply(MediaConfig(payload_type=8, remote=(V4, b.local_port)))
        b.apply(MediaConfig(payload_type=8, remote=(V4, a.local_port)))
        await asyncio.sleep(1.5)
    finally:
        await a.close()
        await b.close()
    rx, _ = read_wav(a.recordings["rx"])
    assert tone_share(rx, 440.0) >= 0.95


async def test_pacing_skips_forward_after_a_stalled_loop():
    a, b = await talking_pair(V4, None)
    try:
        await asyncio.sleep(0.5)
        sent = a.packets_sent
        time.sleep(0.3)  # block the event loop: 15 packets' worth
        await asyncio.sleep(0.5)
        assert 12 <= a.late_sent <= 18, a.late_sent
        # no burst: the stall's packets were skipped, not sent late
        assert a.packets_sent - sent <= 0.8 / 0.02 - a.late_sent + 3
        assert b.report()["received"]["lost"] == 0  # skipped, so not lost: the sequence numbers go on
    finally:
        await a.close()
        await b.close()


async def test_streams_of_one_loop_share_one_clock_timer_and_keep_their_own_phase():
    """MediaClock: N streams opened at different moments wake the loop at most once per 1 ms
    batch of due times, not once per stream, and each still sends every 20 ms at its own
    phase: a packet's send time minus its RTP timestamp / 8000 stays put over the second (no
    drift; the median of the first and the last half agree), and the streams' phases stay
    spread over the 20 ms cycle."""
    from skinnysip.net.media import MediaClock

    loop = asyncio.get_running_loop()
    clock = MediaClock.of(loop)
    fires = 0
    original = clock._fire

    def counting_fire() -> None:
        nonlocal fires
        fires += 1
        original()

    clock._fire = counting_fire  # type: ignore[method-assign]
    streams = []
    try:
        for _ in range(20):
            streams.append(await MediaStream.open(V4))
            await asyncio.sleep(0.0013)  # 20 phases over ~26 ms (more than one ptime)
        assert len(clock) >= 20
        # per stream: send time - (RTP timestamp - the first one) / 8000, and that first timestamp
        sends: dict[int, list[float]] = {i: [] for i in range(len(streams))}
        first: dict[int, int] = {}
        for i, s in enumerate(streams):
            original_sendto = s._sendto

            def sendto(transport, data, remote, i=i, original_sendto=original_sendto, s=s):
                if transport is s._rtp:
                    first.setdefault(i, int.from_bytes(data[4:8], "big"))
                    elapsed = ((int.from_bytes(data[4:8], "big") - first[i]) % 2**32) / 8000
                    sends[i].append(loop.time() - elapsed)
                original_sendto(transport, data, remote)

            s._sendto = sendto  # type: ignore[method-assign]
        for a, b in zip(streams[0::2], streams[1::2], strict=True):
            a.apply(MediaConfig(remote=(V4, b.local_port)))
            b.apply(MediaConfig(remote=(V4, a.local_port)))
        fires = 0
        await asyncio.sleep(1.0)
        ticks = sum(len(v) for v in sends.values())
        assert ticks >= 20 * 45
        # 20 streams x 50 frames: at most one wake-up per ms of the cycle (and a few more for
        # phases that cross a batch edge), far fewer than one per stream-frame
        assert fires <= 50 * (0.02 / MediaClock.BATCH) * 1.3, (fires, ticks)
        assert fires < ticks / 2
        phases = []
        for offsets in sends.values():
            half = len(offsets) // 2
            assert abs(np.median(offsets[:half]) - np.median(offsets[half:])) <= 0.002  # no drift
            phases.append(float(np.median(offsets)) % 0.02)
        assert np.ptp(phases) >= 0.01  # not all moved onto one tick
    finally:
        clock._fire = original  # type: ignore[method-assign]
        await asyncio.gather(*(s.close() for s in streams))
    await asyncio.sleep(0.05)
    assert len(clock) == 0  # closed streams leave the clock within a ptime


async def test_a_stream_whose_tick_fails_stops_and_the_others_go_on(caplog):
    a, b = await talking_pair(V4, None)
    c = await MediaStream.open(V4, source=ToneSource(440.0), name="c")
    try:
        c.apply(MediaConfig(remote=(V4, b.local_port)))
        await asyncio.sleep(0.2)

        def broken(now: float, n: int):
            raise RuntimeError("recorder disk full")

        c._play_out = broken  # type: ignore[method-assign]
        await asyncio.sleep(0.1)
        stopped = c.packets_sent
        sent = a.packets_sent
        await asyncio.sleep(0.4)
        assert c.callback_errors == 1 and c.packets_sent == stopped
        assert a.packets_sent - sent >= 15  # the shared clock still ticks the others
        assert "media clock stopped" in caplog.text
    finally:
        await asyncio.gather(a.close(), b.close(), c.close())


async def test_bad_arguments():
    with pytest.raises(ValueError, match="IP literal"):
        await MediaStream.open("localhost")
    with pytest.raises(ValueError, match="rx_drop"):
        await MediaStream.open(V4, rx_drop=1.5)
    with pytest.raises(ValueError, match="exclusive"):
        await MediaStream.open(V4, echo=True, echo_payload=True)
    stream = await MediaStream.open(V4)
    try:
        for bad in (MediaConfig(payload_type=18), MediaConfig(ptime=0.1), MediaConfig(direction="sideways"),
                    MediaConfig(telephone_event=42), MediaConfig(remote=("example.com", 4000)),
                    MediaConfig(remote=(V6, 4000))):
            with pytest.raises(ValueError):
                stream.apply(bad)
        # a datagram callback never raises: junk is counted
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            for junk in (b"", b"\x00" * 5, b"\x80" * 3, b"\x80\xc8\x00\x10junk", b"\xff" * 3000):
                s.sendto(junk, (V4, stream.local_port))
                s.sendto(junk, (V4, stream.rtcp_port))
        await asyncio.sleep(0.2)
        report = stream.report()
        assert report["received"]["parse_errors"] >= 3 and report["rtcp"]["parse_errors"] >= 3
        assert report["errors"]["callback"] == 0
    finally:
        await stream.close()
    with pytest.raises(RuntimeError, match="closed"):
        stream.apply(MediaConfig())


def _ints(layer: dict, key: str) -> list[int]:
    out: list[int] = []
    for value in layer.get(key, []):
        out.extend(int(v) for v in (value if isinstance(value, list) else [value]))
    return out


async def test_tshark_decodes_our_rtp_and_rtcp():
    a, b = await talking_pair(V4, None, a_kw={"rtcp_scale": 0.05}, b_kw={"rtcp_scale": 0.05})
    ports = [a.local_port, b.local_port]
    decode_as = [f"udp.port=={p},rtp" for p in ports] + [f"udp.port=={p + 1},rtcp" for p in ports]
    pairs = " or ".join(f"udp portrange {p}-{p + 1}" for p in ports)  # only these two streams
    cap = TsharkCapture(pairs, decode_as=decode_as)
    try:
        cap.start()
        try:
            await asyncio.sleep(0.5)
            await a.send_dtmf("5")
            await asyncio.sleep(0.5)
        finally:
            await a.close()
            await asyncio.sleep(0.1)
            await b.close()
            cap.stop()
    finally:
        cap.stop()
    bad = cap.decode("_ws.malformed || _ws.expert.severity == error", ["frame.number", "_ws.col.Info"])
    assert bad == [], f"tshark flags malformed packets: {bad}"
    rtp = cap.decode("rtp", ["rtp.ssrc", "rtp.p_type", "rtp.marker", "udp.srcport"])
    assert len(rtp) >= 60
    types = {t for layer in rtp for t in _ints(layer, "rtp.p_type")}
    assert {0, 101} <= types, types
    ssrcs = {int(v, 16) for layer in rtp for v in layer.get("rtp.ssrc", [])}
    assert ssrcs == {a.ssrc, b.ssrc}
    assert {int(layer["udp.srcport"][0]) for layer in rtp} == set(ports)  # symmetric RTP
    rtcp = cap.decode("rtcp", ["rtcp.pt", "udp.srcport"])
    kinds = {t for layer in rtcp for t in _ints(layer, "rtcp.pt")}
    assert {200, 202, 203} <= kinds, kinds  # SR, SDES, BYE
    assert {int(layer["udp.srcport"][0]) for layer in rtcp} == {p + 1 for p in ports}


class KeyPresses:
    """A source playing DTMF tones of ``keys`` (0.1 s each, 0.1 s apart), then silence."""

    def __init__(self, keys: str) -> None:
        parts = []
        for key in keys:
            parts += [dtmf(key, 0.1), silence(0.1)]
        self.samples = np.concatenate([silence(0.2), *parts])
        self.position = 0

    def read(self, n: int) -> np.ndarray:
        out = np.zeros(n, dtype=np.int16)
        chunk = self.samples[self.position:self.position + n]
        out[:len(chunk)] = chunk
        self.position += n
        return out


async def test_inband_dtmf_is_detected_when_no_telephone_event_arrives():
    a = await MediaStream.open(V4, source=KeyPresses("159#"), name="a")
    b = await MediaStream.open(V4, name="b")
    try:
        a.apply(MediaConfig(payload_type=8, telephone_event=None, remote=(V4, b.local_port)))
        b.apply(MediaConfig(payload_type=8, telephone_event=None, remote=(V4, a.local_port)))
        events = [await asyncio.wait_for(b.dtmf_events.get(), 3.0) for _ in range(4)]
        assert "".join(e.digit for e in events) == "159#"
        assert {e.method for e in events} == {"inband"}
    finally:
        await a.close()
        await b.close()


async def test_a_stream_with_inband_dtmf_off_hears_rfc4733_only():
    """``inband_dtmf=False`` (a load run's phones): the same key presses as above, with no
    telephone-event, arrive as audio and give no digit; the digits sent as RFC 4733 events
    afterwards are heard."""
    a = await MediaStream.open(V4, source=KeyPresses("159#"), name="a")
    b = await MediaStream.open(V4, name="b", inband_dtmf=False)
    try:
        a.apply(MediaConfig(payload_type=8, telephone_event=None, remote=(V4, b.local_port)))
        b.apply(MediaConfig(payload_type=8, telephone_event=None, remote=(V4, a.local_port)))
        await asyncio.sleep(1.2)  # the four key presses have played
        assert b.packets_received > 40
        assert b.report()["dtmf"] == []
        a.apply(MediaConfig(payload_type=8, telephone_event=101, remote=(V4, b.local_port)))
        b.apply(MediaConfig(payload_type=8, telephone_event=101, remote=(V4, a.local_port)))
        await a.send_dtmf("7", duration=0.1)
        event = await asyncio.wait_for(b.dtmf_events.get(), 3.0)
        assert (event.digit, event.method) == ("7", "rfc4733")
    finally:
        await a.close()
        await b.close()


async def test_rtcp_mux_and_a_wav_file_source(tmp_path):
    """RFC 5761: RTCP on the RTP port both ways; a 44.1 kHz stereo WAV file is what b hears."""
    path = tmp_path / "tone.wav"
    t = np.arange(44100) / 44100
    left = np.round(0.4 * 32767 * np.sin(2 * np.pi * 1000 * t)).astype("<i2")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(2)
        w.setsampwidth(2)
        w.setframerate(44100)
        w.writeframes(np.repeat(left[:, None], 2, axis=1).tobytes())
    a = await MediaStream.open(V4, source=WavSource(path), name="a", rtcp_scale=0.1)
    b = await MediaStream.open(V4, record_dir=tmp_path, name="b", rtcp_scale=0.1)
    try:
        a.apply(MediaConfig(remote=(V4, b.local_port), rtcp_mux=True))
        b.apply(MediaConfig(remote=(V4, a.local_port), rtcp_mux=True))
        await asyncio.sleep(1.5)
        for stream in (a, b):
            report = stream.report()
            assert report["rtcp"]["received"] >= 1 and report["rtt_ms"] is not None, report["rtcp"]
            assert report["received"]["parse_errors"] == 0
    finally:
        await a.close()
        await b.close()
    rx, _ = read_wav(b.recordings["rx"])
    assert tone_share(rx, 1000.0) >= 0.95


async def test_stun_on_the_media_ports_is_counted_apart():
    """STUN binding requests at a stream's RTP and RTCP ports (as linphonec's mediastreamer and
    ICE agents send them) are counted under ``received.stun``, not as parse errors, and the
    call goes on (RFC 7983 §7 demultiplexing)."""
    binding = struct.pack("!HH", 0x0001, 8) + b"\x21\x12\xa4\x42" + bytes(range(12)) \
        + struct.pack("!HH", 0x8022, 4) + b"test"  # Binding request with a SOFTWARE attribute
    a, b = await talking_pair(V4, None)
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.sendto(binding, (V4, b.local_port))
            s.sendto(binding, (V4, b.rtcp_port))
            await asyncio.sleep(1.0)
        report = b.report()
        assert report["received"]["stun"] == 2, report["received"]
        assert report["received"]["parse_errors"] == 0 and report["rtcp"]["parse_errors"] == 0
        assert report["received"]["packets"] >= 40 and report["received"]["lost"] == 0
    finally:
        await a.close()
        await b.close()
