"""DTLS-SRTP in the media layer (RFC 5764, RFC 7983): two of our media streams on 127.0.0.1
run OpenSSL's handshake over their own RTP/RTCP ports and hear each other; a certificate that
does not match, a peer that never answers and forged records end as they should. Audio is
proven by listening: the dominant frequency of each 20 ms frame of the recordings."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import Any

import pytest
from test_phone_baresip import share_of

from skinnysip.net.dtls import EARLY_RESENDS, SRTP_PROFILES, Certificate, DTLSAssociation
from skinnysip.net.media import DTLSConfig, MediaConfig, MediaStream
from skinnysip.rtp.tones import ToneSource

pytestmark = [pytest.mark.peer, pytest.mark.timeout(60)]

CERT_A, CERT_B, CERT_C = Certificate.generate("a"), Certificate.generate("b"), Certificate.generate("c")


def fp(cert: Certificate) -> tuple[tuple[str, str], ...]:
    return (("sha-256", cert.fingerprint()),)


def run(a: DTLSAssociation, b: DTLSAssociation, rounds: int = 6) -> None:
    """Carry datagrams between two associations until neither sends."""
    out = a.start()
    for _ in range(rounds):
        back = [d for x in out for d in b.datagram_received(x)]
        out = [d for x in back for d in a.datagram_received(x)]
        if not out and not back:
            return


@pytest.mark.parametrize("mux", [False, True])
async def test_two_streams_key_srtp_by_dtls_and_hear_each_other(tmp_path: Path, mux: bool) -> None:
    """The answerer (active, the DTLS client) starts at once; its ClientHello reaches the
    offerer before the offerer knows its role — it is kept and answered when the answer comes
    (RFC 5763 §5). Without rtcp-mux RTCP gets an association of its own (RFC 5764 §4.1)."""
    a = await MediaStream.open("127.0.0.1", source=ToneSource(440), record_dir=tmp_path, name="a", rtcp_scale=0.1)
    b = await MediaStream.open("127.0.0.1", source=ToneSource(660), record_dir=tmp_path, name="b", rtcp_scale=0.1)
    events: list[tuple[str, str]] = []
    a.on_dtls = lambda component, association: events.append((component, association.state))
    try:
        b.apply(MediaConfig(remote=("127.0.0.1", a.local_port), rtcp_mux=mux, dtls=DTLSConfig("client", fp(CERT_A), CERT_B)))
        await asyncio.sleep(0.3)  # the answer is on its way
        a.apply(MediaConfig(remote=("127.0.0.1", b.local_port), rtcp_mux=mux, dtls=DTLSConfig("server", fp(CERT_B), CERT_A)))
        await asyncio.sleep(1.5)
        # a re-INVITE with the same roles and fingerprints keeps the association (no new handshake)
        received = a.report()["dtls"]["rtp"]["datagrams_received"]
        a.apply(MediaConfig(remote=("127.0.0.1", b.local_port), rtcp_mux=mux, dtls=DTLSConfig("server", fp(CERT_B), CERT_A)))
        await asyncio.sleep(0.5)
        assert a.report()["dtls"]["rtp"]["datagrams_received"] == received and a.report()["dtls"]["rtp"]["state"] == "connected"
    finally:
        ra, rb = await a.close(), await b.close()
    components = {"rtp"} if mux else {"rtp", "rtcp"}
    assert set(ra["dtls"]) == set(rb["dtls"]) == components
    assert sorted(events) == sorted((c, "connected") for c in components)
    assert ra["dtls"]["rtp"]["role"] == "server" and rb["dtls"]["rtp"]["role"] == "client"
    assert ra["srtp"]["suite"] == rb["srtp"]["suite"] == "AES_CM_128_HMAC_SHA1_80"
    assert ra["srtp"]["auth_failures"] == rb["srtp"]["auth_failures"] == 0
    assert ra["rtcp"]["received"] >= 2 and rb["rtcp"]["received"] >= 2 and ra["rtcp"]["parse_errors"] == 0
    # b had ~0.3 s of audio before a could key; a keys as soon as it learns its role, though a
    # packet or an RTCP report due within the handshake's round trip (the RTCP component's
    # own, without mux) may still find no keys. None of them went in the clear (b's SRTP
    # would have counted an authentication failure).
    assert rb["unkeyed"] > 0 and ra["unkeyed"] < rb["unkeyed"]
    assert share_of(Path(ra["recordings"]["rx"]), 660) >= 0.95
    assert share_of(Path(rb["recordings"]["rx"]), 440) >= 0.95


async def test_a_certificate_that_does_not_match_the_fingerprint_keys_nothing(tmp_path: Path) -> None:
    """b's SDP said CERT_C's fingerprint, b shows CERT_B: a refuses (RFC 5763 §6.6), plays
    nothing, and its close_notify ends b's association too."""
    a = await MediaStream.open("127.0.0.1", source=ToneSource(440), record_dir=tmp_path, name="a")
    b = await MediaStream.open("127.0.0.1", source=ToneSource(660), record_dir=tmp_path, name="b")
    failures: list[str | None] = []
    a.on_dtls = lambda component, association: failures.append(association.error)
    try:
        a.apply(MediaConfig(remote=("127.0.0.1", b.local_port), rtcp_mux=True, dtls=DTLSConfig("client", fp(CERT_C), CERT_A)))
        b.apply(MediaConfig(remote=("127.0.0.1", a.local_port), rtcp_mux=True, dtls=DTLSConfig("server", fp(CERT_A), CERT_B)))
        await asyncio.sleep(1.0)
        during_a, during_b = a.report(), b.report()
    finally:
        await a.close()
        await b.close()
    assert during_a["dtls"]["rtp"]["state"] == "failed" and during_a["srtp"] is None
    assert failures and failures[0] is not None and "does not match its SDP a=fingerprint" in failures[0]
    assert CERT_B.fingerprint() in failures[0]  # the message names what the certificate really is
    assert during_a["received"]["packets"] == 0 and during_a["unkeyed"] > 0
    assert during_b["dtls"]["rtp"]["state"] == "closed"


