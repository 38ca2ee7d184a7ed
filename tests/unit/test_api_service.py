"""The HTTP API as a service (issue 11): unknown fields, 405 + Allow, bearer token (HTTP and
WebSocket), no CORS, 413, 429 + Retry-After (rate and concurrency), response cap, the target
policy as 403 (loopback targets only on the real network; refused non-loopback targets inside a
network namespace with only loopback), passwords never in a response body or the access log."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator

import httpx
import pytest
from fastapi.testclient import TestClient
from starlette.websockets import WebSocketDisconnect

from peertools import free_port
from skinnysip.api.app import create_app
from skinnysip.api.guard import ServiceSettings
from skinnysip.policy import TargetPolicy

MARK = "Pw-marker-7f3a9c"  # a password that must never come back


def silent_udp() -> socket.socket:
    """A bound UDP socket on 127.0.0.1 that never answers (a probe to it waits its timeout)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    return s


# every POST route with a JSON body and a minimal valid body for it
def _bodies(app_paths: dict) -> list[tuple[str, dict]]:
    minimal = {
        "/api/sip/digest-auth": {"host": "127.0.0.1", "username": "u", "password": "p"},
        "/api/sips/digest-auth": {"host": "127.0.0.1", "username": "u", "password": "p"},
        "/api/phones": {"aor": "sip:alice@127.0.0.1"},
        "/api/phones/{phone_id}/calls": {"target": "bob"},
        "/api/phones/{phone_id}/messages": {"target": "bob", "text": "hi"},
        "/api/phones/{phone_id}/watches": {"target": "bob"},
        "/api/phones/{phone_id}/presence": {"basic": "open"},
        "/api/phones/{phone_id}/calls/{call_id}/dtmf": {"digits": "1"},
        "/api/phones/{phone_id}/calls/{call_id}/transfer": {"target": "bob"},
        "/api/phones/{phone_id}/calls/{call_id}/reject": {"code": 486},
        "/api/pcap": {"exchange": []},
        "/api/sccp/call-setup": {"host": "127.0.0.1", "dialNumber": "600"},
        "/api/sip/request": {"host": "127.0.0.1", "method": "NOTIFY"},
        "/api/sips/request": {"host": "127.0.0.1", "method": "NOTIFY"},
        "/api/sip/usrloc": {"host": "127.0.0.1", "username": "u", "password": "p"},
        "/api/sips/usrloc": {"host": "127.0.0.1", "username": "u", "password": "p"},
    }
    out = []
    for path, item in app_paths.items():
        post = item.get("post")
        if post is None or "requestBody" not in post:
            continue
        body = minimal.get(path, {"host": "127.0.0.1"})
        out.append((path.replace("{phone_id}", "nosuchphone").replace("{call_id}", "1"), body))
    return out


@pytest.fixture(scope="module")
def client() -> TestClient:
    return TestClient(create_app())


def test_unknown_field_is_400_naming_it_on_every_route(client: TestClient) -> None:
    routes = _bodies(client.get("/openapi.json").json()["paths"])
    assert len(routes) >= 15
    for path, body in routes:
        r = client.post(path, json={**body, "prot": 5099})
        assert r.status_code == 400, (path, r.text)
        assert r.json() == {"success": False, "error": "prot: unknown field"}, path
    # the issue's example: before, this probed 5060 and succeeded
    r = client.post("/api/sip/options", json={"host": "127.0.0.1", "prot": 5099})
    assert r.status_code == 400 and "prot" in r.json()["error"]


def test_openapi_documents_the_real_errors(client: TestClient) -> None:
    doc = client.get("/openapi.json").json()
    assert doc["components"]["schemas"]["Error"]["properties"]["success"]["enum"] == [False]
    for path, item in doc["paths"].items():
        for method, op in item.items():
            assert "422" not in op["responses"], (path, method)
            if path != "/api/health":
                assert {"400", "401", "413", "429"} <= set(op["responses"]), (path, method)
    for path in ("/api/sip/options", "/api/sccp/probe", "/api/phones"):
        assert "403" in doc["paths"][path]["post"]["responses"]
    host = doc["components"]["schemas"]["SIPBodyOptions"]["properties"]["host"]
    assert {"format": "ipv4", "type": "string"} in host["anyOf"]


