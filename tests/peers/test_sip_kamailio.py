"""The SIP probes against a real Kamailio registrar (Digest MD5 and SHA-256) over UDP, TCP and
TLS: digest-auth with right and wrong passwords, OPTIONS, REGISTER, TLS verification, CLI."""

from __future__ import annotations

import json
import re

import pytest
from click.testing import CliRunner
from sip_peers import KamailioPeer

from skinnysip.cli import app as cli_app
from skinnysip.probes.sip import ProbeRequest, digest_auth, invite, options, register
from skinnysip.sip.message import parse_message

pytestmark = pytest.mark.peer

TRANSPORTS = ["udp", "tcp", "tls"]


@pytest.fixture(params=["MD5", "SHA-256"])
def kamailio_peer(request: pytest.FixtureRequest) -> KamailioPeer:
    name = "kamailio_md5" if request.param == "MD5" else "kamailio_sha256"
    return request.getfixturevalue(name)


def probe_request(peer: KamailioPeer, transport: str, **kw) -> ProbeRequest:
    kw.setdefault("timeout", 5.0)
    return ProbeRequest(
        host=peer.host, port=peer.port(transport), transport=transport, ca_file=peer.ca_file, **kw
    )


def sent_and_received(result) -> list[tuple[str, str]]:
    return [(m.direction, m.summary) for m in result.exchange]


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_digest_auth_right_password(kamailio_peer: KamailioPeer, transport: str) -> None:
    user, password = "alice", kamailio_peer.users["alice"]
    result = await digest_auth(probe_request(kamailio_peer, transport, username=user, password=password))
    assert result.success, result.error
    assert result.error is None
    assert result.authenticated is True
    assert result.no_auth_required is False
    assert result.status_code == 200
    assert result.challenge_code == 401
    assert result.realm == kamailio_peer.realm
    assert result.algorithm == kamailio_peer.algorithm
    assert result.qop == "auth"
    assert result.nonce and result.nonce.endswith("...") and len(result.nonce) == 19
    assert result.unregistered is True  # nothing left behind
    assert result.server_agent == kamailio_peer.server_header
    assert result.rtt is not None and result.rtt > 0
    flow = sent_and_received(result)
    assert [d for d, _ in flow] == ["sent", "received"] * 3
    assert [s.split()[0] for _, s in flow] == ["REGISTER", "401", "REGISTER", "200", "REGISTER", "200"]
    # challenge answered on the same Call-ID and From tag, CSeq + 1, new branch
    first, second, third = (parse_message(m.raw.encode()) for m in result.exchange if m.direction == "sent")
    assert first.call_id == second.call_id == third.call_id == result.call_id
    assert first.from_tag == second.from_tag
    assert second.cseq == (first.cseq[0] + 1, "REGISTER")
    assert first.top_via.branch != second.top_via.branch
    assert "Authorization" not in first.headers
    authorization = second.headers.get("Authorization")
    assert authorization is not None and f'algorithm={kamailio_peer.algorithm}' in authorization
    assert f'uri="{second.uri}"' in authorization
    assert second.headers.get("Expires") == "60" and third.headers.get("Expires") == "0"
    # Via and Contact carry the socket's real address, never the target's
    m = result.exchange[0]
    assert first.top_via.host == "127.0.0.1" and f"{first.top_via.host}:{first.top_via.port}" == m.local
    assert first.top_via.rport is True
    assert m.local in (first.headers.get("Contact") or "")
    assert m.local != m.remote
    assert password not in json.dumps(result.to_api())
    if transport == "tls":
        assert result.tls is not None and result.tls.verified is True
    else:
        assert result.tls is None


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_digest_auth_wrong_password(kamailio_peer: KamailioPeer, transport: str) -> None:
    result = await digest_auth(probe_request(kamailio_peer, transport, username="alice", password="not-it"))
    assert result.success is True and result.error is None
    assert result.authenticated is False
    assert result.challenge_code == 401
    assert result.status_code == 403  # the server's status, reported as is
    assert result.status_text == "Forbidden"
    assert result.unregistered is None
    assert [m.summary.split()[0] for m in result.exchange] == ["REGISTER", "401", "REGISTER", "403"]


