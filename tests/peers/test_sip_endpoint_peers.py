"""The SIP core (``SIPEndpoint`` and the ``sip listen`` Responder) against real peers on loopback.

- SIPp's built-in ``uac`` calls our Responder over UDP and TCP; SIPp's exit code and its own
  statistics judge the calls.
- A UDP relay drops our first 200 OK: SIPp's INVITE retransmission is absorbed by our INVITE
  server transaction (RFC 6026 Accepted state) and our 2xx timer re-sends the 200 until the
  ACK arrives (RFC 3261 §13.3.1.4).
- sipsak: OPTIONS → 200; an unknown method → 405 with Allow; a BYE for no dialog → 481.
- Kamailio (``relay_registered``): our endpoint registers with Digest over UDP, then an
  OPTIONS for its AOR is relayed by Kamailio to it and answered.
- TCP/TLS: requests to Kamailio reuse one connection; a request arriving on a TLS connection
  (inbound to a Responder, or relayed by Kamailio over the connection we registered on) is
  answered on that connection.
- tshark's SIP dissector decodes every message we sent in the SIPp, sipsak and TCP runs, with
  nothing malformed.
- 1000 concurrent OPTIONS transactions on one UDP socket each get their own response.
"""

from __future__ import annotations

import asyncio
import re
import socket
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

import pytest
import sip_peers
from sip_peers import KamailioPeer, kamailio, make_self_signed, sipp_uac

from peertools import TsharkCapture, UDPRelay, require, run_program
from skinnysip.net.resolver import ServerTarget
from skinnysip.net.sip_endpoint import SIPEndpoint
from skinnysip.net.trace import TraceRecord
from skinnysip.probes.listen import ListenConfig, Responder
from skinnysip.sip.auth import DigestClient
from skinnysip.sip.message import Request, parse_message
from skinnysip.sip.request import new_call_id, new_request
from skinnysip.sip.transaction import Flow
from skinnysip.sip.transactions import ResponseReceived
from skinnysip.sip.uri import NameAddr

pytestmark = pytest.mark.peer

HOST = "127.0.0.1"


# --- helpers ------------------------------------------------------------------------------------


def port_of(hostport: str) -> int:
    return int(hostport.rsplit(":", 1)[1])


def sent(records: Iterable[TraceRecord]) -> list[TraceRecord]:
    return [r for r in records if r.direction == "sent"]


def kinds(records: Iterable[TraceRecord]) -> Counter[str]:
    """Method of each request, code of each response (first word of the summary)."""
    return Counter(r.summary.split()[0] for r in records)


def flatten(values: list[str | list[str]] | None) -> list[str]:
    """tshark JSON field values (a list, or a list of lists) as one flat list."""
    out: list[str] = []
    for v in values or []:
        out.extend(v if isinstance(v, list) else [v])
    return out


def sip_capture(transport: str, port: int) -> TsharkCapture:
    """A loopback capture of ``transport`` port ``port``, decoded as SIP."""
    return TsharkCapture(f"{transport} port {port}", decode_as=[f"{transport}.port=={port},sip"])


def assert_tshark_decodes(cap: TsharkCapture, records: Iterable[TraceRecord]) -> None:
    """tshark's SIP dissector decodes every message our endpoint sent (``records``: its trace):
    the same methods/status codes and Call-IDs, from our ports; no frame of the capture is
    malformed or has an error-level expert item."""
    ours = sent(records)
    assert ours, "nothing sent"
    bad = cap.decode("_ws.malformed || _ws.expert.severity == error",
                     ["frame.number", "_ws.col.Info", "_ws.expert.message"])
    assert bad == [], f"tshark flags malformed/error packets: {bad}"
    ports = {port_of(r.local) for r in ours}
    seen: Counter[str] = Counter()
    call_ids: Counter[str] = Counter()
    for layer in cap.decode("sip", ["udp.srcport", "tcp.srcport", "sip.Method", "sip.Status-Code", "sip.Call-ID"]):
        source = flatten(layer.get("udp.srcport")) or flatten(layer.get("tcp.srcport"))
        if int(source[0]) not in ports:
            continue
        seen.update(flatten(layer.get("sip.Method")) + flatten(layer.get("sip.Status-Code")))
        call_ids.update(flatten(layer.get("sip.Call-ID")))
    assert seen == kinds(ours)
    assert call_ids == Counter(r.call_id for r in ours)