def test_405_carries_allow(client: TestClient) -> None:
    r = client.get("/api/sip/options")
    assert r.status_code == 405 and r.headers["allow"] == "POST"
    r = client.post("/api/phones/x")
    assert r.status_code == 405 and set(r.headers["allow"].replace(" ", "").split(",")) == {"GET", "HEAD", "DELETE"}
    r = client.put("/api/phones")
    assert r.status_code == 405 and set(r.headers["allow"].replace(" ", "").split(",")) == {"GET", "HEAD", "POST"}


def test_no_cors(client: TestClient) -> None:
    r = client.get("/api/health", headers={"Origin": "https://evil.example"})
    assert r.status_code == 200 and not any(k.lower().startswith("access-control") for k in r.headers)
    r = client.options("/api/sip/options", headers={"Origin": "https://evil.example",
                                                    "Access-Control-Request-Method": "POST"})
    assert r.status_code == 405 and not any(k.lower().startswith("access-control") for k in r.headers)


def test_bearer_token_http_and_websocket() -> None:
    token = "t0ken-" + "x" * 20
    c = TestClient(create_app(ServiceSettings(token=token)))
    for headers in ({}, {"Authorization": "Bearer wrong-token-xxxxxxxxxxxx"}, {"Authorization": token}):
        r = c.post("/api/sip/options", json={"host": "127.0.0.1"}, headers=headers)
        assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Bearer")
        assert r.json()["success"] is False
    assert c.get("/api/phones").status_code == 401
    ok = c.get("/api/phones", headers={"Authorization": f"Bearer {token}"})
    assert ok.status_code == 200
    # open: health, the page, the docs and the spec
    for path in ("/api/health", "/", "/docs", "/openapi.json"):
        assert c.get(path).status_code == 200, path
    # WebSocket: refused before accept without the token; the subprotocol carries it
    with pytest.raises(WebSocketDisconnect) as refused:
        with c.websocket_connect("/api/phones/nosuch/events") as ws:
            ws.receive_text()
    assert refused.value.code == 1008
    with pytest.raises(WebSocketDisconnect) as unknown:
        with c.websocket_connect("/api/phones/nosuch/events", subprotocols=[f"skinnysip.bearer.{token}"]) as ws:
            assert ws.accepted_subprotocol == f"skinnysip.bearer.{token}"
            ws.receive_text()
    assert unknown.value.code == 4404  # past the guard: the route's own answer


def test_server_beyond_loopback_generates_a_token_and_restricts() -> None:
    s = ServiceSettings.for_listen("0.0.0.0", environ={})
    assert s.token and s.token_generated and s.policy is not None and s.policy.restrict and s.rate
    assert ServiceSettings.for_listen("::", environ={"SKINNYSIP_TOKEN": "given-token-0123456789"}).token == \
        "given-token-0123456789"
    local = ServiceSettings.for_listen("127.0.0.1", environ={})
    assert local.token is None and local.policy is None and local.rate is None
    with pytest.raises(ValueError):
        ServiceSettings(token="short")


def test_413_on_declared_and_streamed_bodies() -> None:
    c = TestClient(create_app(ServiceSettings(max_body=1000)))
    r = c.post("/api/sip/options", content=b"x" * 1001, headers={"Content-Type": "application/json"})
    assert r.status_code == 413 and r.json()["success"] is False

    def chunks() -> Iterator[bytes]:
        for _ in range(20):
            yield b" " * 100

    r = c.post("/api/sip/options", content=chunks(), headers={"Content-Type": "application/json"})
    assert r.status_code == 413
    assert c.post("/api/sip/options", json={"host": "[::1"}).status_code == 400  # small: through


