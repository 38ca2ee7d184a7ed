"""SIP outbound (RFC 5626) and GRUU (RFC 5627) at the edges a real registrar does not show: a
2xx without ``Require: outbound``, a malformed GRUU, a Contact the registrar rewrote, a NAT
mapping that changes under a STUN keep-alive, a keep-alive nobody answers, a CRLF pong glued
to a message. Kamailio's side is in ``tests/peers/test_sip_outbound.py``; here the registrar
is a raw socket that sends exact bytes, on 127.0.0.1."""

from __future__ import annotations

import asyncio
import re
import socket
import sys
from pathlib import Path
from typing import Any

import pytest

from skinnysip.net import sip_transport
from skinnysip.net.sip_transport import SIPTransportError, SIPTransportLayer
from skinnysip.net.stun import binding_answer
from skinnysip.phone.api import ErrorEvent, RegistrationState
from skinnysip.phone.sip_phone import SIPAccount, SIPPhone, instance_id_for
from skinnysip.sip.transaction import Flow

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from rawsip import response, udp_server  # noqa: E402

pytestmark = pytest.mark.timeout(60)

INSTANCE = "urn:uuid:00000000-0000-1000-8000-000a95a0e128"


def stun_reply(data: bytes, mapped: tuple[str, int]) -> bytes:
    """A Binding success for ``data`` that claims ``mapped`` (a NAT that moved us)."""
    from aioice import stun

    request = stun.parse_message(data)
    return bytes(stun.Message(stun.Method.BINDING, stun.Class.RESPONSE, request.transaction_id,
                              {"XOR-MAPPED-ADDRESS": mapped}))


def registrar(extra: str, contact_params: str = "", *, stun_ports: list[int] | None = None) -> Any:
    """A registrar: 200 to each REGISTER listing the request's Contact (with ``expires`` and
    ``contact_params``) plus ``extra`` header lines; each STUN Binding answered with the next of
    ``stun_ports`` (none left: not answered)."""

    def reply(data: bytes, f: dict[str, str]) -> list[bytes]:
        if data[:1] in (b"\x00", b"\x01"):
            return [stun_reply(data, ("127.0.0.1", stun_ports.pop(0)))] if stun_ports else []
        if f["method"] != "REGISTER":
            return []
        expires = re.search(r"^Expires: *(\d+)", f["head"], re.M)
        if expires and expires.group(1) == "0":
            return [response(f)]
        return [response(f, extra=f"Contact: {f['Contact']};expires=60{contact_params}\r\n{extra}")]

    return reply


def account(port: int, **kw: Any) -> SIPAccount:
    return SIPAccount(aor="sip:alice@example.test", registrar=f"127.0.0.1:{port}", expires=60, timeout=3.0, **kw)


def errors(phone: SIPPhone) -> list[str]:
    out = []
    while not phone._events.empty():
        event = phone._events.get_nowait()
        if isinstance(event, ErrorEvent):
            out.append(event.reason)
    return out


async def test_the_registrars_answer_decides_outbound_flow_timer_and_gruus() -> None:
    """``Require: outbound`` makes the flow an outbound one and its ``Flow-Timer`` counts; the
    GRUUs come from our Contact in the 2xx, found by its ``+sip.instance`` although the
    registrar rewrote the URI (RFC 5626 §4.2.1, §4.4; RFC 5627 §4.2)."""
    gruus = f';+sip.instance="<{INSTANCE}>";pub-gruu="sip:alice@example.test;gr={INSTANCE}";' \
            'temp-gruu="sip:tgruu.7hs@example.test;gr"'

    def rewritten(data: bytes, f: dict[str, str]) -> list[bytes]:
        return [response(f, extra="Require: outbound\r\nFlow-Timer: 7\r\n"
                                  f"Contact: <sip:alice@192.0.2.1:9;transport=udp>;expires=60{gruus}\r\n")]

    with udp_server(rewritten) as (port, received):
        async with SIPPhone(account(port, outbound=True, gruu=True, instance_id=INSTANCE,
                                    keepalive_interval=60)) as phone:
            assert phone.registration is RegistrationState.REGISTERED
            assert phone.outbound_active and phone.flow_timer == 7 and phone.expires_granted == 60
            assert phone.gruu == f"sip:alice@example.test;gr={INSTANCE}"
            assert phone.temp_gruu == "sip:tgruu.7hs@example.test;gr"
            assert 0.8 * 7 <= phone._keepalive_wait() <= 7
    register = received[0].decode()
    assert f'+sip.instance="<{INSTANCE}>";reg-id=1\r\n' in register and "Supported: outbound, path, gruu\r\n" in register