def options_request(endpoint: SIPEndpoint, flow: Flow, uri: str, *, call_id: str | None = None, cseq: int = 1,
                    from_tag: str | None = None) -> Request:
    from_ = NameAddr.parse(f"<sip:tester@{HOST}>" + (f";tag={from_tag}" if from_tag else ""))
    return new_request("OPTIONS", uri, from_=from_, to=NameAddr.parse(f"<{uri}>"), via=endpoint.via(flow),
                       call_id=call_id, cseq=cseq, user_agent=endpoint.user_agent)


async def register(endpoint: SIPEndpoint, flow: Flow, peer: KamailioPeer, user: str) -> str:
    """REGISTER ``user`` with Digest (the core's retry rule); returns the Contact we bound."""
    aor = NameAddr.parse(f"<sip:{user}@{peer.realm}>")
    contact = endpoint.contact(flow, user)
    request = new_request("REGISTER", f"sip:{peer.realm}", from_=aor, to=aor, via=endpoint.via(flow),
                          contact=contact, headers=[("Expires", "60")], user_agent=endpoint.user_agent)
    outcome = await endpoint.transact(request, flow, timeout=5.0,
                                      credentials=DigestClient(user, peer.users[user]))
    assert outcome.response is not None, outcome.error
    assert outcome.response.status_code == 200, outcome.response.summary
    bound = outcome.response.headers.get("Contact") or ""
    assert str(contact.uri) in bound, bound
    return str(contact.uri)


def sipsak_reply(output: str) -> str:
    """The status line of the final reply sipsak printed."""
    found = re.findall(r"^\s*(SIP/2\.0 \d{3} [^\r\n]*)$", output, re.M)
    assert found, output
    return found[-1].strip()


def force_rcvbuf(endpoint: SIPEndpoint, size: int = 8 << 20) -> None:
    """Give the endpoint's UDP sockets a large receive buffer (SO_RCVBUFFORCE as root, else
    SO_RCVBUF up to rmem_max)."""
    for udp in endpoint.transport.udp.values():
        assert udp.transport is not None
        sock = udp.transport.get_extra_info("socket")
        try:
            sock.setsockopt(socket.SOL_SOCKET, getattr(socket, "SO_RCVBUFFORCE", 33), size)
        except OSError:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, size)


# --- 1. SIPp as UAC against the Responder (+ 6. tshark) -------------------------------------------


@pytest.mark.parametrize("transport", ["udp", "tcp"])
async def test_sipp_uac_calls_the_responder(transport: str) -> None:
    calls = 20
    async with Responder(ListenConfig(HOST, 0, transport, answer="200")) as responder:
        assert responder.local is not None
        port = responder.local[1]
        with sip_capture(transport, port) as cap:
            result = await sipp_uac(HOST, port, transport=transport, calls=calls, rate=50, pause_ms=50)
            await asyncio.sleep(0.2)  # the last BYE's 200 is on the wire
        records = list(responder.endpoint.trace)
        leftover = dict(responder.calls)
    detail = result.log[-1500:] + result.errors[-1500:]
    assert result.returncode == 0, detail  # SIPp: 0 = every call successful
    assert (result.successful_calls, result.failed_calls) == (calls, 0), detail
    screen = re.search(r"Successful call\s*\|\s*\d+\s*\|\s*(\d+)", result.screen)
    assert screen and int(screen.group(1)) == calls, result.screen[-2000:]
    assert result.errors == ""  # no unexpected message
    received = kinds(r for r in records if r.direction == "received")
    assert (received["INVITE"], received["ACK"], received["BYE"]) == (calls, calls, calls)
    answered = [parse_message(r.raw) for r in sent(records) if r.summary.startswith("200 OK")]
    invite_oks = [m for m in answered if m.cseq[1] == "INVITE"]
    assert len(invite_oks) == calls and all(m.body.startswith(b"v=0") for m in invite_oks)
    assert all(m.headers.get("Content-Type") == "application/sdp" for m in invite_oks)
    assert leftover == {}  # every dialog ended by its BYE
    assert_tshark_decodes(cap, records)