def test_100mb_body_is_refused_before_it_is_read() -> None:
    """A real server: headers announcing 100 MB get 413 at once, without sending the body."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "skinnysip", "serve", "--port", str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        _wait_health(port)
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            s.sendall(b"POST /api/sip/options HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                      b"Content-Length: 100000000\r\n\r\n{")
            reply = s.recv(4096)
        assert reply.startswith(b"HTTP/1.1 413"), reply[:200]
    finally:
        proc.terminate()
        proc.wait(10)


def _wait_health(port: int, headers: dict[str, str] | None = None) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/api/health", timeout=1, headers=headers).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise AssertionError("server did not start")


def test_rate_limit_429_with_retry_after() -> None:
    c = TestClient(create_app(ServiceSettings(rate="5/minute")))
    codes = [c.post("/api/sip/options", json={"host": "[::1"}).status_code for _ in range(7)]
    assert codes[:5] == [400] * 5 and codes[5:] == [429, 429]
    r = c.post("/api/sip/options", json={"host": "[::1"})
    assert r.status_code == 429 and 1 <= int(r.headers["retry-after"]) <= 60
    assert c.get("/api/health").status_code == 200  # exempt


async def test_concurrent_operations_per_client_and_total() -> None:
    sock = silent_udp()
    port = sock.getsockname()[1]
    body = {"host": "127.0.0.1", "port": port, "timeout": 1500}
    for settings in (ServiceSettings(client_operations=2), ServiceSettings(total_operations=2)):
        app = create_app(settings)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
            results = await asyncio.gather(*(c.post("/api/sip/options", json=body) for _ in range(3)))
            codes = sorted(r.status_code for r in results)
            assert codes == [200, 200, 429], codes
            refused = next(r for r in results if r.status_code == 429)
            assert refused.headers["retry-after"] == "1" and "operations" in refused.json()["error"]
            assert (await c.post("/api/sip/options", json={**body, "timeout": 100})).status_code == 200
    sock.close()


def test_response_cap() -> None:
    c = TestClient(create_app(ServiceSettings(max_response=100)))
    r = c.get("/api/phones")
    assert r.status_code == 200  # small
    r = c.get("/openapi.json")  # not under /api/: not capped
    assert r.status_code == 200
    big = TestClient(create_app(ServiceSettings(max_response=20)))
    r = big.get("/api/phones")
    assert r.status_code == 500 and "exceeds the server's cap of 20 bytes" in r.json()["error"]


def test_policy_refuses_loopback_unless_allowed_as_403() -> None:
    sock = silent_udp()
    port = sock.getsockname()[1]
    exposed = TestClient(create_app(ServiceSettings(policy=TargetPolicy())))
    for host in ("127.0.0.1", "2130706433", "0x7f.1", "::ffff:127.0.0.1", "localhost", "0177.0.0.1"):
        r = exposed.post("/api/sip/options", json={"host": host, "port": port, "timeout": 200})
        if r.status_code == 400:  # the host check refuses some forms outright
            continue
        assert r.status_code == 403, (host, r.text)
        assert "loopback" in r.json()["error"]
    for path, body in (("/api/sccp/probe", {"host": "127.0.0.1", "port": port, "timeout": 200}),
                       ("/api/phones", {"aor": "sip:alice@127.0.0.1", "register": False}),
                       ("/api/phones", {"aor": "sip:alice@example.com", "registrar": "127.0.0.1:5060"}),
                       ("/api/phones", {"protocol": "sccp", "host": "localhost"})):
        r = exposed.post(path, json=body)
        assert r.status_code == 403 and "loopback" in r.json()["error"], (path, r.text)
    allowed = TestClient(create_app(ServiceSettings(policy=TargetPolicy(allow=["127.0.0.1"]))))
    r = allowed.post("/api/sip/options", json={"host": "127.0.0.1", "port": port, "timeout": 200})
    assert r.status_code == 200 and r.json()["success"] is False  # ran: the silent socket timed out
    sock.close()


NETNS_SCRIPT = r"""
import json, sys
from fastapi.testclient import TestClient
from skinnysip.api.app import create_app
from skinnysip.api.guard import ServiceSettings
app = create_app(ServiceSettings.for_listen("0.0.0.0", environ={}))
c = TestClient(app)
auth = {"Authorization": "Bearer " + app.state.settings.token}
out = {}
for host in ("169.254.169.254", "0xa9fea9fe", "0xa9.0xfe.0xa9.0xfe", "::ffff:169.254.169.254",
             "10.0.0.1", "fe80::1", "224.0.0.1", "100.100.100.200", "192.0.2.1"):
    r = c.post("/api/sip/options", json={"host": host, "port": 5060, "timeout": 300}, headers=auth)
    out[host] = [r.status_code, r.json().get("error", "")]
