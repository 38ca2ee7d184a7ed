"""SIP outbound (RFC 5626) and GRUU (RFC 5627) of the phone, against Kamailio's registrar with
its outbound and stun modules (``kamailio(flow_timer=…)``: ``outbound_mode`` 1, a
``Flow-Timer``, STUN answered on its SIP UDP port, GRUUs assigned and resolved by ``lookup``).

What a UA owes: ``+sip.instance``/``reg-id`` and ``Supported: outbound, path, gruu`` in its
REGISTER; keep-alives every 80-100 % of the Flow-Timer that must be answered (CRLF pong on
TCP/TLS, STUN on UDP), a failed flow registered again; the GRUU as the Contact of its dialogs,
with ``ob``. Calls to a GRUU reach that phone and no other phone of the same AOR; audio is
proven by listening (≥ 95 % of 20 ms frames carry the other side's tone)."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
import uuid
from pathlib import Path

import httpx
import pytest
from baresip_peer import baresip
from sip_peers import KamailioPeer, kamailio, kamailio_edge
from test_api_sip_http import api  # noqa: F401 (the uvicorn-served API, a fixture)
from test_phone_baresip import THEIR_TONE, account, registered
from test_phone_srtp import heard_each_other, incoming
from test_sip_websocket import wait_registration

from peertools import TsharkCapture
from skinnysip.net import sip_transport
from skinnysip.phone.api import ErrorEvent, IncomingCall, RegistrationState
from skinnysip.phone.sip_phone import SIPPhone

pytestmark = [pytest.mark.peer, pytest.mark.timeout(120)]

CLI = [sys.executable, "-m", "skinnysip"]
FLOW_TIMER = 3  # s: Kamailio's Flow-Timer here, so keep-alives come every 2.4-3 s


@pytest.fixture(scope="module")
def pbx() -> KamailioPeer:
    with kamailio(pbx=True, flow_timer=FLOW_TIMER) as peer:
        yield peer


def location(pbx: KamailioPeer, user: str) -> list[dict[str, str]]:
    """Kamailio's bindings of ``user`` (``kamcmd ul.lookup``): each contact's fields."""
    out = subprocess.run(["kamcmd", "-s", pbx.ctl_socket, "ul.lookup", "location", f"{user}@{pbx.realm}"],
                         capture_output=True, text=True, timeout=10).stdout
    return [dict(re.findall(r"^\s*([\w-]+): (.*)$", block, re.M)) for block in out.split("Contact: {")[1:]]


def sent_register(phone: SIPPhone) -> str:
    return next(r.raw.decode() for r in phone.endpoint.trace if r.direction == "sent"
                and r.raw.startswith(b"REGISTER ") and b"Authorization:" in r.raw)


@pytest.mark.parametrize("transport", ["udp", "tcp", "tls"])
async def test_kamailio_agrees_to_outbound_and_gives_gruus(pbx: KamailioPeer, transport: str) -> None:
    """Our REGISTER asks for outbound and GRUUs (RFC 5626 §4.2.1, RFC 5627 §4.1); Kamailio's
    2xx requires outbound, gives its Flow-Timer and our public GRUU (the AOR with ``gr`` = our
    instance) and a temporary one; its location table holds our instance and reg-id."""
    instance = f"urn:uuid:{uuid.uuid4()}"
    async with SIPPhone(account(pbx, "alice", transport, outbound=True, gruu=True, instance_id=instance)) as phone:
        assert phone.registration is RegistrationState.REGISTERED, phone.registration_reason
        assert phone.outbound_active and phone.flow_timer == FLOW_TIMER
        assert phone.gruu == f"sip:alice@{pbx.realm};gr={instance}", phone.gruu
        assert phone.temp_gruu is not None and phone.temp_gruu.endswith(";gr") and instance not in phone.temp_gruu
        register = sent_register(phone)
        assert re.search(rf'^Contact: <[^>]+>;\+sip\.instance="<{instance}>";reg-id=1\r$', register, re.M), register
        assert "\r\nSupported: outbound, path, gruu\r\n" in register, register
        [binding] = location(pbx, "alice")
        assert binding["Instance"] == f"<{instance}>" and binding["Reg-Id"] == "1", binding
        assert await phone.unregister()
    assert location(pbx, "alice") == []


async def test_without_the_account_asking_nothing_changes(pbx: KamailioPeer) -> None:
    """A phone that asks for neither registers as before: no instance, no outbound, no GRUU."""
    async with SIPPhone(account(pbx, "alice", "tcp")) as phone:
        assert phone.registration is RegistrationState.REGISTERED
        assert not phone.outbound_active and phone.gruu is None and phone.instance_id is None
        register = sent_register(phone)
        assert "+sip.instance" not in register and "Supported:" not in register, register
        [binding] = location(pbx, "alice")
        assert binding["Instance"] == "[not set]", binding


async def test_kamailios_three_digit_flow_timer_is_read_despite_its_lost_line_end() -> None:
    """Kamailio 5.6.3 with ``flow_timer`` 120: its ``add_flow_timer`` sizes the buffer for
    the field and CRLF but not snprintf's NUL, and sends the length it meant to write: after a
    three-digit value the LF is a NUL on the wire and ``Server`` runs into the field. The
    phone reads 120 s and says the field was malformed."""
    with kamailio(pbx=True, flow_timer=120) as pbx:
        async with SIPPhone(account(pbx, "alice", "tcp", outbound=True)) as phone:
            assert phone.outbound_active and phone.flow_timer == 120
            ok = next(r.raw for r in phone.endpoint.trace if r.direction == "received" and b"Flow-Timer" in r.raw)
            assert b"Flow-Timer: 120\r\x00Server:" in ok, ok  # the server's bug, as it came
            reports = [e for e in _drain(phone) if isinstance(e, ErrorEvent) and "Flow-Timer" in e.reason]
            assert len(reports) == 1 and "read as 120 s" in reports[0].reason


@pytest.mark.parametrize("transport", ["udp", "tcp"])
async def test_keepalives_follow_the_flow_timer_and_are_answered(pbx: KamailioPeer, transport: str) -> None:
    """Every 80-100 % of the Flow-Timer (RFC 5626 §4.4.1): over TCP a CRLF CRLF ping that
    Kamailio answers with a CRLF pong; over UDP a STUN Binding to Kamailio's SIP port (§4.4.2)
    whose XOR-MAPPED-ADDRESS is our SIP socket — tshark reads the STUN on the SIP port."""
    port = pbx.port(transport)
    cap = TsharkCapture(f"{transport} port {port}")
    with cap:
        async with SIPPhone(account(pbx, "alice", transport, outbound=True)) as phone:
            assert phone.outbound_active, phone.registration_reason
            await asyncio.sleep(FLOW_TIMER * 2 + 1)
            assert phone.flow is not None and phone.flow_failures == 0
            local = phone.endpoint.local_address(phone.flow)
            if transport == "udp":
                assert phone.flow_mapped == local
            else:
                [conn] = phone.endpoint.transport.connections.values()
                assert conn.pongs >= 2, conn.pongs
            assert phone.registration is RegistrationState.REGISTERED
    if transport == "udp":
        stun = cap.decode("stun", ["stun.type.class", "stun.att.port", "udp.srcport"])
        requests = [p for p in stun if p.get("udp.srcport") == [str(local[1])]]
        answers = [p for p in stun if p.get("udp.srcport") == [str(port)]]
        assert len(requests) >= 2 and len(answers) == len(requests), stun
        assert all(p["stun.att.port"] == [str(local[1])] for p in answers), answers  # XOR-MAPPED-ADDRESS
    else:
        payloads = cap.decode("tcp.len > 0 and tcp.len <= 4", ["tcp.payload", "tcp.srcport"])
        pings = [p for p in payloads if p["tcp.payload"] == ["0d0a0d0a"] and p["tcp.srcport"] != [str(port)]]
        pongs = [p for p in payloads if p["tcp.payload"] == ["0d0a"] and p["tcp.srcport"] == [str(port)]]
        assert len(pings) >= 2 and len(pongs) == len(pings), payloads


@pytest.mark.parametrize("transport", ["udp", "tcp"])
async def test_a_frozen_registrar_fails_the_flow_and_the_phone_recovers(transport: str,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """Kamailio frozen (SIGSTOP): the TCP pong or the STUN answer does not come in time (RFC
    5626 §4.4.1's 10 s, 3 s here to keep the suite short), the flow counts as failed (an error
    event says why), the phone registers again and fails while Kamailio hangs, and registers by
    itself once it runs again."""
    monkeypatch.setattr(sip_transport, "PONG_TIMEOUT", 3.0)
    with kamailio(pbx=True, flow_timer=FLOW_TIMER) as pbx:
        async with SIPPhone(account(pbx, "alice", transport, outbound=True, timeout=4.0)) as phone:
            assert phone.outbound_active, phone.registration_reason
            with pbx.frozen():
                await wait_registration(phone, RegistrationState.FAILED, 40)
            assert phone.flow_failures >= 1
            errors = []
            while not phone._events.empty():
                event = phone._events.get_nowait()
                if isinstance(event, ErrorEvent):
                    errors.append(event.reason)
            expected = "STUN keep-alive: no answer" if transport == "udp" else "no answer to a CRLF keep-alive ping"
            assert any(expected in e for e in errors), errors
            await wait_registration(phone, RegistrationState.REGISTERED, 40)
            assert phone.outbound_active


async def test_a_call_to_a_gruu_reaches_that_phone_only(pbx: KamailioPeer, tmp_path: Path) -> None:
    """Two phones of alice (two instances). baresip calls the first one's public GRUU: only it
    rings, and they hear each other; a call to the second one's temporary GRUU rings only the
    second (RFC 5627 §3: a GRUU reaches one instance; Kamailio's lookup resolves both kinds)."""
    async with baresip("bob", pbx.users["bob"], f"127.0.0.1:{pbx.udp_port}", tone_hz=THEIR_TONE) as bob:
        await registered(pbx, "bob")
        async with SIPPhone(account(pbx, "alice", "tcp", gruu=True, outbound=True, auto_answer=0.2,
                                    record_dir=str(tmp_path))) as first, \
                SIPPhone(account(pbx, "alice", "udp", gruu=True, auto_answer=0.2)) as second:
            assert first.gruu and second.temp_gruu and first.gruu != second.gruu
            assert len(location(pbx, "alice")) == 2
            for target, called, other in ((first.gruu, first, second), (second.temp_gruu, second, first)):
                mark = len(bob.events)
                await bob.command("dial", target)
                call = await incoming(called)
                assert await call.wait_connected(10), call.end_reason
                await bob.wait_event("CALL_ESTABLISHED", after=mark)
                await asyncio.sleep(2)
                assert not any(isinstance(e, IncomingCall) for e in _drain(other)), f"{target} rang the other phone"
                await bob.command("hangup")
                assert await call.wait_ended(10), "bob's BYE did not reach us"
                await bob.wait_event("CALL_CLOSED", after=mark)
                if called is first:
                    report = call.media_report()
                    assert report is not None
                    heard_each_other(report, bob)


async def test_our_calls_give_the_gruu_with_ob_as_contact(pbx: KamailioPeer, tmp_path: Path) -> None:
    """Our INVITE's Contact is our public GRUU with ``ob`` (RFC 5627 §4.3, RFC 5626 §4.3), as
    is our 2xx's when we are called; baresip's in-dialog requests (its BYE) to that remote target
    reach us through Kamailio, which resolves the GRUU. Heard both ways."""
    async with baresip("bob", pbx.users["bob"], f"127.0.0.1:{pbx.udp_port}", tone_hz=THEIR_TONE) as bob:
        await registered(pbx, "bob")
        async with SIPPhone(account(pbx, "alice", "tcp", gruu=True, outbound=True, record_dir=str(tmp_path),
                                    auto_answer=0.2)) as phone:
            assert phone.gruu is not None and phone.outbound_active
            mark = len(bob.events)
            call = await phone.call("bob")
            assert await call.wait_connected(15), call.end_reason
            await bob.wait_event("CALL_ESTABLISHED", after=mark)
            invite = next(m for m in call.exchange if m.direction == "sent" and m.summary.startswith("INVITE"))
            assert f"\r\nContact: <{phone.gruu};ob>\r\n" in invite.raw, invite.raw
            await asyncio.sleep(2)
            await bob.command("hangup")
            assert await call.wait_ended(10), "bob's BYE did not reach us"
            bye = next(m for m in call.exchange if m.direction == "received" and m.summary.startswith("BYE"))
            assert bye.summary.startswith("BYE sip:alice@127.0.0.1"), bye.summary  # the GRUU resolved by Kamailio
            await bob.wait_event("CALL_CLOSED", after=mark)
            report = call.media_report()
            assert report is not None
            heard_each_other(report, bob)

            mark = len(bob.events)
            await bob.command("dial", phone.gruu)
            called = await incoming(phone)
            assert await called.wait_connected(10), called.end_reason
            ok = next(m for m in called.exchange if m.direction == "sent" and m.summary.startswith("200"))
            assert f"\r\nContact: <{phone.gruu};ob>\r\n" in ok.raw, ok.raw
            await bob.wait_event("CALL_ESTABLISHED", after=mark)
            await called.hangup()
            await bob.wait_event("CALL_CLOSED", after=mark)


def test_the_phone_command_registers_with_outbound_and_shows_the_gruu(pbx: KamailioPeer) -> None:
    """``skinnysip phone --outbound --gruu --instance-id URN``: the registration event names the
    GRUU and the Flow-Timer; a malformed instance is refused as a usage error naming the flag."""
    instance = f"urn:uuid:{uuid.uuid4()}"
    out = subprocess.run([*CLI, "phone", f"sip:alice@{pbx.realm}", "--registrar", f"127.0.0.1:{pbx.tcp_port}",
                          "--transport", "tcp", "--password", pbx.users["alice"], "--outbound", "--gruu",
                          "--instance-id", instance, "--json", "--exec", "reg; quit"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    events = [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
    registered_event = next(e for e in events if e["event"] == "registration" and e["state"] == "registered")
    assert registered_event["gruu"] == f"sip:alice@{pbx.realm};gr={instance}", registered_event
    assert registered_event["outbound"] is True and registered_event["flowTimer"] == FLOW_TIMER
    assert registered_event["tempGruu"].endswith(";gr")
    bad = subprocess.run([*CLI, "phone", f"sip:alice@{pbx.realm}", "--outbound", "--instance-id", "not-a-urn"],
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "--instance-id: a URN" in bad.stderr and "Traceback" not in bad.stderr, bad.stderr


@pytest.mark.parametrize("transport", ["udp", "tcp"])
async def test_through_an_outbound_edge_proxy_calls_come_back_on_our_flow(transport: str, tmp_path: Path) -> None:
    """The deployment RFC 5626 is for: our phone registers through a Kamailio edge proxy
    (outbound module: a Path with a flow token and ``ob``, RFC 3327/§5.2) to a Kamailio
    registrar. baresip, registered at the registrar, calls us: the registrar routes by the Path,
    the edge by its flow token, and the INVITE reaches us from the edge on the very flow we
    registered (over TCP, the connection we opened: we listen nowhere). Heard both ways; our
    keep-alives to the edge are answered."""
    with kamailio(pbx=True, flow_timer=FLOW_TIMER) as registrar, kamailio_edge(registrar.udp_port) as edge:
        async with baresip("bob", registrar.users["bob"], f"127.0.0.1:{registrar.udp_port}",
                           tone_hz=THEIR_TONE) as bob:
            await registered(registrar, "bob")
            acc = account(registrar, "alice", transport, outbound=True, gruu=True, auto_answer=0.2,
                          record_dir=str(tmp_path))
            acc.registrar = f"127.0.0.1:{edge.port(transport)}"
            async with SIPPhone(acc) as phone:
                assert phone.registration is RegistrationState.REGISTERED, phone.registration_reason
                assert phone.outbound_active and phone.flow_timer == FLOW_TIMER
                [binding] = location(registrar, "alice")
                assert re.fullmatch(rf"<sip:[^@]+@127\.0\.0\.1:{edge.udp_port};lr;ob>", binding["Path"]), binding
                mark = len(bob.events)
                await bob.command("dial", f"sip:alice@{registrar.realm}")
                call = await incoming(phone)
                assert await call.wait_connected(10), call.end_reason
                invite = next(m for m in call.exchange if m.direction == "received" and m.summary.startswith("INVITE"))
                assert invite.remote == f"127.0.0.1:{edge.port(transport)}" and invite.transport == transport, invite
                assert phone.flow is not None and invite.local == "{}:{}".format(*phone.endpoint.local_address(phone.flow))
                await bob.wait_event("CALL_ESTABLISHED", after=mark)
                await asyncio.sleep(FLOW_TIMER + 1)  # a keep-alive goes by
                await bob.command("hangup")
                assert await call.wait_ended(10), "bob's BYE did not reach us"
                await bob.wait_event("CALL_CLOSED", after=mark)
                report = call.media_report()
                assert report is not None
                heard_each_other(report, bob)
                assert phone.flow_failures == 0 and phone.registration is RegistrationState.REGISTERED
                if transport == "udp":
                    assert phone.flow_mapped == phone.endpoint.local_address(phone.flow)
                else:
                    assert [c.pongs for c in phone.endpoint.transport.connections.values()] >= [1]


@pytest.mark.parametrize("transport", ["ws", "wss"])
async def test_a_websocket_phone_replaces_its_binding_by_its_instance(transport: str, tmp_path: Path) -> None:
    """A browser-style phone (SIP over WebSocket, RFC 7118) with outbound and GRUU, as JsSIP
    registers: its WebSocket closes, it connects again from a new port (a new Contact) and
    registers: Kamailio replaces the binding by instance and reg-id — one binding, and no
    un-REGISTER of the old Contact was needed (RFC 5626 §6). baresip's call to our GRUU then
    comes down the new WebSocket."""
    with kamailio(pbx=True, websocket=True, flow_timer=FLOW_TIMER) as pbx:
        async with baresip("bob", pbx.users["bob"], f"127.0.0.1:{pbx.udp_port}", tone_hz=THEIR_TONE) as bob:
            await registered(pbx, "bob")
            async with SIPPhone(account(pbx, "alice", transport, outbound=True, gruu=True, auto_answer=0.2,
                                        record_dir=str(tmp_path))) as phone:
                assert phone.outbound_active and phone.gruu is not None, phone.registration_reason
                [first] = location(pbx, "alice")
                assert phone.flow is not None
                await phone.endpoint.transport.close_connection(phone.flow)
                for _ in range(100):
                    await asyncio.sleep(0.1)
                    now = location(pbx, "alice")
                    if now and now[0]["Address"] != first["Address"]:
                        break
                [binding] = location(pbx, "alice")
                assert binding["Address"] != first["Address"] and binding["Instance"] == first["Instance"], binding
                assert not any(r.direction == "sent" and r.raw.startswith(b"REGISTER") and b"Expires: 0\r\n" in r.raw
                               for r in phone.endpoint.trace)
                mark = len(bob.events)
                await bob.command("dial", phone.gruu)
                call = await incoming(phone)
                assert await call.wait_connected(10), call.end_reason
                assert phone.flow is not None and call.flow is not None
                assert call.flow.connection == phone.flow.connection  # down the new WebSocket
                await bob.wait_event("CALL_ESTABLISHED", after=mark)
                await asyncio.sleep(1.5)
                await call.hangup()
                await bob.wait_event("CALL_CLOSED", after=mark)
                report = call.media_report()
                assert report is not None
                heard_each_other(report, bob)


def test_the_api_makes_an_outbound_phone_with_gruus(pbx: KamailioPeer, api: httpx.Client) -> None:  # noqa: F811
    """``POST /api/phones`` with ``outbound``, ``gruu`` and ``instanceId``: the phone's
    registration view says outbound, the Flow-Timer and both GRUUs; a bad instance is a 400."""
    instance = f"urn:uuid:{uuid.uuid4()}"
    created = api.post("/api/phones", json={"protocol": "sip", "aor": f"sip:carol@{pbx.realm}",
                                            "password": pbx.users["carol"], "registrar": f"127.0.0.1:{pbx.tcp_port}",
                                            "transport": "tcp", "outbound": True, "gruu": True,
                                            "instanceId": instance, "expires": 60})
    assert created.status_code == 201, created.text
    phone = created.json()
    try:
        registration = phone["registration"]
        assert registration["state"] == "registered" and registration["outbound"] is True, registration
        assert registration["flowTimer"] == FLOW_TIMER and registration["gruu"] == f"sip:carol@{pbx.realm};gr={instance}"
        assert registration["tempGruu"].endswith(";gr")
        [binding] = location(pbx, "carol")
        assert binding["Instance"] == f"<{instance}>" and binding["Reg-Id"] == "1"
    finally:
        assert api.delete(f"/api/phones/{phone['id']}").status_code in (200, 204)
    bad = api.post("/api/phones", json={"protocol": "sip", "aor": f"sip:carol@{pbx.realm}", "instanceId": "<urn:x>"})
    assert bad.status_code == 400 and "instanceId" in bad.json()["error"], bad.text


def _drain(phone: SIPPhone) -> list[object]:
    events = []
    while not phone._events.empty():
        events.append(phone._events.get_nowait())
    return events