# --- 2. a lost 200 OK: INVITE retransmission absorbed, 2xx retransmitted until the ACK ----------


async def test_lost_200_is_retransmitted_until_ack() -> None:
    async with Responder(ListenConfig(HOST, 0, "udp", answer="200")) as responder:
        assert responder.local is not None
        invites: list[bytes] = []

        def count_invites(data: bytes) -> bool:
            if data.startswith(b"INVITE "):
                invites.append(data)
            return False

        def drop_ok(data: bytes) -> bool:
            # drop our 200 to the INVITE until SIPp has retransmitted the INVITE (SIPp's T1 and
            # ours are both 500 ms: without this the race between them decides the order)
            return data.startswith(b"SIP/2.0 200") and b" INVITE\r\n" in data and len(invites) < 2

        relay = UDPRelay(responder.local, drop_up=count_invites, drop_down=drop_ok)
        port = await relay.start()
        try:
            # rport in SIPp's Via: without it our responses rightly go to the Via's port
            # (RFC 3261 §18.2.2), around the relay
            result = await sipp_uac(HOST, port, calls=1, timeout=15, rport=True)
        finally:
            relay.close()
        records = list(responder.endpoint.trace)
        absorbed = responder.endpoint.layer.retransmissions_received
    assert result.returncode == 0, result.log[-1500:] + result.errors[-1500:]
    assert (result.successful_calls, result.failed_calls) == (1, 0)
    assert len(relay.dropped_down) >= 1  # our first 200 OK was lost
    assert len(invites) >= 2  # SIPp retransmitted the INVITE ...
    assert absorbed >= 1  # ... and our INVITE server transaction absorbed it
    received = kinds(r for r in records if r.direction == "received")
    assert received["INVITE"] == len(invites) and received["ACK"] == 1 and received["BYE"] == 1
    oks = [r for r in sent(records) if r.summary.startswith("200 OK") and b" INVITE\r\n" in r.raw]
    assert len(oks) >= 2 and all(r.summary.endswith("(retransmission)") for r in oks[1:])
    assert len({r.raw for r in oks}) == 1  # the same 200, byte for byte
    # the 2xx timer stopped with the ACK: no 200 for the INVITE after it
    ack_at = next(i for i, r in enumerate(records) if r.direction == "received" and r.summary.startswith("ACK"))
    assert all(not (r.summary.startswith("200 OK") and b" INVITE\r\n" in r.raw) for r in sent(records[ack_at:]))
    # SIPp lists only its own retransmissions; the INVITE line shows one at least
    invite_line = re.search(r"INVITE ---------->\s+(\d+)\s+(\d+)", result.screen)
    assert invite_line and int(invite_line.group(2)) >= 1, result.screen[-2000:]


# --- 3. sipsak: OPTIONS 200, unknown method 405 + Allow, BYE for no dialog 481 (+ 6. tshark) -------