r = c.post("/api/sccp/probe", json={"host": "0xa9fea9fe", "timeout": 300}, headers=auth)
out["sccp"] = [r.status_code, r.json().get("error", "")]
out["noauth"] = c.post("/api/sip/options", json={"host": "192.0.2.1"}).status_code
print(json.dumps(out))
"""


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("unshare") is None, reason="needs root and unshare")
def test_refused_non_loopback_targets_end_to_end_in_a_namespace_with_only_loopback() -> None:
    """An exposed server's policy end to end, inside `unshare --net` (only lo, up): nothing
    can leave the machine even if the policy had a bug."""
    import json

    code = f"ip link set lo up && exec {sys.executable} -c '{NETNS_SCRIPT}'"
    proc = subprocess.run(["unshare", "--net", "sh", "-c", code], capture_output=True, text=True, timeout=90)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    for host, why in (("169.254.169.254", "metadata"), ("0xa9fea9fe", "metadata"),
                      ("0xa9.0xfe.0xa9.0xfe", "metadata"), ("::ffff:169.254.169.254", "metadata"),
                      ("10.0.0.1", "private"), ("fe80::1", "link-local"), ("224.0.0.1", "multicast"),
                      ("100.100.100.200", "metadata")):
        assert out[host][0] == 403 and why in out[host][1], (host, out[host])
    assert out["192.0.2.1"][0] == 200  # a public address is allowed (and unreachable in here)
    assert out["sccp"][0] == 403 and "metadata" in out["sccp"][1]
    assert out["noauth"] == 401


def test_passwords_never_in_responses_or_the_access_log() -> None:
    """Every route that takes a password, valid and invalid requests, over a real server with
    its access log: the password appears in no response body and no log line."""
    sock = silent_udp()
    udp = sock.getsockname()[1]
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "skinnysip", "serve", "--port", str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    bodies: list[str] = []
    try:
        _wait_health(port)
        base = f"http://127.0.0.1:{port}"
        requests = [
            ("/api/sip/options", {"host": "127.0.0.1", "port": udp, "timeout": 300, "password": MARK}),
            ("/api/sip/digest-auth", {"host": "127.0.0.1", "port": udp, "timeout": 300, "username": "alice",
                                      "password": MARK}),
            ("/api/sips/digest-auth", {"host": "127.0.0.1", "port": udp, "timeout": 300, "username": "alice",
                                       "password": MARK}),
            ("/api/sip/digest-auth", {"host": "127.0.0.1", "username": "alice", "password": MARK * 30}),
            ("/api/sip/digest-auth", {"host": "bad host", "username": "alice", "password": MARK}),
            ("/api/sip/digest-auth", {"host": "127.0.0.1", "username": "alice", "password": [MARK]}),
            ("/api/sip/digest-auth", {"host": "127.0.0.1", "username": MARK, "password": MARK, "x": MARK}),
            ("/api/phones", {"aor": "sip:alice@127.0.0.1", "password": MARK, "register": False}),
            ("/api/phones", {"aor": "sip:alice@127.0.0.1", "password": MARK * 30}),
            ("/api/phones", {"aor": "nope", "password": MARK}),
        ]
        with httpx.Client(base_url=base, timeout=30) as c:
            for path, body in requests:
                r = c.post(path, json=body)
                assert r.status_code < 500, (path, r.text)
                bodies.append(r.text)
            bodies.append(c.post("/api/sip/options", content=b'{"password": "' + MARK.encode() + b'"',
                                 headers={"Content-Type": "application/json"}).text)
            listed = c.get("/api/phones")
            bodies.append(listed.text)
            for phone in listed.json()["phones"]:
                assert phone["account"]["hasPassword"] is True
                bodies.append(c.get(f"/api/phones/{phone['id']}").text)
                bodies.append(c.delete(f"/api/phones/{phone['id']}").text)
    finally:
        proc.terminate()
        log = proc.communicate(timeout=15)[0].decode(errors="replace")
        sock.close()
    assert "POST /api/sip/digest-auth" in log  # the access log was on
    assert all(MARK not in b for b in bodies), [b for b in bodies if MARK in b][:1]
    assert MARK not in log


SERVE_SCRIPT = r"""
set -u
ip link set lo up
"$PY" -m skinnysip serve --host 0.0.0.0 --port 18081 $EXTRA > "$OUT/serve.log" 2>&1 &
server=$!
for _ in $(seq 1 150); do
  curl -s -m 1 -o /dev/null http://127.0.0.1:18081/api/health && break
  sleep 0.2