async def test_a_peer_that_never_answers_fails_the_handshake_in_time() -> None:
    silent = await MediaStream.open("127.0.0.1")  # no DTLS configured: it keeps what comes, answers nothing
    a = await MediaStream.open("127.0.0.1")
    try:
        a.apply(MediaConfig(remote=("127.0.0.1", silent.local_port), rtcp_mux=True,
                            dtls=DTLSConfig("client", fp(CERT_B), CERT_A, handshake_timeout=1.6)))
        await asyncio.sleep(1.0)
        assert a.report()["dtls"]["rtp"]["state"] == "handshaking"
        await asyncio.sleep(1.2)
        report = a.report()
    finally:
        await a.close()
        await silent.close()
    dtls = report["dtls"]["rtp"]
    assert dtls["state"] == "failed" and dtls["error"] == "no DTLS handshake within 1.6 s"
    assert dtls["datagrams_sent"] >= 2  # the ClientHello and OpenSSL's retransmission after 1 s


def test_forged_records_before_the_handshake_are_dropped_not_fatal() -> None:
    """Application data, garbage or a truncated record before the ClientHello (anyone can send
    to a media port) neither fail the association nor reach OpenSSL (RFC 6347 §4.1.2.7)."""
    server = DTLSAssociation("server", fp(CERT_A), CERT_B)
    forged = [bytes([23, 254, 253]) + bytes(8) + b"\x00\x05hello", bytes([22]) + os.urandom(5),
              bytes([24, 254, 253]) + bytes(10), bytes([22, 254, 253]) + os.urandom(60)]
    for data in forged:
        assert server.datagram_received(data) == [] and server.state == "handshaking"
    assert server.bad_datagrams == 3
    client = DTLSAssociation("client", fp(CERT_B), CERT_A)
    run(client, server)
    assert client.state == server.state == "connected"
    assert client.keys is not None and server.keys is not None
    assert (client.keys.tx_key, client.keys.rx_key) == (server.keys.rx_key, server.keys.tx_key)


@pytest.mark.parametrize("profile", list(SRTP_PROFILES))
def test_each_profile_gives_keys_of_its_length(profile: str) -> None:
    client = DTLSAssociation("client", fp(CERT_B), CERT_A, profiles=[profile])
    server = DTLSAssociation("server", fp(CERT_A), CERT_B)
    run(client, server)
    suite, key, salt = SRTP_PROFILES[profile]
    assert client.profile == server.profile == profile
    assert client.keys is not None and client.keys.suite == suite and len(client.keys.tx_key) == key + salt
    assert client.keys.tx_key != client.keys.rx_key


def test_bad_arguments_are_value_errors() -> None:
    for kwargs in ({"role": "both"}, {"profiles": ["SRTP_NULL_NULL"]}, {"handshake_timeout": 0}):
        args: dict[str, Any] = {"role": "client", "fingerprints": fp(CERT_A), **kwargs}
        with pytest.raises(ValueError):
            DTLSAssociation(**args)
    with pytest.raises(ValueError, match="exclusive"):
        from skinnysip.net.media import SRTPConfig
        MediaConfig(srtp=SRTPConfig("AES_CM_128_HMAC_SHA1_80", bytes(30), bytes(30)),
                    dtls=DTLSConfig("client", fp(CERT_A))).validate()
    with pytest.raises(ValueError, match="sha-256"):
        CERT_A.fingerprint("md5")


def test_a_client_sends_its_clienthello_again_early_while_nothing_came_back() -> None:
    """A ClientHello lost to an offerer that was not ready for it (baresip 1.0 drops one that
    beats our 200 to it) is sent again after 0.1 s, not after OpenSSL's 1 s; the duplicate is
    harmless to the server, and the early resends stop once anything came back."""
    client = DTLSAssociation("client", fp(CERT_B), CERT_A)
    first = client.start()
    assert first and client.timeout() is not None and client.timeout() <= EARLY_RESENDS[0]  # type: ignore[operator]
    time.sleep(EARLY_RESENDS[0])
    again = client.handle_timeout()
    assert again == first
    server = DTLSAssociation("server", fp(CERT_A), CERT_B)
    flight = server.datagram_received(first[0])
    assert flight and server.datagram_received(again[0]) in ([], flight)  # a duplicate: at most the same flight
    out = [d for x in flight for d in client.datagram_received(x)]
    time.sleep(EARLY_RESENDS[1])
    assert client.handle_timeout() == []  # the server answered: no more early resends
    for _ in range(4):
        back = [d for x in out for d in server.datagram_received(x)]
        out = [d for x in back for d in client.datagram_received(x)]
    assert client.state == server.state == "connected"
