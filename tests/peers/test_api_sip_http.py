"""The SIP API over its real HTTP interface (uvicorn on a free port, driven with httpx)
against Kamailio and SIPp, including bad inputs; and the CLI's --json equals the API body."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator

import httpx
import pytest
from click.testing import CliRunner
from sip_peers import KamailioPeer

from peertools import free_port, wait_tcp
from skinnysip.cli import app as cli_app

pytestmark = pytest.mark.peer


@pytest.fixture(scope="module")
def api() -> Iterator[httpx.Client]:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "skinnysip.api.app:app", "--host", "127.0.0.1", "--port", str(port),
         "--log-level", "warning"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        wait_tcp("127.0.0.1", port, 20)
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
            yield client
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


COMMON_FIELDS = {"success", "error", "server", "transport", "statusCode", "statusText", "headers", "raw",
                 "serverAgent", "rtt", "callId", "tls", "exchange"}


@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_options_over_http(api: httpx.Client, kamailio_md5: KamailioPeer, transport: str) -> None:
    r = api.post("/api/sip/options", json={"host": "127.0.0.1", "port": kamailio_md5.port(transport),
                                           "transport": transport, "timeout": 5000})
    assert r.status_code == 200
    body = r.json()
    assert COMMON_FIELDS | {"allowedMethods", "supportedExtensions", "contentTypes"} <= set(body)
    assert body["success"] is True and body["error"] is None
    assert body["statusCode"] == 200 and body["allowedMethods"][0] == "INVITE"
    assert body["headers"][0]["name"] == "Via"
    assert body["exchange"][0]["direction"] == "sent" and body["exchange"][1]["direction"] == "received"
    assert body["exchange"][0]["transport"] == transport
    assert body["tls"] is None


def test_digest_auth_over_http_sip_and_sips(api: httpx.Client, kamailio_sha256: KamailioPeer) -> None:
    peer = kamailio_sha256
    ok = api.post("/api/sip/digest-auth", json={"host": "127.0.0.1", "port": peer.udp_port,
                                                "username": "alice", "password": "wonderland"}).json()
    assert ok["success"] and ok["authenticated"] and ok["algorithm"] == "SHA-256" and ok["challengeCode"] == 401
    assert ok["nonce"].endswith("...") and ok["qop"] == "auth" and ok["noAuthRequired"] is False
    assert "wonderland" not in json.dumps(ok)
    wrong = api.post("/api/sip/digest-auth", json={"host": "127.0.0.1", "port": peer.tcp_port, "transport": "tcp",
                                                   "username": "alice", "password": "x"}).json()
    assert wrong["success"] is True and wrong["authenticated"] is False and wrong["statusCode"] == 403
    # /api/sips: the test CA is not in the server's trust store → clear verification error
    untrusted = api.post("/api/sips/digest-auth", json={"host": "127.0.0.1", "port": peer.tls_port,
                                                        "username": "alice", "password": "wonderland"}).json()
    assert untrusted["success"] is False and "certificate verification failed" in untrusted["error"]
    insecure = api.post("/api/sips/digest-auth", json={"host": "127.0.0.1", "port": peer.tls_port, "tlsVerify": False,
                                                       "username": "alice", "password": "wonderland"}).json()
    assert insecure["authenticated"] is True, insecure["error"]
    assert insecure["tls"]["verified"] is False and insecure["tls"]["subjectAltNames"]
    sent = [m for m in insecure["exchange"] if m["direction"] == "sent"]
    assert sent[0]["summary"].startswith("REGISTER sips:")


def test_register_over_http(api: httpx.Client, kamailio_md5: KamailioPeer) -> None:
    body = api.post("/api/sips/register", json={"host": "127.0.0.1", "port": kamailio_md5.tls_port,
                                                "tlsVerify": False, "fromUri": "sips:alice@127.0.0.1"}).json()
    assert body["success"] and body["requiresAuth"] is True and body["authRealm"] == kamailio_md5.realm
    assert body["authAlgorithms"] == ["MD5"] and body["authQop"] == ["auth"]


def test_invite_over_http(api: httpx.Client, sipp_uas) -> None:
    with sipp_uas("answer", "udp") as peer:
        body = api.post("/api/sip/invite", json={"host": peer.host, "port": peer.port, "from": "alice",
                                                 "to": "bob", "timeout": 5000}).json()
        stats = peer.finish()
    assert body["success"] and body["statusCode"] == 200 and body["cleanup"] == "ack+bye"
    assert body["provisional"] == [180] and body["cancelled"] is False
    assert stats.successful_calls == 1 and stats.failed_calls == 0


@pytest.mark.parametrize(
    ("path", "payload", "field"),
    [
        ("/api/sip/options", {}, "host"),
        ("/api/sip/options", {"host": "127.0.0.1", "port": 99999}, "port"),
        ("/api/sip/register", {"host": "127.0.0.1", "port": "x"}, "port"),
        ("/api/sips/invite", {"host": "$(reboot)"}, "host"),
        ("/api/sips/options", {"host": "127.0.0.1", "timeout": 3600000}, "timeout"),
        ("/api/sip/digest-auth", {"host": "127.0.0.1", "username": ["alice"], "password": "x"}, "username"),
        ("/api/sip/options", {"host": "127.0.0.1", "localIp": "alice"}, "localIp"),
        ("/api/sip/options", {"host": "127.0.0.1", "localPort": 65536}, "localPort"),
    ],
)
def test_bad_inputs_over_http(api: httpx.Client, path: str, payload: dict, field: str) -> None:
    r = api.post(path, json=payload)
    assert r.status_code == 400
    assert r.json()["success"] is False and r.json()["error"].startswith(f"{field}:")


def test_options_over_http_from_a_local_ip(api: httpx.Client, kamailio_md5: KamailioPeer) -> None:
    r = api.post("/api/sip/options", json={"host": "127.0.0.1", "port": kamailio_md5.udp_port, "localIp": "127.0.0.2"})
    body = r.json()
    assert r.status_code == 200 and body["success"] is True, body
    assert {m["local"].split(":")[0] for m in body["exchange"]} == {"127.0.0.2"}
    # an address the API's host lacks: the probe's error, nothing sent
    r = api.post("/api/sip/options", json={"host": "127.0.0.1", "port": kamailio_md5.udp_port,
                                           "localIp": "192.0.2.1"})
    assert r.status_code == 200 and r.json()["success"] is False
    assert r.json()["error"] == "cannot send from 192.0.2.1:0/udp: not an address of this host"
    assert r.json()["exchange"] == []


def test_invalid_json_over_http(api: httpx.Client) -> None:
    r = api.post("/api/sip/options", content=b'{"host": ', headers={"content-type": "application/json"})
    assert r.status_code == 400 and r.json()["success"] is False


def test_unreachable_over_http(api: httpx.Client) -> None:
    port = free_port()
    r = api.post("/api/sip/options", json={"host": "127.0.0.1", "port": port, "transport": "tcp", "timeout": 1000})
    assert r.status_code == 200
    assert r.json() == {**r.json(), "success": False, "error": f"connection refused by 127.0.0.1:{port}/tcp"}


def test_cli_json_has_the_api_shape(api: httpx.Client, kamailio_md5: KamailioPeer) -> None:
    port = kamailio_md5.udp_port
    http_body = api.post("/api/sip/options", json={"host": "127.0.0.1", "port": port}).json()
    cli = CliRunner().invoke(cli_app, ["sip", "options", "127.0.0.1", "--port", str(port), "--json"])
    assert cli.exit_code == 0
    cli_body = json.loads(cli.stdout)
    assert list(cli_body) == list(http_body)  # same keys, same order
    for key in ("success", "error", "server", "transport", "statusCode", "statusText", "allowedMethods",
                "supportedExtensions", "contentTypes", "serverAgent", "tls"):
        assert cli_body[key] == http_body[key], key
    assert [m["summary"] for m in cli_body["exchange"]] == [m["summary"] for m in http_body["exchange"]]