done
token=$(sed -n 's/^bearer token: \([^ ]*\).*/\1/p' "$OUT/serve.log")
code() { curl -s -m 20 -o "$OUT/body" -w '%{http_code}' "$@"; }
echo "health $(code http://127.0.0.1:18081/api/health)"
echo "noauth $(code http://127.0.0.1:18081/api/phones)"
echo "auth $(code -H "Authorization: Bearer $token" http://127.0.0.1:18081/api/phones)"
echo "probe $(code -H "Authorization: Bearer $token" -H 'Content-Type: application/json' \
  -d '{"host": "127.0.0.1", "port": 9, "timeout": 300}' http://127.0.0.1:18081/api/sip/options) $(cat "$OUT/body")"
kill "$server"
wait "$server"
"""


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("unshare") is None or shutil.which("curl") is None,
                    reason="needs root, unshare and curl")
@pytest.mark.parametrize("extra", ["", "--allow 127.0.0.1"])
def test_serve_beyond_loopback_prints_a_token_and_refuses_loopback_unless_allowed(extra: str, tmp_path) -> None:
    """`skinnysip serve --host 0.0.0.0` inside a namespace with only loopback: it prints a
    generated token; /api/ needs it (health does not); a probe of 127.0.0.1 is a 403 naming
    loopback unless --allow 127.0.0.1 (then the probe runs: port 9 refuses, a 200 result)."""
    env = {**os.environ, "PY": sys.executable, "OUT": str(tmp_path), "EXTRA": extra}
    proc = subprocess.run(["unshare", "--net", "bash", "-c", SERVE_SCRIPT], env=env, capture_output=True,
                          text=True, timeout=90)
    log = (tmp_path / "serve.log").read_text()
    assert "bearer token: " in log and "Traceback" not in log, log[-2000:]
    lines = dict(line.split(" ", 1) for line in proc.stdout.strip().splitlines())
    assert lines["health"] == "200" and lines["noauth"] == "401" and lines["auth"] == "200", proc.stdout
    status, body = lines["probe"].split(" ", 1)
    if extra:
        assert status == "200" and '"success":false' in body, body
    else:
        assert status == "403" and "loopback" in body, body


def test_exposed_server_reads_no_file_a_client_names(tmp_path) -> None:
    """caFile names a file on the server: beyond loopback it is refused before the disk is
    touched (no existence oracle); on loopback a missing file is a 400 as before."""
    exposed = TestClient(create_app(ServiceSettings(client_files=False)))
    assert ServiceSettings.for_listen("0.0.0.0", environ={}).client_files is False
    for path, body in (("/api/sip/options", {"host": "127.0.0.1", "caFile": "/etc/passwd"}),
                       ("/api/phones", {"aor": "sip:a@127.0.0.1", "caFile": "/etc/passwd", "register": False})):
        r = exposed.post(path, json=body)
        assert r.status_code == 400 and r.json()["error"].startswith("caFile: ") and "beyond loopback" in r.json()["error"]
    local = TestClient(create_app())
    r = local.post("/api/sip/options", json={"host": "127.0.0.1", "caFile": str(tmp_path / "none.pem")})
    assert r.status_code == 400 and "no such file" in r.json()["error"]