async def test_digest_auth_bob_over_sips_uris(kamailio_sha256: KamailioPeer) -> None:
    """sips: Request-URI; the digest uri stays sips: (a defect of the reference, fixed)."""
    peer = kamailio_sha256
    result = await digest_auth(probe_request(peer, "tls", scheme="sips", username="bob", password=peer.users["bob"]))
    assert result.authenticated, result.error
    sent = [parse_message(m.raw.encode()) for m in result.exchange if m.direction == "sent"]
    assert sent[1].uri.startswith("sips:")
    assert f'uri="{sent[1].uri}"' in (sent[1].headers.get("Authorization") or "")
    assert (sent[0].headers.get("Contact") or "").startswith("<sips:")


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_options_parsed_fields(kamailio_md5: KamailioPeer, transport: str) -> None:
    result = await options(probe_request(kamailio_md5, transport))
    assert result.success, result.error
    assert result.status_code == 200 and result.status_text == "OK"
    assert result.allowed_methods == ["INVITE", "ACK", "CANCEL", "OPTIONS", "BYE", "REGISTER"]
    assert result.supported_extensions == ["path", "outbound", "gruu"]
    assert result.content_types == ["application/sdp", "text/plain"]
    assert result.server_agent == kamailio_md5.server_header
    names = [h.name for h in result.headers]
    assert names[0] == "Via" and "Allow" in names and "Server" in names
    assert result.raw and result.raw.startswith("SIP/2.0 200 OK\r\n")
    assert result.transport == transport
    assert result.server == f"127.0.0.1:{kamailio_md5.port(transport)}"
    assert [m.direction for m in result.exchange] == ["sent", "received"]
    sent = parse_message(result.exchange[0].raw.encode())
    assert sent.method == "OPTIONS" and sent.top_via.transport == transport.upper()
    assert sent.headers.get("Max-Forwards") == "70"
    assert (sent.headers.get("User-Agent") or "").startswith("skinnysip/")


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_register_probe_reports_challenge(kamailio_peer: KamailioPeer, transport: str) -> None:
    result = await register(probe_request(kamailio_peer, transport, username="alice"))
    assert result.success, result.error
    assert result.status_code == 401
    assert result.requires_auth is True
    assert result.auth_scheme == "Digest"
    assert result.auth_realm == kamailio_peer.realm
    assert result.auth_algorithms == [kamailio_peer.algorithm]
    assert result.auth_qop == ["auth"]
    sent = parse_message(result.exchange[0].raw.encode())
    assert sent.headers.get("Expires") == "0"
    assert result.exchange[0].local in (sent.headers.get("Contact") or "")
    www = [h.value for h in result.headers if h.name == "WWW-Authenticate"]
    assert len(www) == 1 and www[0].startswith("Digest ")


async def test_tls_verification_failure_is_reported(kamailio_md5: KamailioPeer) -> None:
    req = probe_request(kamailio_md5, "tls", username="alice", password="wonderland")
    req.ca_file = None  # system store: the self-signed certificate is not trusted
    result = await digest_auth(req)
    assert result.success is False
    assert result.error is not None and "certificate verification failed" in result.error
    assert "self-signed" in result.error
    assert result.exchange == [] and result.status_code is None


async def test_tls_with_ca_file_reports_certificate(kamailio_md5: KamailioPeer) -> None:
    result = await options(probe_request(kamailio_md5, "tls"))
    assert result.success, result.error
    tls = result.tls
    assert tls is not None and tls.verified is True
    assert tls.version in ("TLSv1.2", "TLSv1.3") and tls.cipher
    assert tls.subject == "CN=skinnysip test server" and tls.issuer == tls.subject
    assert set(tls.subject_alt_names) == {"DNS:localhost", "IP:127.0.0.1"}
    assert tls.not_after and re.match(r"\d{4}-\d\d-\d\dT", tls.not_after)


