"""The SIP API's request validation and error shape through the ASGI test client: every bad
input is a 400 naming the field, never a 500; an unreachable server is a 200 with success
false. (The peer tests run the same API over real HTTP against Kamailio.)"""

from __future__ import annotations

import socket

import pytest
from fastapi.testclient import TestClient

from peertools import free_port
from skinnysip.api.app import create_app
from skinnysip.api.sip_routes import SIPBody, SIPDigestBody, SIPSBody
from skinnysip.probes.sip import check_host

OPS = ["options", "register", "invite", "digest-auth"]


@pytest.fixture(scope="module")
def client() -> TestClient:
    return TestClient(create_app())


def closed_udp_port() -> int:
    return free_port(socket.SOCK_DGRAM)


@pytest.mark.parametrize("family", ["sip", "sips"])
@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "host"),
        ({"port": 5060}, "host"),
        ({"host": "127.0.0.1", "port": 0}, "port"),
        ({"host": "127.0.0.1", "port": 70000}, "port"),
        ({"host": "127.0.0.1", "port": "5060"}, "port"),
        ({"host": "127.0.0.1", "port": 50.5}, "port"),
        ({"host": "127.0.0.1", "port": True}, "port"),
        ({"host": 12345}, "host"),
        ({"host": "bad host!"}, "host"),
        ({"host": "-leading.example"}, "host"),
        ({"host": "a" * 300}, "host"),
        ({"host": "[::1"}, "host"),
        ({"host": "999.1.1.1"}, "host"),
        ({"host": "127.0.0.1", "timeout": 10_000_000}, "timeout"),
        ({"host": "127.0.0.1", "timeout": 1}, "timeout"),
        ({"host": "127.0.0.1", "timeout": "fast"}, "timeout"),
        ({"host": "127.0.0.1", "t1": 1}, "t1"),
        ({"host": "127.0.0.1", "username": "al ice"}, "username"),
        ({"host": "127.0.0.1", "username": "a@b"}, "username"),
        ({"host": "127.0.0.1", "uri": "http://example.com"}, "uri"),
        ({"host": "127.0.0.1", "uri": "sip:a b@x"}, "uri"),
        ({"host": "127.0.0.1", "from": "not a user"}, "from"),
        ({"host": "127.0.0.1", "toUri": "bob"}, "toUri"),
        ({"host": "127.0.0.1", "domain": "ex ample"}, "domain"),
        ({"host": "127.0.0.1", "domain": "example.com:99999"}, "domain"),
        ({"host": "127.0.0.1", "tlsVerify": "no"}, "tlsVerify"),
        ({"host": "127.0.0.1", "password": "x" * 5000}, "password"),
    ],
)
def test_bad_input_is_400_naming_the_field(client: TestClient, family: str, op: str, body: dict, field: str) -> None:
    if op == "digest-auth":
        body = {"username": "alice", "password": "pw", **body}
    r = client.post(f"/api/{family}/{op}", json=body)
    assert r.status_code == 400, r.text
    answer = r.json()
    assert answer["success"] is False
    assert answer["error"].startswith(field + ":") or f"{field}:" in answer["error"], answer


@pytest.mark.parametrize("family", ["sip", "sips"])
def test_digest_auth_needs_username_and_password(client: TestClient, family: str) -> None:
    r = client.post(f"/api/{family}/digest-auth", json={"host": "127.0.0.1", "password": "x"})
    assert r.status_code == 400 and r.json()["error"].startswith("username:")
    r = client.post(f"/api/{family}/digest-auth", json={"host": "127.0.0.1", "username": "alice"})
    assert r.status_code == 400 and r.json()["error"].startswith("password:")
    r = client.post(f"/api/{family}/digest-auth", json={"host": "127.0.0.1", "username": "a", "password": "", "expires": 99999})
    assert r.status_code == 400 and r.json()["error"].startswith("expires:")


@pytest.mark.parametrize("raw", [b"{not json", b"", b"[1, 2]", b'"host"', b"null", b"\xff\xfe"])
def test_invalid_json_is_400(client: TestClient, raw: bytes) -> None:
    r = client.post("/api/sip/options", content=raw, headers={"content-type": "application/json"})
    assert r.status_code == 400, r.text
    assert r.json()["success"] is False and r.json()["error"]


def test_transport_only_known_values(client: TestClient) -> None:
    r = client.post("/api/sip/options", json={"host": "127.0.0.1", "transport": "sctp"})
    assert r.status_code == 400 and r.json()["error"].startswith("transport:")


def test_from_and_from_uri_conflict_is_400(client: TestClient) -> None:
    r = client.post("/api/sip/invite", json={"host": "127.0.0.1", "from": "alice", "fromUri": "sip:bob@x"})
    assert r.status_code == 400 and "not both" in r.json()["error"]


