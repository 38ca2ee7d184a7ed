"""The live-phone API through the ASGI test client: validation (400 naming the field, never
500), unknown ids (404), refused actions and limits (409), idle phones closed, the event
WebSocket, and every phone closed at shutdown. Phones here never leave loopback: they do
not register, or their registrar is a closed local port. (The peer tests do the real calls.)"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.websockets import WebSocketDisconnect

from peertools import free_port
from skinnysip.api import phone_routes
from skinnysip.api.app import create_app

AOR = "sip:alice@127.0.0.1"
LOCAL = {"aor": AOR, "register": False, "password": "s3cret-pw"}  # no registrar: nothing is sent


@pytest.fixture
def app() -> FastAPI:
    return create_app()


@pytest.fixture
def client(app: FastAPI) -> Iterator[TestClient]:
    # The context manager keeps one event loop (and runs the lifespan): phones live across requests.
    with TestClient(app) as c:
        yield c


def closed_udp_target() -> str:
    return f"sip:nobody@127.0.0.1:{free_port(socket.SOCK_DGRAM)}"


def new_phone(client: TestClient, **fields: Any) -> dict[str, Any]:
    r = client.post("/api/phones", json={**LOCAL, **fields})
    assert r.status_code == 201, r.text
    return r.json()  # type: ignore[no-any-return]


def assert_400(r: Any, field: str) -> None:
    assert r.status_code == 400, r.text
    body = r.json()
    assert body["success"] is False and body["error"].startswith(f"{field}:"), body
    assert "Value error" not in body["error"], body  # our words, not pydantic's wrapper


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "aor"),
        ({"aor": 5}, "aor"),
        ({"aor": "alice"}, "aor"),
        ({"aor": "sip:127.0.0.1"}, "aor"),
        ({"aor": "tel:+15551234"}, "aor"),
        ({"aor": "sip:al ice@127.0.0.1"}, "aor"),
        ({"aor": AOR, "password": "x" * 300}, "password"),
        ({"aor": AOR, "authUser": "a@b"}, "authUser"),
        ({"aor": AOR, "registrar": "bad host"}, "registrar"),
        ({"aor": AOR, "registrar": "127.0.0.1:70000"}, "registrar"),
        ({"aor": AOR, "outboundProxy": "[::1"}, "outboundProxy"),
        ({"aor": AOR, "transport": "sctp"}, "transport"),
        ({"aor": AOR, "tlsVerify": "no"}, "tlsVerify"),
        ({"aor": AOR, "caFile": "/no/such/file.pem"}, "caFile"),
        ({"aor": AOR, "caFile": __file__}, "caFile"),  # not a PEM bundle
        ({"aor": AOR, "expires": 0}, "expires"),
        ({"aor": AOR, "expires": 10**9}, "expires"),
        ({"aor": AOR, "expires": "60"}, "expires"),
        ({"aor": AOR, "register": "yes"}, "register"),
        ({"aor": AOR, "autoAnswer": -1}, "autoAnswer"),
        ({"aor": AOR, "ringTimeout": 0}, "ringTimeout"),
        ({"aor": AOR, "ringTimeout": None}, "ringTimeout"),
        ({"aor": AOR, "source": "/etc/passwd"}, "source"),
        ({"aor": AOR, "source": "tone:5"}, "source"),
        ({"aor": AOR, "source": "tone:abc"}, "source"),
        ({"aor": AOR, "source": "rtp"}, "source"),
        ({"aor": AOR, "dtmf": "inband"}, "dtmf"),
        ({"aor": AOR, "timeout": 5}, "timeout"),
        ({"aor": AOR, "autoanswer": 1}, "autoanswer"),  # a misspelt field is refused, not ignored
        ({"aor": AOR, "protocol": "h323"}, "protocol"),
        ({"aor": AOR, "protocol": 1}, "protocol"),
    ],
)
def test_bad_phone_is_400_naming_the_field(client: TestClient, body: dict[str, Any], field: str) -> None:
    assert_400(client.post("/api/phones", json=body), field)


def test_body_that_is_not_an_object_is_400(client: TestClient) -> None:
    assert_400(client.post("/api/phones", json=[LOCAL]), "body")
    assert_400(client.post("/api/phones", content=b"{bad", headers={"content-type": "application/json"}), "body")
    assert_400(client.post("/api/phones"), "body")


def test_sccp_phone_body_is_checked_and_a_dead_call_manager_is_409(client: TestClient,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    assert_400(client.post("/api/phones", json={"protocol": "sccp", "host": "127.0.0.1", "deviceName": "SEPXYZ"}),
               "deviceName")
    assert_400(client.post("/api/phones", json={"protocol": "sccp", "host": "no host!"}), "host")
    port = free_port(socket.SOCK_STREAM)
    r = client.post("/api/phones", json={"protocol": "sccp", "host": "127.0.0.1", "port": port})
    assert r.status_code == 409 and "connection refused" in r.json()["error"]
    # the module is looked up at request time: a protocol whose module is missing is not available
    monkeypatch.setitem(phone_routes.PROTOCOLS, "sip", phone_routes.Protocol(
        "skinnysip.phone.no_such_module", phone_routes.SIPPhoneBody, phone_routes.PROTOCOLS["sip"].build))
    assert "not available" in client.post("/api/phones", json=LOCAL).json()["error"]


def test_a_phone_echoing_rtp_payloads_as_sipp_rtp_echo(client: TestClient) -> None:
    phone = new_phone(client, source="rtp-echo")
    assert phone["success"] is True and phone["account"]["source"] == "rtp-echo"
    client.delete(f"/api/phones/{phone['id']}")


def test_create_get_list_delete_and_the_password_never_shows(client: TestClient) -> None:
    phone = new_phone(client, autoAnswer=1500, source="echo", dtmf="info")
    assert phone["success"] is True and phone["protocol"] == "sip" and phone["state"] == "open"
    assert phone["registration"] == {"state": "unregistered", "reason": "", "expires": None, "outbound": False,
                                     "flowTimer": None, "gruu": None, "tempGruu": None, "serviceRoute": [],
                                     "serverAuthenticated": None}
    assert phone["account"]["aor"] == AOR and phone["account"]["hasPassword"] is True
    assert phone["account"]["autoAnswer"] == 1500 and phone["account"]["register"] is False
    assert phone["account"]["ringTimeout"] == 180000  # RING_TIMEOUT, 3 minutes
    assert phone["calls"] == []
    got = client.get(f"/api/phones/{phone['id']}")
    listed = client.get("/api/phones")
    assert got.status_code == 200 and got.json()["id"] == phone["id"]
    assert listed.json()["limit"] == 16 and [p["id"] for p in listed.json()["phones"]] == [phone["id"]]
    for r in (got, listed):
        assert "s3cret-pw" not in r.text and "password" not in r.text
    gone = client.delete(f"/api/phones/{phone['id']}")
    assert gone.status_code == 200 and gone.json()["success"] is True
    assert client.get(f"/api/phones/{phone['id']}").status_code == 404
    assert client.get("/api/phones").json()["phones"] == []


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("get", "/api/phones/nope", None),
        ("delete", "/api/phones/nope", None),
        ("post", "/api/phones/nope/register", None),
        ("post", "/api/phones/nope/calls", {"target": "bob"}),
        ("get", "/api/phones/nope/calls", None),
        ("get", "/api/phones/nope/calls/1", None),
        ("post", "/api/phones/nope/calls/1/hangup", None),
        ("post", "/api/phones/nope/calls/1/dtmf", {"digits": "1"}),
        ("post", "/api/phones/nope/messages", {"target": "bob", "text": "hi"}),
    ],
)
def test_unknown_phone_is_404(client: TestClient, method: str, path: str, body: Any) -> None:
    r = client.request(method, path, json=body)
    assert r.status_code == 404 and r.json() == {"success": False, "error": "no phone 'nope'"}, r.text


@pytest.mark.parametrize("action", ["answer", "reject", "hangup", "hold", "resume"])
def test_unknown_call_is_404(client: TestClient, action: str) -> None:
    phone = new_phone(client)
    assert client.get(f"/api/phones/{phone['id']}/calls/424242").status_code == 404
    r = client.post(f"/api/phones/{phone['id']}/calls/424242/{action}")
    assert r.status_code == 404 and "no call 424242" in r.json()["error"]


@pytest.mark.parametrize(
    ("suffix", "body", "field"),
    [
        ("calls", {}, "target"),
        ("calls", {"target": ""}, "target"),
        ("calls", {"target": "bob smith"}, "target"),
        ("calls", {"target": "sip:bob@bad host"}, "target"),
        ("calls", {"target": "bob@"}, "target"),
        ("calls", {"target": "http://example.com"}, "target"),
        ("calls", {"target": 5}, "target"),
        ("calls", {"target": "bob\r\nX: y"}, "target"),
        ("messages", {"target": "bob"}, "text"),
        ("messages", {"target": "bob", "text": ""}, "text"),
        ("messages", {"target": "bob", "text": "x" * 1001}, "text"),
        ("calls/1/reject", {"code": 200}, "code"),
        ("calls/1/reject", {"code": "486"}, "code"),
        ("calls/1/transfer", {}, "target"),
        ("calls/1/transfer", {"target": "a b"}, "target"),
        ("calls/1/transfer", {"target": "bob", "replaces": 0}, "replaces"),
        ("calls/1/transfer", {"target": "bob", "replaces": "x"}, "replaces"),
        ("calls/1/dtmf", {}, "digits"),
        ("calls/1/dtmf", {"digits": "12x"}, "digits"),
        ("calls/1/dtmf", {"digits": "1" * 33}, "digits"),
        ("calls/1/dtmf", {"digits": "1", "duration": 5}, "duration"),
        ("calls/x/hangup", None, "path.call_id"),
    ],
)
def test_bad_action_input_is_400_naming_the_field(client: TestClient, suffix: str, body: Any, field: str) -> None:
    phone = new_phone(client)
    assert_400(client.post(f"/api/phones/{phone['id']}/{suffix}", json=body), field)


def test_refused_actions_are_409(client: TestClient) -> None:
    phone = new_phone(client)
    pid = phone["id"]
    r = client.post(f"/api/phones/{pid}/register")  # register: false and no registrar
    assert r.status_code == 409 and r.json() == {"success": False, "error": "no registrar to register with"}
    call = client.post(f"/api/phones/{pid}/calls", json={"target": closed_udp_target()})
    assert call.status_code == 201, call.text
    summary = call.json()
    assert summary["success"] is True and summary["phone"] == pid and summary["direction"] == "outgoing"
    cid = summary["id"]
    answer = client.post(f"/api/phones/{pid}/calls/{cid}/answer")  # an outgoing call cannot be answered
    assert answer.status_code == 409 and answer.json()["success"] is False
    assert f"cannot answer call {cid}" in answer.json()["error"]
    # ICMP port unreachable ends the call at once; an ended call refuses everything but GET
    for _ in range(50):
        detail = client.get(f"/api/phones/{pid}/calls/{cid}").json()
        if detail["state"] == "terminated":
            break
        time.sleep(0.05)
    assert detail["state"] == "terminated" and detail["exchange"][0]["summary"].startswith("INVITE")
    assert detail["exchange"][0]["direction"] == "sent" and "raw" in detail["exchange"][0]
    assert client.post(f"/api/phones/{pid}/calls/{cid}/hangup").status_code == 409
    assert client.post(f"/api/phones/{pid}/calls/{cid}/dtmf", json={"digits": "1"}).status_code == 409
    assert [c["id"] for c in client.get(f"/api/phones/{pid}/calls").json()] == [cid]
    assert [c["id"] for c in client.get(f"/api/phones/{pid}").json()["calls"]] == [cid]


def test_a_phone_that_cannot_reach_its_registrar_is_409_and_not_kept(client: TestClient) -> None:
    r = client.post("/api/phones", json={"aor": AOR, "registrar": f"127.0.0.1:{free_port()}", "transport": "tcp"})
    assert r.status_code == 409 and r.json()["success"] is False and r.json()["error"], r.text
    assert client.get("/api/phones").json()["phones"] == []


def test_phone_limit_from_app_state(app: FastAPI, client: TestClient) -> None:
    app.state.phone_limit = 2
    first, _ = new_phone(client), new_phone(client)
    r = client.post("/api/phones", json=LOCAL)
    assert r.status_code == 409 and "too many phones (at most 2)" in r.json()["error"]
    client.delete(f"/api/phones/{first['id']}")
    new_phone(client)
    assert client.get("/api/phones").json()["limit"] == 2


def test_idle_phones_are_closed_but_not_while_watched(app: FastAPI, client: TestClient) -> None:
    app.state.phone_idle_timeout = 0.3
    idle, watched = new_phone(client), new_phone(client)
    session = app.state.phone_manager.sessions[idle["id"]]
    with client.websocket_connect(f"/api/phones/{watched['id']}/events"):
        deadline = time.monotonic() + 5
        while not session.phone.closed and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(0.5)
        ids = [p["id"] for p in client.get("/api/phones").json()["phones"]]
        assert idle["id"] not in ids and watched["id"] in ids  # an open event socket is use
    assert session.phone.closed
    app.state.phone_idle_timeout = 3600


def test_events_socket_streams_events_and_closes_with_the_phone(client: TestClient) -> None:
    phone = new_phone(client)
    pid = phone["id"]
    with client.websocket_connect(f"/api/phones/{pid}/events") as ws, \
            client.websocket_connect(f"/api/phones/{pid}/events") as ws2:
        cid = client.post(f"/api/phones/{pid}/calls", json={"target": closed_udp_target()}).json()["id"]
        for sock in (ws, ws2):  # every socket gets every event
            event = sock.receive_json()
            assert event["event"] == "callState" and event["call"] == cid and event["state"] == "terminated"
            assert "time" in event and event["remote"].startswith("sip:nobody@")
        assert client.delete(f"/api/phones/{pid}").status_code == 200
        with pytest.raises(WebSocketDisconnect) as closed:
            ws.receive_json()
        assert closed.value.code == 1000


@pytest.fixture
def silent_udp() -> Iterator[socket.socket]:
    """A UDP socket on 127.0.0.1 that takes everything and answers nothing (a dead registrar
    whose host is up: no ICMP, so a REGISTER waits for Timer F)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(0.2)
    yield sock
    sock.close()