@pytest.mark.parametrize(("extra", "params", "outbound", "gruu"), [
    ("Flow-Timer: 7\r\n", "", False, None),  # no Require: outbound — not an outbound flow, its timer ignored
    ("Require: outbound\r\n", ';pub-gruu="not a uri"', True, None),  # a malformed GRUU is ignored
    ("Require: outbound\r\nFlow-Timer: soon\r\n", ';pub-gruu="sip:alice@example.test;gr=x"', True, "sip:alice@example.test;gr=x"),
])
async def test_odd_registrar_answers_are_read_safely(extra: str, params: str, outbound: bool,
                                                     gruu: str | None) -> None:
    with udp_server(registrar(extra, params)) as (port, _):
        async with SIPPhone(account(port, outbound=True, gruu=True, keepalive_interval=60)) as phone:
            assert phone.registration is RegistrationState.REGISTERED
            assert phone.outbound_active is outbound and phone.gruu == gruu
            assert phone.flow_timer is None
            assert phone._keepalive_wait() == 60


async def test_a_gruu_is_the_contact_of_dialogs_with_ob_but_not_of_the_register() -> None:
    gruu = f';+sip.instance="<{INSTANCE}>";pub-gruu="sip:alice@example.test;gr={INSTANCE}"'
    with udp_server(registrar("Require: outbound\r\n", gruu)) as (port, _):
        async with SIPPhone(account(port, outbound=True, gruu=True, instance_id=INSTANCE,
                                    keepalive_interval=60)) as phone:
            assert phone.flow is not None
            assert str(phone._contact(phone.flow)) == f"<sip:alice@example.test;gr={INSTANCE};ob>"
            bound = phone._contact(phone.flow, register=True)
            assert bound.uri.host == "127.0.0.1" and "gr" not in bound.uri.params  # type: ignore[union-attr]
            assert bound.params == {"+sip.instance": f'"<{INSTANCE}>"', "reg-id": "1"}


async def test_a_changed_stun_mapping_fails_the_flow_and_the_phone_registers_again() -> None:
    """RFC 5626 §4.4.2: the second STUN keep-alive's XOR-MAPPED-ADDRESS differs from the first
    — the NAT binding is new, so is the flow: registered again at once."""
    with udp_server(registrar("Require: outbound\r\nFlow-Timer: 1\r\n", stun_ports=[40000, 40001, 40001])) \
            as (port, received):
        async with SIPPhone(account(port, outbound=True)) as phone:
            for _ in range(60):
                if phone.flow_failures:
                    break
                await asyncio.sleep(0.1)
            await asyncio.sleep(0.3)
            assert phone.flow_failures == 1 and phone.flow_mapped == ("127.0.0.1", 40001)
            assert any("mapped address changed from 127.0.0.1:40000 to 127.0.0.1:40001" in e for e in errors(phone))
            assert phone.registration is RegistrationState.REGISTERED
    registers = [r for r in received if r.startswith(b"REGISTER") and b"Expires: 60" in r]
    assert len(registers) == 2, len(registers)


async def test_an_unanswered_stun_keepalive_fails_the_flow(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sip_transport, "PONG_TIMEOUT", 1.0)
    with udp_server(registrar("Require: outbound\r\nFlow-Timer: 1\r\n")) as (port, received):
        async with SIPPhone(account(port, outbound=True)) as phone:
            for _ in range(60):
                if phone.flow_failures:
                    break
                await asyncio.sleep(0.1)
            assert phone.flow_failures >= 1
            assert any("STUN keep-alive: no answer" in e for e in errors(phone))
    assert any(r[:1] == b"\x00" for r in received)  # the Binding requests went to the SIP port