async def test_tls_insecure_succeeds_unverified(kamailio_md5: KamailioPeer) -> None:
    req = probe_request(kamailio_md5, "tls", username="alice", password="wonderland")
    req.ca_file, req.tls_verify = None, False
    result = await digest_auth(req)
    assert result.authenticated, result.error
    assert result.tls is not None and result.tls.verified is False
    assert result.tls.subject == "CN=skinnysip test server"


async def test_tls_by_host_name_verifies(kamailio_md5: KamailioPeer) -> None:
    """Probing by name (SNI + host name check against the certificate's DNS:localhost)."""
    req = probe_request(kamailio_md5, "tls")
    req.host = "localhost"
    ok = await options(req)
    assert ok.success, ok.error
    assert ok.tls is not None and ok.tls.verified


def test_cli_auth_over_tls_prints_authenticated(kamailio_md5: KamailioPeer) -> None:
    peer = kamailio_md5
    args = ["sip", "auth", "127.0.0.1", "--transport", "tls", "--port", str(peer.tls_port),
            "--ca-file", peer.ca_file, "--user", "alice", "--password", peer.users["alice"]]
    result = CliRunner().invoke(cli_app, args)
    assert result.exit_code == 0, result.output
    assert "authenticated" in result.output and "not authenticated" not in result.output
    assert "verified=True" in result.output
    assert "→" in result.output and "←  401 Unauthorized" in result.output
    assert peer.users["alice"] not in result.output


def test_cli_auth_json_and_exit_codes(kamailio_md5: KamailioPeer, monkeypatch: pytest.MonkeyPatch) -> None:
    peer = kamailio_md5
    base = ["sip", "auth", "127.0.0.1", "--port", str(peer.udp_port), "--user", "alice", "--json"]
    monkeypatch.setenv("SKINNYSIP_PASSWORD", peer.users["alice"])
    ok = CliRunner().invoke(cli_app, base)
    assert ok.exit_code == 0, ok.output
    body = json.loads(ok.stdout)
    assert body["success"] is True and body["authenticated"] is True and body["error"] is None
    assert peer.users["alice"] not in ok.stdout
    monkeypatch.setenv("SKINNYSIP_PASSWORD", "wrong")
    refused = CliRunner().invoke(cli_app, base)
    assert refused.exit_code == 1
    body = json.loads(refused.stdout)
    assert body["success"] is True and body["authenticated"] is False and body["statusCode"] == 403
    insecure = CliRunner().invoke(cli_app, ["sip", "options", "127.0.0.1", "-t", "tls", "-p", str(peer.tls_port), "-k"])
    assert insecure.exit_code == 0 and "verified=False" in insecure.output
    untrusted = CliRunner().invoke(cli_app, ["sip", "options", "127.0.0.1", "-t", "tls", "-p", str(peer.tls_port)])
    assert untrusted.exit_code == 3 and "certificate verification failed" in untrusted.output


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_invite_rejected_is_acked(kamailio_md5: KamailioPeer, transport: str) -> None:
    """Kamailio answers INVITE with 404: the transaction ACKs it (same branch, To tag of the 404)."""
    result = await invite(probe_request(kamailio_md5, transport, to_uri="nobody", timeout=3))
    assert result.success, result.error
    assert result.status_code == 404 and result.cleanup == "ack" and result.cancelled is False
    assert [m.summary.split()[0] for m in result.exchange] == ["INVITE", "404", "ACK"]
    inv, ack = (parse_message(m.raw.encode()) for m in result.exchange if m.direction == "sent")
    assert ack.top_via.branch == inv.top_via.branch and ack.uri == inv.uri
    assert ack.to_tag == parse_message(result.exchange[1].raw.encode()).to_tag
