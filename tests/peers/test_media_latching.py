"""Latching (RFC 7362 §4) in the media stream: a stream whose SDP remote is unreachable (the
private address of a far end behind a NAT) sends to where the far end's RTP and RTCP come
from; a source that ``latch_refusal`` refuses (a stranger racing the far end: RTP bleed) is
not latched to, and the real far end still is. Real sockets on loopback addresses."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from test_media_stream import read_wav, tone_share

from peertools import free_port
from skinnysip.net.media import MediaConfig, MediaStream
from skinnysip.rtp.tones import ToneSource

pytestmark = [pytest.mark.peer, pytest.mark.timeout(30)]


async def test_latching_onto_the_far_ends_source(tmp_path: Path) -> None:
    unreachable = ("127.0.0.1", free_port())  # what the far end's SDP says
    ours = await MediaStream.open("127.0.0.1", source=ToneSource(440.0), name="ours")
    far = await MediaStream.open("127.0.0.2", source=ToneSource(660.0), record_dir=tmp_path, name="far")
    stranger = await MediaStream.open("127.0.0.3", source=ToneSource(1000.0), name="stranger")
    refused: list[str] = []

    def refusal(ip: str) -> str | None:
        if ip != "127.0.0.2":
            refused.append(ip)
            return "not the far end's signalling address"
        return None

    try:
        ours.latch, ours.latch_refusal = True, refusal
        ours.apply(MediaConfig(remote=unreachable, rtcp_mux=False))
        stranger.apply(MediaConfig(remote=("127.0.0.1", ours.local_port)))  # it sends first
        await asyncio.sleep(0.3)
        assert ours.latched is None and "127.0.0.3" in refused
        stranger.apply(MediaConfig(direction="inactive"))
        far.apply(MediaConfig(remote=("127.0.0.1", ours.local_port)))
        await asyncio.sleep(2.0)
        assert ours.latched == ("127.0.0.2", far.local_port)
        assert ours.config.remote == ours.latched
        assert far.packets_received > 50  # our RTP reaches the far end now
        # a new offer/answer starts latching again from what its SDP says
        ours.apply(MediaConfig(remote=unreachable))
        assert ours.latched is None and ours.config.remote == unreachable
        await asyncio.sleep(0.3)
        assert ours.latched == ("127.0.0.2", far.local_port)
    finally:
        for stream in (ours, far, stranger):
            await stream.close()
    samples, _ = read_wav(far.recordings["rx"])
    assert tone_share(samples, 440.0) >= 0.8  # what the far end heard is ours


async def test_no_latching_unless_asked() -> None:
    unreachable = ("127.0.0.1", free_port())
    ours = await MediaStream.open("127.0.0.1", source=ToneSource(440.0))
    far = await MediaStream.open("127.0.0.2", source=ToneSource(660.0))
    try:
        ours.apply(MediaConfig(remote=unreachable))
        far.apply(MediaConfig(remote=("127.0.0.1", ours.local_port)))
        await asyncio.sleep(0.5)
        assert ours.packets_received > 5 and ours.latched is None and far.packets_received == 0
    finally:
        await ours.close()
        await far.close()