async def test_a_crlf_ping_needs_its_pong_on_an_outbound_stream(monkeypatch: pytest.MonkeyPatch) -> None:
    """A TCP peer that agreed to outbound owes a CRLF pong within 10 s (here 0.3): without it
    the connection fails with that reason; a pong glued to the next message counts and the
    message is still read (RFC 5626 §4.4.1, §3.5.1)."""
    monkeypatch.setattr(sip_transport, "PONG_TIMEOUT", 0.3)
    got: list[Any] = []
    lost: list[str] = []
    layer = SIPTransportLayer(lambda message, flow: got.append(message), lambda flow, reason: lost.append(reason))
    server = socket.create_server(("127.0.0.1", 0))
    server.setblocking(False)
    loop = asyncio.get_running_loop()
    try:
        conn_task = asyncio.ensure_future(loop.sock_accept(server))
        flow = (await layer.connect("tcp", ("127.0.0.1", server.getsockname()[1]), timeout=5)).flow
        peer, _ = await asyncio.wait_for(conn_task, 5)
        peer.setblocking(False)
        layer.send_keepalive(flow, expect_pong=True)
        assert await asyncio.wait_for(loop.sock_recv(peer, 16), 5) == b"\r\n\r\n"
        await loop.sock_sendall(peer, b"\r\nSIP/2.0 200 OK\r\nVia: SIP/2.0/TCP 127.0.0.1;branch=z9hG4bKx\r\n"
                                      b"From: <sip:a@b>;tag=1\r\nTo: <sip:a@b>\r\nCall-ID: c\r\nCSeq: 1 OPTIONS\r\n"
                                      b"Content-Length: 0\r\n\r\n")
        await asyncio.sleep(0.6)
        [connection] = layer.connections.values()
        assert connection.pongs == 1 and len(got) == 1 and not lost
        layer.send_keepalive(flow, expect_pong=True)  # this one goes unanswered
        await asyncio.sleep(0.8)
        assert lost and "no answer to a CRLF keep-alive ping" in lost[0], lost
        with pytest.raises(SIPTransportError):
            layer.send_keepalive(flow, expect_pong=True)
        peer.close()
    finally:
        server.close()
        await layer.close()


async def test_stun_on_the_sip_port_is_answered_only_when_asked() -> None:
    """A SIP outbound registrar answers STUN Binding requests on its SIP UDP port (RFC 5626
    §8) with the address they came from; otherwise they are dropped and counted, and bytes
    that start like STUN but are not well-formed STUN are malformed SIP."""
    from aioice import stun

    layer = SIPTransportLayer(lambda message, flow: None, lambda flow, reason: None)
    local = await layer.listen("udp", "127.0.0.1", 0)
    client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    client.bind(("127.0.0.1", 0))
    client.settimeout(2)
    loop = asyncio.get_running_loop()
    try:
        request = stun.Message(stun.Method.BINDING, stun.Class.REQUEST)
        client.sendto(bytes(request), local)
        await asyncio.sleep(0.3)
        assert layer.stun_dropped == 1 and layer.stun_answered == 0
        layer.answer_stun = True
        client.sendto(bytes(request), local)
        data = await loop.run_in_executor(None, client.recv, 1500)
        answer = stun.parse_message(data)
        assert answer.transaction_id == request.transaction_id and answer.message_class == stun.Class.RESPONSE
        assert answer.attributes["XOR-MAPPED-ADDRESS"] == client.getsockname()
        assert "FINGERPRINT" in answer.attributes and layer.stun_answered == 1
        assert list(layer.stun_seen) == [client.getsockname()]  # a registrar's view of live UDP flows
        client.sendto(b"\x00\x01\x00\x05garbage", local)  # first octet 0, not STUN-shaped
        await asyncio.sleep(0.3)
        assert layer.malformed_count == 1 and layer.stun_answered == 1
    finally:
        client.close()
        await layer.close()
    assert binding_answer(b"\x01\x01" + bytes(18), ("127.0.0.1", 1)) is None  # a response, not a request


async def test_a_stun_keepalive_needs_a_udp_flow() -> None:
    layer = SIPTransportLayer(lambda message, flow: None, lambda flow, reason: None)
    with pytest.raises(SIPTransportError, match="needs a UDP flow"):
        await layer.stun_keepalive(Flow("tcp", ("127.0.0.1", 5060)))
    await layer.close()


@pytest.mark.parametrize("value", ["uuid:123", "<urn:uuid:1>", 'urn:x"y', "urn:a b", "urn:a;b", "urn:a\r\nVia: x",
                                   "urn:a\x00b"])
def test_an_instance_id_must_be_a_bare_urn(value: str) -> None:
    with pytest.raises(ValueError, match="instance_id: a URN"):
        instance_id_for(SIPAccount(aor="sip:a@b", outbound=True, instance_id=value))


def test_an_instance_is_made_up_only_when_asked_for() -> None:
    assert instance_id_for(SIPAccount(aor="sip:a@b")) is None
    made = instance_id_for(SIPAccount(aor="sip:a@b", gruu=True))
    assert made is not None and re.fullmatch(r"urn:uuid:[0-9a-f-]{36}", made)
    assert instance_id_for(SIPAccount(aor="sip:a@b", instance_id=" urn:dev:mac:0011 ")) == "urn:dev:mac:0011"


