"""The lab as a SIP outbound (RFC 5626) and GRUU (RFC 5627) registrar, against real phones on
127.0.0.1.

- linphonec 5.1 (with an ``[misc] uuid``, ``linphonec(instance=…)``; the helper's default
  ``uuid=0`` switches liblinphone's ``+sip.instance`` off) sends ``Supported: replaces, outbound, gruu`` and
  ``+sip.instance="<urn:uuid:…>"`` but no ``reg-id``: it gets ``pub-gruu``/``temp-gruu`` and
  no ``Require: outbound``, and then uses the public GRUU as its Contact. Calls to its public
  and temporary GRUU reach it and not another phone of the same AoR, and the far end's BYE to
  its GRUU Contact reaches it through the lab.
- baresip 1.0 with ``;sipnat=outbound`` (and its ``uuid`` module loaded before ``account``,
  ``baresip(instance=True)``: without a UUID it refuses outbound) sends ``Supported: gruu, outbound, path``, ``reg-id=1``
  and ``+sip.instance``; with ``Require: outbound`` it sends keep-alives every 80-100 % of
  ``Flow-Timer`` (STUN Binding requests over UDP, answered by the lab). Over TCP it is called
  over its flow; when the lab closes that connection a call gets 430 Flow Failed, baresip
  registers again over a new connection (libre's sipreg waits 30-60 s after a flow failure)
  and its one binding is replaced, not doubled.
- Our own phone with ``outbound`` over TCP: after the lab closes its connection it registers
  at once from a new local port (a new Contact URI): still one binding.
- A STUN Binding request from a plain UDP socket to the lab's SIP port is answered with
  XOR-MAPPED-ADDRESS = the socket's address (RFC 5626 §8).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import socket
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest
from baresip_peer import baresip
from linphone_peer import linphonec
from sip_peers import kamailio_edge
from test_lab_sip import DOMAIN, account, port, registered, settings

from skinnysip.addresses import hostport
from skinnysip.lab.proxy import FLOW_GRACE
from skinnysip.lab.runner import Lab
from skinnysip.phone.api import IncomingCall, PhoneError, RegistrationState
from skinnysip.phone.sip_phone import SIPPhone

pytestmark = [pytest.mark.peer, pytest.mark.timeout(120)]

LINPHONE_UUID = "0e3b6a52-8e5c-4c1e-9f6b-3f1f2a7d5c11"
TEMP_GRUU = re.compile(rf"^sip:tgruu\.[0-9a-f]{{24}}@{re.escape(DOMAIN)};gr$")


@contextlib.asynccontextmanager
async def baresip_outbound(lab: Lab, transport: str) -> AsyncIterator[tuple[Any, SIPPhone, dict[str, Any]]]:
    """baresip as 1001 with ``sipnat=outbound`` over ``transport``, and our phone 1002 to call
    it; both registered. Yields (baresip, our phone, 1001's one binding as the lab lists it)."""
    async with baresip("1001", "demo1001", f"127.0.0.1:{port(lab, transport)}", transport=transport,
                       extra_account="sipnat=outbound", instance=True) as phone, \
            SIPPhone(account(lab, "1002")) as caller:
        await registered(lab, "1001")
        await registered(lab, "1002")
        [row] = bindings_of(lab, "1001")
        assert row["regId"] == 1 and row["instance"].startswith("urn:uuid:") and row["transport"] == transport, row
        yield phone, caller, row


def bindings_of(lab: Lab, user: str) -> list[dict[str, Any]]:
    assert lab.proxy is not None
    return [b for b in lab.proxy.bindings() if b["user"] == user]


def wire(lab: Lab, direction: str, summary: str, where: Callable[[str], bool] = lambda raw: True) -> list[str]:
    """The raw text of the lab's traced messages that went ``direction``, whose summary
    starts with ``summary`` and that ``where`` accepts."""
    assert lab.proxy is not None
    return [r.raw.decode(errors="replace") for r in list(lab.proxy.endpoint.trace.records)
            if r.direction == direction and r.summary.startswith(summary) and where(r.raw.decode(errors="replace"))]


def register_oks(lab: Lab, user: str) -> list[str]:
    """The 200 responses to ``user``'s REGISTERs the lab sent."""
    return wire(lab, "sent", "200", lambda raw: re.search(r"(?im)^CSeq:\s*\d+ REGISTER", raw) is not None
                and re.search(rf"(?im)^To:.*sip:{user}@", raw) is not None)


async def until(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not within {timeout} s")
        await asyncio.sleep(0.1)


async def incoming(phone: SIPPhone, timeout: float = 10.0) -> IncomingCall:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        event = await phone.next_event(max(0.1, deadline - time.monotonic()))
        if isinstance(event, IncomingCall):
            return event
    raise AssertionError("no incoming call")


async def no_incoming(phone: SIPPhone) -> None:
    while (event := await phone.next_event(0.2)) is not None:
        assert not isinstance(event, IncomingCall), "a phone that the GRUU does not name rang"


async def test_linphonec_gets_gruus_and_is_reached_by_them() -> None:
    instance = f"urn:uuid:{LINPHONE_UUID}"
    async with Lab(settings()) as lab:
        lab_port = port(lab, "udp")
        async with linphonec("1001", "demo1001", f"127.0.0.1:{lab_port}", realm=DOMAIN, algorithm="MD5",
                             auto_answer=True, instance=LINPHONE_UUID) as lin, \
                SIPPhone(account(lab, "1001")) as other, \
                SIPPhone(account(lab, "1002", auto_answer=0.2)) as ours:
            await lin.wait_registered(15)
            await registered(lab, "1001", count=2)
            await registered(lab, "1002")
            # what linphonec sent: Supported gruu (and outbound, but no reg-id), +sip.instance
            [register] = wire(lab, "received", "REGISTER", lambda raw: "Authorization:" in raw
                              and "Linphonec" in raw)[:1]
            assert re.search(r"(?im)^Supported:.*\bgruu\b", register), register
            assert f'+sip.instance="<{instance}>"' in register and "reg-id" not in register
            [row] = [b for b in bindings_of(lab, "1001") if "instance" in b]
            assert row["instance"] == instance and "regId" not in row
            pub, temp = row["pubGruu"], row["tempGruu"]
            assert pub == f"sip:1001@{DOMAIN};gr={instance}" and TEMP_GRUU.match(temp), row
            [ok] = [raw for raw in register_oks(lab, "1001") if "pub-gruu" in raw][-1:]
            assert f'pub-gruu="{pub}"' in ok and "Require: outbound" not in ok  # no reg-id: not outbound

            # linphonec's own INVITE carries its public GRUU as Contact (RFC 5627 §4.3) …
            mark = len(lin.lines)
            await lin.command(f"call sip:1002@{DOMAIN}")
            call = (await incoming(ours)).call
            assert await call.wait_connected(15), call.end_reason
            invite = next(m for m in call.exchange if m.summary.startswith("INVITE") and m.direction == "received")
            assert f"<{pub}>" in re.search(r"(?im)^Contact:.*$", invite.raw).group(0)  # type: ignore[union-attr]
            await lin.wait_line(r"^Call \d+ with \S+ connected", 10, mark)
            await asyncio.sleep(0.5)
            # … so our BYE goes to that GRUU, and the lab routes it to linphonec's registered contact
            await call.hangup()
            await lin.wait_line(r"^Call \d+ with \S+ ended", 10, mark)
            bye = wire(lab, "sent", "BYE", lambda raw: f":{lin.sip_port}" in raw.splitlines()[0])
            assert bye, "the BYE to the GRUU was not forwarded to linphonec's contact"

            # a call to either GRUU rings linphonec only, never the other phone of user 1001
            for target in (pub, temp):
                mark = len(lin.lines)
                attempt = await ours.call(target)
                assert await attempt.wait_connected(15), (target, attempt.end_reason)
                await lin.wait_line(r"^Call \d+ with \S+ connected", 10, mark)
                await asyncio.sleep(0.5)
                await attempt.hangup()
                await lin.wait_line(r"^Call \d+ with \S+ ended", 10, mark)
            await no_incoming(other)
            # an instance that is not registered: 480; a temporary GRUU never made: 404 (RFC 5627 §5.5)
            for target, code in ((f"sip:1001@{DOMAIN};gr=urn:uuid:{uuid.uuid4()}", "480"),
                                 (f"sip:tgruu.{'0' * 24}@{DOMAIN};gr", "404")):
                failed = await ours.call(target)
                assert not await failed.wait_connected(10)
                assert code in (failed.end_reason or ""), (target, failed.end_reason)
            # a call to the AoR forks to both bindings (one per instance); linphonec answers by
            # itself, and when it is first the lab CANCELs the other branch as completed
            # elsewhere (RFC 3261 §16.7, RFC 3326; the fresh-clone run at 3da5ebf met that)
            attempt = await ours.call("1001")
            ringing = await incoming(other)
            try:
                await ringing.call.answer()
            except PhoneError:
                assert ringing.call.end_reason == "answered elsewhere", ringing.call.end_reason
            assert await attempt.wait_connected(15), attempt.end_reason
            await attempt.hangup()


@pytest.mark.timeout(150)
async def test_baresip_outbound_over_tcp_flow_replaced_after_its_connection_closes() -> None:
    async with Lab(settings(flow_timer=30)) as lab, baresip_outbound(lab, "tcp") as (phone, caller, row):
        assert lab.proxy is not None
        register = wire(lab, "received", "REGISTER", lambda raw: "Authorization:" in raw and "baresip" in raw)[0]
        assert re.search(r"(?im)^Supported:.*\boutbound\b", register) and ";reg-id=1" in register, register
        ok = register_oks(lab, "1001")[-1]
        assert "Require: outbound" in ok and "Flow-Timer: 30" in ok, ok

        # a call to the AoR goes over baresip's registered connection (its flow)
        call = await caller.call("1001")
        assert await call.wait_connected(15), call.end_reason
        await phone.wait_event("CALL_ESTABLISHED")
        assert any(r.summary.startswith("INVITE") and r.direction == "sent" and r.remote == row["source"]
                   for r in lab.proxy.endpoint.trace.records)
        await call.hangup()
        await phone.wait_event("CALL_CLOSED")

        # the flow dies (the lab closes the connection): a call now gets 430 Flow Failed
        conn = next(c for c in lab.proxy.endpoint.transport.connections.values()
                    if hostport(*c.remote) == row["source"])
        mark = len(phone.events)
        await conn.close()
        await phone.wait_event("REGISTER_FAIL", timeout=10, after=mark)  # baresip saw its flow fail
        failed = await caller.call("1001")
        assert not await failed.wait_connected(10)
        assert "430" in (failed.end_reason or ""), failed.end_reason
        # baresip registers again over a new connection: the same binding, replaced
        await phone.wait_event("REGISTER_OK", timeout=75, after=mark)
        [new] = bindings_of(lab, "1001")
        assert new["source"] != row["source"] and (new["instance"], new["regId"]) == (row["instance"], 1), new
        call = await caller.call("1001")
        assert await call.wait_connected(15), call.end_reason
        assert any(r.summary.startswith("INVITE") and r.direction == "sent" and r.remote == new["source"]
                   for r in lab.proxy.endpoint.trace.records)
        await call.hangup()
        assert len(bindings_of(lab, "1001")) == 1


async def test_baresip_outbound_over_udp_keeps_its_flow_alive_with_stun() -> None:
    async with Lab(settings(flow_timer_udp=3)) as lab, baresip_outbound(lab, "udp") as (phone, caller, row):
        assert lab.proxy is not None
        assert "Flow-Timer: 3" in register_oks(lab, "1001")[-1]
        transport = lab.proxy.endpoint.transport
        # libre sends a STUN Binding request every 80-100 % of Flow-Timer from its SIP socket
        await until(lambda: transport.stun_answered >= 2, 10, "two STUN keep-alives answered")
        assert transport.stun_dropped == 0
        call = await caller.call("1001")
        assert await call.wait_connected(15), call.end_reason
        await phone.wait_event("CALL_ESTABLISHED")
        await call.hangup()
        assert [b["source"] for b in bindings_of(lab, "1001")] == [row["source"]]
        # baresip goes silent (frozen): past Flow-Timer + grace without a keep-alive the lab
        # counts its UDP flow dead and a call gets 430 Flow Failed at once (RFC 5626 §4.4, §11.4)
        with phone.frozen():
            await asyncio.sleep(3 + FLOW_GRACE + 1.5)
            failed = await caller.call("1001")
            assert not await failed.wait_connected(5)
            assert "430" in (failed.end_reason or ""), failed.end_reason
        answered = transport.stun_answered  # thawed: its next keep-alive revives the flow
        await until(lambda: transport.stun_answered > answered, 10, "a keep-alive after the thaw")
        call = await caller.call("1001")
        assert await call.wait_connected(15), call.end_reason
        await call.hangup()


async def test_our_outbound_phone_reconnects_with_a_new_contact_and_replaces_its_binding() -> None:
    instance = f"urn:uuid:{uuid.uuid4()}"
    async with Lab(settings()) as lab:
        assert lab.proxy is not None
        async with SIPPhone(account(lab, "1002", "tcp", outbound=True, gruu=True, instance_id=instance)) as ours:
            await registered(lab, "1002")
            [row] = bindings_of(lab, "1002")
            assert (row["instance"], row["regId"]) == (instance, 1) and ours.outbound_active
            assert ours.gruu == row["pubGruu"]
            conn = next(c for c in lab.proxy.endpoint.transport.connections.values()
                        if hostport(*c.remote) == row["source"])
            await conn.close()
            await until(lambda: [b["source"] for b in bindings_of(lab, "1002")] not in ([], [row["source"]]), 20,
                        "a registration over a new connection")
            [new] = bindings_of(lab, "1002")
            assert new["contact"] != row["contact"], "the Contact URI did not change: nothing to prove"
            assert (new["instance"], new["regId"]) == (instance, 1)


@pytest.mark.parametrize("transport", ["udp", "tcp"])
async def test_our_phone_through_a_kamailio_edge_proxy_to_the_lab(transport: str) -> None:
    """The lab as the registrar behind a Kamailio edge proxy (RFC 5626 §5, outbound module):
    our phone registers through the edge, whose Path carries a flow token and ``ob``; the lab
    accepts the outbound registration (a Path with ``ob``: the first hop does outbound, §6),
    keeps the Path and gives it back (RFC 3327 §5.3). A call from another phone of the lab goes
    out with the Path as its Route, to the edge, which sends it down our very flow."""
    async with Lab(settings()) as lab:
        assert lab.proxy is not None
        with kamailio_edge(port(lab, "udp")) as edge:
            acc = account(lab, "1001", transport, outbound=True, gruu=True, auto_answer=0.2)
            acc.registrar, acc.outbound_proxy = None, f"127.0.0.1:{edge.port(transport)}"  # REGISTER sip:DOMAIN
            async with SIPPhone(acc) as ours, SIPPhone(account(lab, "1002")) as caller:
                assert ours.registration is RegistrationState.REGISTERED, ours.registration_reason
                assert ours.outbound_active and ours.gruu is not None
                await registered(lab, "1002")
                [row] = bindings_of(lab, "1001")
                assert row["regId"] == 1 and row["source"] == f"127.0.0.1:{edge.udp_port}", row
                [path] = row["path"]
                assert re.fullmatch(rf"<sip:[^@]+@127\.0\.0\.1:{edge.udp_port};lr;ob>", path), path
                ok = next(raw for raw in register_oks(lab, "1001") if "Require: outbound" in raw)
                assert f"Path: {path}" in ok, ok
                for target in ("1001", ours.gruu):
                    call = await caller.call(target)
                    assert await call.wait_connected(15), (target, call.end_reason)
                    sent = wire(lab, "sent", "INVITE", lambda raw: f"Route: {path}" in raw)
                    assert sent, "the lab's INVITE did not take the Path as its Route"
                    theirs = (await incoming(ours)).call
                    invite = next(m for m in theirs.exchange if m.direction == "received"
                                  and m.summary.startswith("INVITE"))
                    assert invite.remote == f"127.0.0.1:{edge.port(transport)}", invite.remote  # from the edge
                    await asyncio.sleep(0.5)
                    await call.hangup()
                    assert await theirs.wait_ended(10)


@pytest.fixture
def udp_socket() -> Iterator[socket.socket]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(5.0)
    try:
        yield sock
    finally:
        sock.close()


async def test_stun_binding_request_to_the_sip_udp_port(udp_socket: socket.socket) -> None:
    from aioice import stun

    async with Lab(settings()) as lab:
        assert lab.proxy is not None
        request = stun.Message(stun.Method.BINDING, stun.Class.REQUEST)
        request.add_fingerprint()
        loop = asyncio.get_running_loop()
        udp_socket.sendto(bytes(request), ("127.0.0.1", port(lab, "udp")))
        data, _ = await asyncio.wait_for(loop.run_in_executor(None, udp_socket.recvfrom, 2048), 6.0)
        response = stun.parse_message(data)
        assert (response.message_method, response.message_class) == (stun.Method.BINDING, stun.Class.RESPONSE)
        assert response.transaction_id == request.transaction_id
        assert response.attributes["XOR-MAPPED-ADDRESS"] == udp_socket.getsockname()
        assert lab.proxy.endpoint.transport.stun_answered == 1
        # SIP still works on that port
        async with SIPPhone(account(lab, "1001")) as phone:
            await registered(lab, "1001")
            assert phone.registration is RegistrationState.REGISTERED