async def test_sipsak_options_405_481(tmp_path: Path) -> None:
    binary = require("sipsak")
    async with Responder(ListenConfig(HOST, 0, "udp")) as responder:
        assert responder.local is not None
        port = responder.local[1]
        target = f"sip:{HOST}:{port}"
        # sipsak builds only OPTIONS (shoot mode), REGISTER/INVITE/MESSAGE (usrloc/message
        # modes) itself; a request with another method, or with a To tag, comes from a file
        # (-f), on top of which sipsak puts its own Via. It cannot open a dialog with us first,
        # which this case does not need: the BYE is meant to match no dialog. (sipsak 0.9.8
        # also cuts a 5-digit port in the Request-URI and To it builds for -s to 4 digits,
        # e.g. sip:127.0.0.1:5990 for port 59909; it still sends to the right port.)
        foo = tmp_path / "foo.sip"
        foo.write_text(f"FOO {target} SIP/2.0\nVia: SIP/2.0/UDP {HOST}:9;branch=z9hG4bKfoo1\n"
                       f"From: <sip:sipsak@{HOST}>;tag=f1\nTo: <{target}>\nCall-ID: foo-{new_call_id()}\n"
                       "CSeq: 1 FOO\nMax-Forwards: 70\nContent-Length: 0\n\n")
        bye = tmp_path / "bye.sip"
        bye.write_text(f"BYE {target} SIP/2.0\nVia: SIP/2.0/UDP {HOST}:9;branch=z9hG4bKbye1\n"
                       f"From: <sip:sipsak@{HOST}>;tag=f2\nTo: <{target}>;tag=no-such-dialog\n"
                       f"Call-ID: bye-{new_call_id()}\nCSeq: 2 BYE\nMax-Forwards: 70\nContent-Length: 0\n\n")
        with sip_capture("udp", port) as cap:
            # sipsak's exit code: 0 for a 2xx final reply, 1 for another final reply
            code_options, out_options = await run_program([binary, "-vv", "-s", target], timeout=10)
            code_foo, out_foo = await run_program([binary, "-vv", "-f", str(foo), "-s", target], timeout=10)
            code_bye, out_bye = await run_program([binary, "-vv", "-f", str(bye), "-s", target], timeout=10)
        records = list(responder.endpoint.trace)
    assert code_options == 0, out_options
    assert sipsak_reply(out_options) == "SIP/2.0 200 OK"
    assert re.search(r"^Allow: .*OPTIONS", out_options, re.M)
    assert code_foo == 1, out_foo
    assert sipsak_reply(out_foo) == "SIP/2.0 405 Method Not Allowed"
    allow = re.search(r"^Allow: ([^\r\n]*)", out_foo, re.M)
    assert allow and "FOO" not in allow.group(1) and "INVITE" in allow.group(1)
    assert code_bye == 1, out_bye
    assert sipsak_reply(out_bye) == "SIP/2.0 481 Call/Transaction Does Not Exist"
    assert [r.summary.split()[0] for r in sent(records)] == ["200", "405", "481"]
    assert_tshark_decodes(cap, records)


# --- 4. Kamailio relays a request for our registered AOR to our listening endpoint --------------


async def test_kamailio_relays_to_registered_endpoint() -> None:
    sipsak = require("sipsak")
    with kamailio("MD5", relay_registered=True) as peer:
        async with SIPEndpoint() as ep:
            local = await ep.listen("udp", HOST, 0)
            flow = await ep.flow_to(ServerTarget(HOST, peer.udp_port, "udp", HOST))
            assert flow.local == local  # the REGISTER leaves from our listening socket
            contact = await register(ep, flow, peer, "alice")
            assert contact == f"sip:alice@{HOST}:{local[1]}"
            mark = ep.trace.mark()
            # an OPTIONS for the AOR, sent to Kamailio (not to us) by sipsak
            code, out = await run_program([sipsak, "-vv", "-s", f"sip:alice@{HOST}:{peer.udp_port}"], timeout=10)
            relayed = ep.trace.since(mark)
            # a user nobody registered: Kamailio's own 404
            code_404, out_404 = await run_program([sipsak, "-vv", "-s", f"sip:bob@{HOST}:{peer.udp_port}"],
                                                  timeout=10)
            extra = ep.trace.since(mark)[len(relayed):]
    assert code == 0, out
    assert sipsak_reply(out) == "SIP/2.0 200 OK"
    assert re.search(r"^Server: skinnysip/", out, re.M), out  # our answer, relayed back
    assert [(r.direction, r.summary) for r in relayed] == [("received", f"OPTIONS {contact}"), ("sent", "200 OK")]
    assert {r.remote for r in relayed} == {f"{HOST}:{peer.udp_port}"}
    assert {r.local for r in relayed} == {f"{HOST}:{local[1]}"}
    options = parse_message(relayed[0].raw)
    assert len(options.headers.get_all("Via")) == 2  # Kamailio's Via over sipsak's
    assert code_404 == 1 and sipsak_reply(out_404).startswith("SIP/2.0 404"), out_404
    assert extra == []