def received(sock: socket.socket) -> list[bytes]:
    out = []
    with contextlib.suppress(TimeoutError):
        while True:
            out.append(sock.recv(65535))
    return out


def wait_event(ws: Any, name: str) -> dict[str, Any]:
    for _ in range(50):
        event = ws.receive_json()
        if event["event"] == name:
            return event  # type: ignore[no-any-return]
    raise AssertionError(f"no {name} event")


def test_a_register_the_registrar_does_not_answer_is_202_and_goes_on(
        client: TestClient, silent_udp: socket.socket, monkeypatch: pytest.MonkeyPatch) -> None:
    # No request waits for Timer F (64·T1 = 32 s by default, past HTTP clients' own deadlines).
    monkeypatch.setattr(phone_routes, "ANSWER_WAIT", 0.3)
    port = silent_udp.getsockname()[1]
    pid = new_phone(client, registrar=f"127.0.0.1:{port}", timeout=1500)["id"]
    with client.websocket_connect(f"/api/phones/{pid}/events") as ws:
        first = client.post(f"/api/phones/{pid}/register")
        assert first.status_code == 202, first.text
        body = first.json()
        assert body["success"] is False and body["pending"] is True
        assert body["registration"]["state"] == "registering"
        assert client.get(f"/api/phones/{pid}").json()["pending"] == ["register"]
        second = client.post(f"/api/phones/{pid}/register")  # joins the REGISTER going on (RFC 3261 §10.2)
        assert second.status_code in (200, 202), second.text
        done = wait_event(ws, "actionDone")
        assert done["action"] == "register" and done["success"] is False
    registers = [m for m in received(silent_udp) if m.startswith(b"REGISTER ")]
    cseqs = {line for m in registers for line in m.split(b"\r\n") if line.startswith(b"CSeq:")}
    assert len(registers) >= 2 and cseqs == {b"CSeq: 1 REGISTER"}  # retransmissions of one request
    phone = client.get(f"/api/phones/{pid}").json()
    assert phone["pending"] == [] and phone["registration"]["state"] == "failed"
    assert phone["registration"]["reason"], phone