async def test_a_439_makes_the_phone_register_without_outbound() -> None:
    """439 First Hop Lacks Outbound Support (RFC 5626 §11.5): the registrar does outbound, the
    first hop does not — registered again at once without reg-id and the "outbound" tag,
    keeping the instance (GRUUs still work)."""

    def reply(data: bytes, f: dict[str, str]) -> list[bytes]:
        if f["method"] != "REGISTER":
            return []
        if b"reg-id=" in data:
            return [response(f, "439 First Hop Lacks Outbound Support")]
        return [response(f, extra=f"Contact: {f['Contact']};expires=60\r\n")]

    with udp_server(reply) as (port, received):
        async with SIPPhone(account(port, outbound=True, gruu=True, instance_id=INSTANCE)) as phone:
            assert phone.registration is RegistrationState.REGISTERED
            assert phone.outbound_refused and not phone.outbound_active
            assert any("439 First Hop Lacks Outbound Support: registering without SIP outbound" in e
                       for e in errors(phone))
            assert await phone.register()  # later registrations do not ask again
    registers = [r.decode() for r in received if r.startswith(b"REGISTER")]
    assert "reg-id=1" in registers[0] and "Supported: outbound, path, gruu" in registers[0]
    assert all("reg-id" not in r and "Supported: gruu\r\n" in r and INSTANCE in r for r in registers[1:])
    assert len(registers) >= 3


async def test_a_flow_timer_that_lost_its_line_end_is_read_and_reported() -> None:
    """Kamailio 5.6's registrar sizes its Flow-Timer buffer for the number and CRLF but not
    snprintf's NUL, so after a three-digit value a NUL goes out instead of the LF and the next
    field runs into it (``Flow-Timer: 120\\r\\x00Server: …``). The number is read, and an
    error event says so once."""
    with udp_server(registrar("Require: outbound\r\nFlow-Timer: 120\r\x00Server: kamailio (5.6.3)\r\n")) \
            as (port, _):
        async with SIPPhone(account(port, outbound=True)) as phone:
            assert phone.outbound_active and phone.flow_timer == 120
            assert await phone.register()
            reports = [e for e in errors(phone) if "Flow-Timer" in e]
            assert len(reports) == 1 and "malformed" in reports[0] and "read as 120 s" in reports[0], reports


RFC3489_ID = bytes.fromhex("d2f1e1dc087d2bb7461937397863003a")  # what stunc sent: 128 bits, no magic cookie


def test_an_rfc_3489_binding_gets_its_id_back_and_a_plain_mapped_address() -> None:
    answer = binding_answer(b"\x00\x01\x00\x00" + RFC3489_ID, ("192.0.2.7", 40495))
    assert answer == (b"\x01\x01\x00\x0c" + RFC3489_ID  # Binding success, 12 octets of attributes, the same ID
                      + b"\x00\x01\x00\x08" + b"\x00\x01" + (40495).to_bytes(2, "big") + bytes([192, 0, 2, 7]))
    # a CHANGE-REQUEST without flags is a plain Binding (RFC 3489 §11.2.4)
    plain = b"\x00\x03\x00\x04" + bytes(4)
    assert binding_answer(b"\x00\x01\x00\x08" + RFC3489_ID + plain, ("192.0.2.7", 1)) is not None


@pytest.mark.parametrize(("data", "source"), [
    (b"\x00\x01\x00\x08" + RFC3489_ID + b"\x00\x03\x00\x04\x00\x00\x00\x06", ("192.0.2.7", 1)),  # change IP and port
    (b"\x00\x01\x00\x0c" + RFC3489_ID + b"\x00\x02\x00\x08\x00\x01\x00\x09\xc0\x00\x02\x01", ("192.0.2.7", 1)),
    (b"\x00\x01\x00\x00" + RFC3489_ID, ("2001:db8::1", 1)),  # RFC 3489 has no IPv6 family
    (b"\x00\x01\x00\x04" + RFC3489_ID, ("192.0.2.7", 1)),  # a length the message does not have
    (b"\x00\x01\x00\x08" + RFC3489_ID + b"\x80\x22\x00\x09" + bytes(4), ("192.0.2.7", 1)),  # an attribute cut short
    (b"\x01\x11\x00\x00" + RFC3489_ID, ("192.0.2.7", 1)),  # an error response, not a request
])
def test_what_one_address_cannot_answer_or_is_no_rfc_3489_binding_is_dropped(data: bytes,
                                                                              source: tuple[str, int]) -> None:
    assert binding_answer(data, source) is None