# --- 5. TCP/TLS connection reuse (+ 6. tshark for TCP) -----------------------------------------


@pytest.mark.parametrize("transport", ["tcp", "tls"])
async def test_requests_to_kamailio_share_one_connection(kamailio_md5: KamailioPeer, transport: str) -> None:
    peer = kamailio_md5
    port = peer.port(transport)
    cap = sip_capture("tcp", port) if transport == "tcp" else None
    if cap is not None:
        cap.start()
    try:
        async with SIPEndpoint(ca_file=peer.ca_file) as ep:
            uri = f"sip:{HOST}:{port};transport={transport}"
            statuses = []
            flows = []
            for n in (1, 2):
                flow = await ep.flow_to(ServerTarget(HOST, port, transport, HOST))  # reused the 2nd time
                flows.append(flow)
                outcome = await ep.transact(options_request(ep, flow, uri, cseq=n), flow, timeout=5.0)
                statuses.append(outcome.response.status_code if outcome.response else outcome.error)
            connections = dict(ep.transport.connections)
            records = list(ep.trace)
    finally:
        if cap is not None:
            cap.stop()
    assert statuses == [200, 200]
    assert flows[0] == flows[1] and flows[0].connection is not None
    assert len(connections) == 1
    [conn] = connections.values()
    assert not conn.inbound and conn.transport == transport
    assert [r.summary.split()[0] for r in records] == ["OPTIONS", "200"] * 2
    assert {r.local for r in records} == {f"{HOST}:{conn.local[1]}"}
    assert {r.transport for r in records} == {transport}
    if cap is not None:
        assert_tshark_decodes(cap, records)


async def test_inbound_tls_request_answered_on_its_connection(tmp_path: Path) -> None:
    cert, key = make_self_signed(tmp_path)
    config = ListenConfig(HOST, 0, "tls", tls_cert=str(cert), tls_key=str(key))
    async with Responder(config) as responder, SIPEndpoint(ca_file=str(cert)) as client:
        assert responder.local is not None
        port = responder.local[1]
        uri = f"sip:{HOST}:{port};transport=tls"
        statuses = []
        for n in (1, 2):
            flow = await client.flow_to(ServerTarget(HOST, port, "tls", HOST))
            outcome = await client.transact(options_request(client, flow, uri, cseq=n), flow, timeout=5.0)
            statuses.append(outcome.response.status_code if outcome.response else outcome.error)
        server_connections = dict(responder.endpoint.transport.connections)
        client_connections = dict(client.transport.connections)
        server_records = list(responder.endpoint.trace)
        client_records = list(client.trace)
    assert statuses == [200, 200]
    assert len(client_connections) == 1 and len(server_connections) == 1
    [inbound] = server_connections.values()
    [outbound] = client_connections.values()
    assert inbound.inbound and inbound.tls is not None and not outbound.inbound
    assert inbound.remote == outbound.local  # the same TCP connection, seen from both ends
    assert [r.summary.split()[0] for r in server_records] == ["OPTIONS", "200"] * 2
    # every request came in on the accepted connection and its 200 went out on it
    assert {(r.local, r.remote, r.transport) for r in server_records} == {
        (f"{HOST}:{port}", f"{HOST}:{outbound.local[1]}", "tls")}
    assert {(r.local, r.remote) for r in client_records} == {(f"{HOST}:{outbound.local[1]}", f"{HOST}:{port}")}