def test_a_register_going_on_when_the_phone_is_deleted_is_a_409(
        client: TestClient, silent_udp: socket.socket, monkeypatch: pytest.MonkeyPatch) -> None:
    # DELETE cancels the REGISTER in flight: the register request answers 409, never a 500
    monkeypatch.setattr(phone_routes, "ANSWER_WAIT", 5.0)
    pid = new_phone(client, registrar=f"127.0.0.1:{silent_udp.getsockname()[1]}", timeout=10000)["id"]
    answers: list[Any] = []
    def register() -> None:
        try:
            answers.append(client.post(f"/api/phones/{pid}/register"))
        except BaseException as exc:  # noqa: BLE001 - shown by the assertion below
            answers.append(exc)

    worker = threading.Thread(target=register)
    worker.start()
    for _ in range(50):
        if client.get(f"/api/phones/{pid}").json()["registration"]["state"] == "registering":
            break
        time.sleep(0.05)
    assert client.delete(f"/api/phones/{pid}").status_code == 200
    worker.join(10)
    assert answers and answers[0].status_code == 409, answers[0].text if answers else "no answer"
    assert "closed meanwhile" in answers[0].json()["error"]


def test_a_start_that_outlasts_the_answer_is_201_starting(
        client: TestClient, silent_udp: socket.socket, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(phone_routes, "ANSWER_WAIT", 0.3)
    port = silent_udp.getsockname()[1]
    r = client.post("/api/phones", json={"aor": AOR, "registrar": f"127.0.0.1:{port}", "timeout": 1000})
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["state"] == "starting" and body["pending"] == ["start"]
    assert body["registration"]["state"] == "registering"
    refused = client.post(f"/api/phones/{body['id']}/calls", json={"target": closed_udp_target()})
    assert refused.status_code == 409 and "still starting" in refused.json()["error"]
    for _ in range(60):
        phone = client.get(f"/api/phones/{body['id']}").json()
        if phone["state"] != "starting":
            break
        time.sleep(0.05)
    # no answer is a failed registration (retried by the phone), not a failed phone
    assert phone["state"] == "open" and phone["registration"]["state"] == "failed", phone


def test_a_start_that_fails_after_the_answer_is_failed_with_its_reason(
        client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(phone_routes, "ANSWER_WAIT", 0.3)
    with socket.socket() as mute:  # TCP that accepts and never speaks TLS: the handshake times out
        mute.bind(("127.0.0.1", 0))
        mute.listen(4)
        port = mute.getsockname()[1]
        r = client.post("/api/phones", json={"aor": AOR, "registrar": f"127.0.0.1:{port}", "transport": "tls",
                                             "timeout": 1000})
        assert r.status_code == 201 and r.json()["state"] == "starting", r.text
        pid = r.json()["id"]
        for _ in range(100):
            phone = client.get(f"/api/phones/{pid}").json()
            if phone["state"] != "starting":
                break
            time.sleep(0.05)
    assert phone["state"] == "failed" and phone["reason"] and phone["pending"] == [], phone
    refused = client.post(f"/api/phones/{pid}/register")
    assert refused.status_code == 409 and refused.json()["error"].startswith("the phone failed to start: ")
    assert client.delete(f"/api/phones/{pid}").status_code == 200
    assert client.get("/api/phones").json()["phones"] == []


def test_a_message_nobody_answers_is_202_then_an_actiondone_event(
        client: TestClient, silent_udp: socket.socket, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(phone_routes, "ANSWER_WAIT", 0.3)
    pid = new_phone(client, timeout=1000)["id"]
    port = silent_udp.getsockname()[1]
    with client.websocket_connect(f"/api/phones/{pid}/events") as ws:
        r = client.post(f"/api/phones/{pid}/messages", json={"target": f"sip:bob@127.0.0.1:{port}", "text": "hi"})
        assert r.status_code == 202 and r.json() == {"success": False, "pending": True, "id": pid,
                                                     "registration": None}, r.text
        done = wait_event(ws, "actionDone")
    assert done["action"] == "message" and done["success"] is False and done["reason"], done
    assert any(m.startswith(b"MESSAGE ") for m in received(silent_udp))


@pytest.fixture
def unreachable_tcp_port() -> Iterator[int]:
    """A loopback TCP port whose accept queue is full: a new connect waits (SYNs dropped)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(0)
    port = server.getsockname()[1]
    fillers = []
    for _ in range(3):
        sock = socket.socket()
        sock.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            sock.connect(("127.0.0.1", port))
        fillers.append(sock)
    time.sleep(0.2)
    yield port
    for sock in fillers:
        sock.close()
    server.close()


def test_a_call_whose_server_is_slow_to_reach_is_202_then_an_actiondone(
        client: TestClient, unreachable_tcp_port: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(phone_routes, "ANSWER_WAIT", 0.3)
    pid = new_phone(client, transport="tcp", timeout=1500)["id"]
    with client.websocket_connect(f"/api/phones/{pid}/events") as ws:
        r = client.post(f"/api/phones/{pid}/calls", json={"target": f"sip:bob@127.0.0.1:{unreachable_tcp_port}"})
        assert r.status_code == 202 and r.json() == {"success": False, "pending": True, "id": pid,
                                                     "registration": None}, r.text
        assert client.get(f"/api/phones/{pid}").json()["pending"] == ["call"]
        done = wait_event(ws, "actionDone")
    assert done["action"] == "call" and done["success"] is False and "127.0.0.1" in done["reason"], done
    assert client.get(f"/api/phones/{pid}/calls").json() == []


def test_an_sccp_call_manager_that_answers_garbage_is_never_a_500(client: TestClient) -> None:
    # a CM port that is really a web server: it answers "HTTP/1.1 400" to Register and closes
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    server.settimeout(0.2)
    stop = threading.Event()

    def answer() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            with conn:
                with contextlib.suppress(OSError):
                    conn.recv(4096)
                    conn.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")

    worker = threading.Thread(target=answer, daemon=True)
    worker.start()
    try:
        r = client.post("/api/phones", json={"protocol": "sccp", "host": "127.0.0.1",
                                             "port": server.getsockname()[1], "timeout": 1000})
        assert r.status_code == 201, r.text
        pid = r.json()["id"]
        assert r.json()["registration"]["state"] == "failed" and "malformed" in r.json()["registration"]["reason"]
        for _ in range(10):  # whatever state the reconnecting station is in: an answer, never a 500
            again = client.post(f"/api/phones/{pid}/register")
            assert again.status_code in (200, 409), again.text
            if again.status_code == 200:
                assert again.json()["success"] is False  # a refusal or silence is not success
            time.sleep(0.1)
        assert client.delete(f"/api/phones/{pid}").status_code == 200
    finally:
        stop.set()
        worker.join(2)
        server.close()


def test_events_socket_for_an_unknown_phone_closes_4404(client: TestClient) -> None:
    with client.websocket_connect("/api/phones/nope/events") as ws, pytest.raises(WebSocketDisconnect) as closed:
        ws.receive_json()
    assert closed.value.code == 4404


def test_a_slow_socket_loses_its_oldest_events_only() -> None:
    sub = phone_routes._Subscriber()
    for n in range(phone_routes.SOCKET_QUEUE + 10):
        sub.put({"n": n})
    assert sub.dropped == 10 and sub.queue.qsize() == phone_routes.SOCKET_QUEUE
    assert sub.queue.get_nowait() == {"n": 10}


def test_shutdown_closes_every_phone(app: FastAPI) -> None:
    with TestClient(app) as client:
        ids = [new_phone(client)["id"] for _ in range(3)]
        phones = [app.state.phone_manager.sessions[i].phone for i in ids]
        assert not any(p.closed for p in phones)
    assert all(p.closed for p in phones)
    assert app.state.phone_manager.sessions == {}


JUNK = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=40),
                 st.lists(st.integers(), max_size=3), st.dictionaries(st.text(max_size=5), st.integers(), max_size=2))
FIELDS = ["protocol", "aor", "password", "authUser", "expires", "register", "autoAnswer", "ringTimeout", "source", "dtmf",
          "tlsVerify", "caFile", "timeout", "target", "text", "digits", "code", "duration"]


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=st.dictionaries(st.sampled_from(FIELDS), JUNK, max_size=6))
def test_no_500_for_any_body(client: TestClient, body: dict[str, Any]) -> None:
    # a body that validates only ever reaches a closed local TCP port (→ 409) or is a local phone
    create = {**body, "registrar": f"127.0.0.1:{free_port()}", "transport": "tcp"}
    r = client.post("/api/phones", json=create)
    assert r.status_code in (201, 400, 409), r.text
    if r.status_code == 201:
        client.delete(f"/api/phones/{r.json()['id']}")
    for suffix in ("calls", "messages", "calls/1/reject", "calls/1/transfer", "calls/1/dtmf"):
        r = client.post(f"/api/phones/nope/{suffix}", json=body)
        assert r.status_code in (400, 404), r.text
