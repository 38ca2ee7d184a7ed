"""The registrar's service route (RFC 3608) at our phone, against Kamailio: a registrar whose
2xx to REGISTER carries ``Service-Route`` naming a second Kamailio (the "edge", as an IMS
S-CSCF names the proxy that serves the user's requests). Our calls and messages go there
first, REGISTER never does; the call is heard both ways (≥ 95 % of 20 ms frames carry the
other side's tone)."""

from __future__ import annotations

import asyncio
import re
import socket
from pathlib import Path

import pytest
from baresip_peer import baresip
from sip_peers import kamailio, kamailio_edge
from test_phone_baresip import THEIR_TONE, account, registered
from test_phone_srtp import heard_each_other

from peertools import free_port
from skinnysip.phone.api import RegistrationState
from skinnysip.phone.sip_phone import SIPPhone

pytestmark = [pytest.mark.peer, pytest.mark.timeout(90)]


@pytest.mark.parametrize("transport", ["udp", "tcp"])
async def test_calls_and_messages_follow_kamailios_service_route(transport: str, tmp_path: Path) -> None:
    ports = (free_port(socket.SOCK_DGRAM), free_port(socket.SOCK_STREAM))
    hop = f"sip:127.0.0.1:{ports[0]};lr" if transport == "udp" else f"sip:127.0.0.1:{ports[1]};transport=tcp;lr"
    with kamailio(pbx=True, service_route=hop) as pbx, kamailio_edge(pbx.udp_port, outbound=False, ports=ports) as edge:
        async with baresip("bob", pbx.users["bob"], f"127.0.0.1:{pbx.udp_port}", tone_hz=THEIR_TONE) as bob:
            await registered(pbx, "bob")
            async with SIPPhone(account(pbx, "alice", transport, record_dir=str(tmp_path))) as phone:
                assert phone.registration is RegistrationState.REGISTERED, phone.registration_reason
                assert phone.service_route == [f"<{hop}>"]
                mark = len(bob.events)
                call = await phone.call("bob")
                assert await call.wait_connected(15), call.end_reason
                await bob.wait_event("CALL_ESTABLISHED", after=mark)
                invites = [m for m in call.exchange if m.direction == "sent" and m.summary.startswith("INVITE")]
                # the first INVITE and its retry with credentials (Kamailio's 407) both to the edge
                assert invites and all(m.remote == f"127.0.0.1:{edge.port(transport)}" for m in invites), invites
                assert all(f"\r\nRoute: <{hop}>\r\n" in m.raw for m in invites)
                await asyncio.sleep(1.5)
                await phone.message("bob", "along the service route")
                await call.hangup()
                await bob.wait_event("CALL_CLOSED", after=mark)
                report = call.media_report()
                assert report is not None
                heard_each_other(report, bob)
                assert "along the service route" in bob.log.read_text(errors="replace")
                assert await phone.register()  # a refresh: straight to the registrar
        edge_log = Path(edge.log_file).read_text(errors="replace")
        passed = re.findall(r"edge: (\w+) \S+ from 127\.0\.0\.1:(\d+)", edge_log)
        ours = {method for method, port in passed if port != str(pbx.udp_port)}  # not relayed by the registrar
        assert {"INVITE", "MESSAGE", "ACK", "BYE"} <= ours and "REGISTER" not in ours, edge_log[-2000:]