async def test_kamailio_relays_over_our_tls_connection() -> None:
    """Registered over TLS, the endpoint gets Kamailio's relayed OPTIONS on the connection it
    opened for the REGISTER (its Contact is that connection's local end) and answers on it."""
    sipsak = require("sipsak")
    with kamailio("MD5", relay_registered=True) as peer:
        async with SIPEndpoint(ca_file=peer.ca_file) as ep:
            flow = await ep.flow_to(ServerTarget(HOST, peer.tls_port, "tls", HOST))
            contact = await register(ep, flow, peer, "bob")
            mark = ep.trace.mark()
            code, out = await run_program([sipsak, "-vv", "-s", f"sip:bob@{HOST}:{peer.udp_port}"], timeout=10)
            relayed = ep.trace.since(mark)
            connections = dict(ep.transport.connections)
    assert code == 0 and sipsak_reply(out) == "SIP/2.0 200 OK", out
    assert re.search(r"^Server: skinnysip/", out, re.M), out
    assert len(connections) == 1
    [conn] = connections.values()
    assert conn.id == flow.connection and not conn.inbound
    assert [(r.direction, r.summary) for r in relayed] == [("received", f"OPTIONS {contact}"), ("sent", "200 OK")]
    assert {(r.local, r.remote, r.transport) for r in relayed} == {
        (f"{HOST}:{conn.local[1]}", f"{HOST}:{peer.tls_port}", "tls")}


# --- 7. 1000 concurrent OPTIONS transactions over one UDP socket --------------------------------


async def test_thousand_concurrent_options_each_matched() -> None:
    count = 1000
    async with Responder(ListenConfig(HOST, 0, "udp")) as responder, SIPEndpoint() as ep:
        assert responder.local is not None
        port = responder.local[1]
        flow = await ep.flow_to(ServerTarget(HOST, port, "udp", HOST))
        # A burst of 1000 datagrams overflows Linux's default 208 KiB receive buffer on
        # loopback (both ends run in this one event loop); Timer E recovers, but in ~12 s.
        # Matching is what is tested here, so the buffers are made big enough.
        force_rcvbuf(ep)
        force_rcvbuf(responder.endpoint)
        call_id = new_call_id()
        uri = f"sip:{HOST}:{port}"
        # one Call-ID and From tag for all, CSeq 1..1000: only the branch tells them apart
        requests = [options_request(ep, flow, uri, call_id=call_id, cseq=n, from_tag="load") for n in range(1, count + 1)]
        handles = [ep.send_request(request, flow) for request in requests]
        pending = len(ep.layer.client)
        deadline = ep.loop_time + 20.0

        async def final(handle) -> ResponseReceived | None:
            while True:
                event = await handle.next_event(deadline)
                if event is None or not isinstance(event, ResponseReceived):
                    return None
                if event.final:
                    return event

        events = await asyncio.gather(*(final(h) for h in handles))
        sockets = len(ep.transport.udp)
        unmatched = ep.layer.unmatched_responses
    assert pending == count  # all 1000 in flight at once
    assert sockets == 1
    assert unmatched == 0
    failures = []
    for request, handle, event in zip(requests, handles, events, strict=True):
        assert handle is not None
        if event is None or event.response.status_code != 200:
            failures.append((request.cseq, event))
            continue
        response = event.response
        if (response.cseq != request.cseq or response.top_via.branch != request.top_via.branch
                or event.transaction is not handle.transaction):
            failures.append((request.cseq, response.summary, response.cseq))
    assert failures == []
    assert len({r.top_via.branch for r in requests}) == count


def test_relay_registered_is_off_by_default(tmp_path: Path) -> None:
    """The generated Kamailio script routes to the location table only when asked."""
    require("kamailio")
    args = (HOST, 5060, 5060, 5061, "MD5", tmp_path / "tls.cfg", tmp_path)
    plain = sip_peers._kamailio_cfg(*args)
    relaying = sip_peers._kamailio_cfg(*args, relay_registered=True)
    assert 'lookup("location")' not in plain
    block = relaying[relaying.index('lookup("location")'):]
    assert block.index("t_relay();") < block.index('sl_send_reply("404"')