def test_unreachable_server_is_200_success_false(client: TestClient) -> None:
    port = closed_udp_port()
    r = client.post("/api/sip/options", json={"host": "127.0.0.1", "port": port, "timeout": 1000})
    assert r.status_code == 200
    body = r.json()
    assert body["success"] is False
    assert body["error"] == f"connection refused by 127.0.0.1:{port}/udp (ICMP port unreachable)"
    assert body["server"] == f"127.0.0.1:{port}" and body["transport"] == "udp"
    assert body["statusCode"] is None and body["allowedMethods"] is None
    assert [m["summary"].split()[0] for m in body["exchange"]] == ["OPTIONS"]


def test_unresolvable_host_is_200_success_false(client: TestClient) -> None:
    r = client.post("/api/sips/register", json={"host": "no-such-host.invalid", "timeout": 2000})
    assert r.status_code == 200
    body = r.json()
    assert body["success"] is False and "cannot resolve 'no-such-host.invalid'" in body["error"]
    assert body["server"] == "no-such-host.invalid:5061" and body["transport"] == "tls"


def test_closed_tcp_port_every_operation(client: TestClient) -> None:
    port = free_port()
    for op in OPS:
        body = {"host": "127.0.0.1", "port": port, "transport": "tcp", "username": "alice", "password": "pw"}
        r = client.post(f"/api/sip/{op}", json=body)
        assert r.status_code == 200, r.text
        answer = r.json()
        assert answer["success"] is False and answer["error"] == f"connection refused by 127.0.0.1:{port}/tcp"
        assert "pw" not in r.text.replace("\"password\"", "")


@pytest.mark.parametrize("family", ["sip", "sips"])
def test_method_field_must_match_the_route(client: TestClient, family: str) -> None:
    """The reference's SIPS options route ignored its `method` field and always sent OPTIONS:
    a mismatching method is refused naming the route to use; a matching one is accepted."""
    port = free_port()
    base = {"host": "127.0.0.1", "port": port, "timeout": 1000}
    if family == "sip":
        base["transport"] = "tcp"
    r = client.post(f"/api/{family}/options", json={**base, "method": "REGISTER"})
    assert r.status_code == 400
    assert r.json() == {"success": False,
                        "error": "method: this route sends OPTIONS, not 'REGISTER'; use the /register route"}
    r = client.post(f"/api/{family}/invite", json={**base, "method": "BYE"})
    assert r.status_code == 400 and r.json()["error"] == "method: this route sends INVITE, not 'BYE'"
    ok = client.post(f"/api/{family}/options", json={**base, "method": "options"})
    assert ok.status_code == 200 and ok.json()["error"].startswith("connection refused")
    assert ok.json()["exchange"] == []


def test_unknown_fields_refused_and_defaults() -> None:
    with pytest.raises(ValueError, match="whatever"):
        SIPBody.model_validate({"host": "[::1]", "method": "OPTIONS", "whatever": 1})
    b = SIPBody.model_validate({"host": "[::1]", "method": "OPTIONS"})
    probe = b.to_probe()
    assert probe.host == "::1" and probe.port is None and probe.effective_port == 5060
    assert probe.transport == "udp" and probe.scheme == "sip" and probe.timeout == 10.0 and probe.t1 == 0.5
    s = SIPSBody.model_validate({"host": "sip.example.com", "fromUri": "sips:alice@example.com", "t1": 250})
    sp = s.to_probe()
    assert (sp.port, sp.transport, sp.scheme, sp.timeout, sp.t1) == (5061, "tls", "sips", 15.0, 0.25)
    assert sp.from_uri == "sips:alice@example.com" and sp.tls_verify is True
    tls = SIPBody.model_validate({"host": "example.com", "transport": "tls", "to": "bob"}).to_probe()
    assert tls.effective_port == 5061 and tls.to_uri == "bob"
    d = SIPDigestBody.model_validate({"host": "h.example", "username": "alice", "password": "", "expires": 0})
    assert d.to_probe().expires == 0 and d.to_probe().password == ""


def test_check_host() -> None:
    assert check_host("example.com") == "example.com"
    assert check_host("[2001:db8::1]") == "2001:db8::1"
    assert check_host("2001:db8::1") == "2001:db8::1"
    for bad in ("", "a..b", "exa_mple.com", "1.2.3", "[example.com]", "host:5060"):
        with pytest.raises(ValueError):
            check_host(bad)


def test_openapi_lists_the_eight_routes(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    for family in ("sip", "sips"):
        for op in OPS:
            assert "post" in paths[f"/api/{family}/{op}"]
