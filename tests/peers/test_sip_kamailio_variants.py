"""Digest against other server behaviours a real Kamailio can be set to: a stale nonce
(RFC 7616 §3.3 stale=true), no qop at all (RFC 2069 compatibility), and a proxy that
challenges INVITE with 407 and relays it (record-routed) to a SIPp UAS.

qop=auth-int is not tested against Kamailio: its auth module (5.6, api.c
auth_check_response) hashes an uninitialised H(entity-body) buffer, so no client can pass
it. auth-int is covered by the unit tests' RFC formula checks instead."""

from __future__ import annotations

import pytest
from sip_peers import KamailioPeer, kamailio, sipp_uas

from skinnysip.probes.sip import ProbeRequest, digest_auth, invite

pytestmark = pytest.mark.peer


def _request(peer: KamailioPeer, transport: str = "udp", **kw: object) -> ProbeRequest:
    base: dict[str, object] = dict(
        host=peer.host, port=peer.port(transport), transport=transport, username="alice",
        password=peer.users["alice"], domain=peer.realm, timeout=5.0, ca_file=peer.ca_file,
    )
    base.update(kw)
    return ProbeRequest(**base)  # type: ignore[arg-type]


def _sent(result: object, method: str) -> list[str]:
    return [m.raw for m in result.exchange if m.direction == "sent" and m.raw.startswith(method)]  # type: ignore[attr-defined]


async def test_digest_auth_without_qop_rfc2069() -> None:
    with kamailio("MD5", qop="none") as peer:
        result = await digest_auth(_request(peer, "tcp"))
        assert result.success, result.error
        assert result.authenticated, result.status_code
        assert result.challenge_code == 401
        authorized = [r for r in _sent(result, "REGISTER") if "Authorization:" in r]
        assert authorized, "no authenticated REGISTER was sent"
        assert result.qop is None
        assert "qop=" not in authorized[0] and "nc=" not in authorized[0]
        wrong = await digest_auth(_request(peer, "tcp", password="not-it"))
        assert wrong.success and not wrong.authenticated and wrong.status_code == 403


async def test_stale_nonce_is_retried_once_with_the_new_nonce() -> None:
    with kamailio("SHA-256", stale_once=True) as peer:
        result = await digest_auth(_request(peer, "udp"))
        assert result.success, result.error
        assert result.authenticated, [m.summary for m in result.exchange]
        received = [m.raw for m in result.exchange if m.direction == "received"]
        assert any("stale=true" in r.lower() for r in received if r.startswith("SIP/2.0 401"))
        authorized = [r for r in _sent(result, "REGISTER") if "Authorization:" in r]
        # answered stale, then re-sent with the challenge's (new) nonce and accepted; then the
        # authenticated un-REGISTER that leaves nothing behind
        assert len(authorized) >= 2
        assert all("algorithm=SHA-256" in r for r in authorized)


@pytest.mark.parametrize("transport", ["udp", "tcp", "tls"])
async def test_invite_through_proxy_407_then_answered(transport: str) -> None:
    # SIPp here has no TLS: over TLS the proxy relays to SIPp over UDP.
    hop_transport = "udp" if transport == "tls" else transport
    with sipp_uas("answer-record-route", hop_transport) as uas:
        hop = f"sip:{uas.host}:{uas.port};transport={hop_transport}"
        with kamailio("MD5", next_hop=hop) as peer:
            req = _request(peer, transport, to_uri="bob", timeout=8.0)
            result = await invite(req)
            assert result.success, result.error
            assert result.status_code == 200, [m.summary for m in result.exchange]
            if transport == "tls":
                assert result.tls is not None and result.tls.verified
            sent = [m.raw for m in result.exchange if m.direction == "sent"]
            invites = [r for r in sent if r.startswith("INVITE")]
            assert len({r for r in invites}) >= 2
            assert "Proxy-Authorization:" in invites[-1]
            acks = [r for r in sent if r.startswith("ACK")]
            assert len(acks) >= 2  # one for the 407 (hop-by-hop), one for the 200 (end to end)
            byes = [r for r in sent if r.startswith("BYE")]
            assert byes, "no BYE after the 200"
            assert "Route:" in byes[0], "the BYE must follow the Record-Route set"
            stats = uas.finish(timeout=10)
            assert stats.successful_calls == 1 and stats.failed_calls == 0, stats.log[-2000:]
