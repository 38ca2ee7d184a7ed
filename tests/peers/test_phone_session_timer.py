"""Session timers (RFC 4028) of the SIP phone against SIPp scenarios written here: we refresh
by re-INVITE at half the interval when the far end makes us the refresher; we send BYE when
the far end is the refresher and stays silent; a 422 is retried with the larger interval;
an incoming interval below our minimum gets 422, and an INVITE requiring 100rel gets 420."""

from __future__ import annotations

import asyncio
import re
import socket

import pytest
import sip_peers
from sip_peers import sipp_uac
from test_phone_sipp import (
    HEAD,
    TAIL,
    _events,
    bye_answer,
    phone_account,
    recv,
    response,
    uac_ack,
    uac_invite,
)

from peertools import free_port
from skinnysip.phone.api import CallState, IncomingCall
from skinnysip.phone.sip_phone import SIPCall, SIPPhone

pytestmark = [pytest.mark.peer, pytest.mark.timeout(60)]

TIMER_6 = "Session-Expires: 6;refresher=uac\nRequire: timer\n"


def recv_checked(what: str, checks: dict[str, str], timeout_ms: int | None = None, *, rrs: bool = False,
                 save_via: bool = False) -> str:
    """SIPp ``<recv>`` of a request (or a response: ``what`` a code) that fails the call
    unless each header matches its regexp. ``save_via``: its Via into ``$via``."""
    attrs = (f'response="{what}"' if what.isdigit() else f'request="{what}"') + (' rrs="true"' if rrs else "")
    attrs += f' timeout="{timeout_ms}"' if timeout_ms else ""
    names = [f"v{i}" for i in range(len(checks))]
    eregs = "".join(f'      <ereg regexp="{regexp}" search_in="hdr" header="{header}:" check_it="true" '
                    f'assign_to="{name}"/>\n' for name, (header, regexp) in zip(names, checks.items(), strict=True))
    if save_via:
        eregs = '      <ereg regexp=".*" search_in="hdr" header="Via:" check_it="true" assign_to="via"/>\n' + eregs
    return (f'  <recv {attrs}>\n    <action>\n{eregs}    </action>\n  </recv>\n'
            f'  <Reference variables="{",".join(names)}"/>\n')


def in_dialog_ok(sdp: bool = False, extra: str = "") -> str:
    """200 OK to an in-dialog request: its To has the tag already."""
    return response("200 OK", tag="", sdp=sdp, extra=extra).replace("[last_To:];tag=\n", "[last_To:]\n")


def sent(call: SIPCall, start: str) -> list[tuple[float, str]]:
    return [(m.time, m.raw) for m in call.exchange if m.direction == "sent" and m.summary.startswith(start)]


def origin(raw: str) -> str:
    match = re.search(r"^o=.*$", raw, re.M)
    assert match is not None
    return match.group(0)


async def test_refresher_uac_refreshes_by_reinvite_at_half_the_interval() -> None:
    """§7.2/§10: the 200 says ``Session-Expires: 6;refresher=uac``: we re-INVITE at 3 s and
    again at 6 s (SIPp fails the call if a refresh takes longer than 4.5 s), each carrying
    the interval with ``refresher=uac`` and the SDP we sent before, version unchanged."""
    xml = (HEAD.format(name="refresh") + recv_checked("INVITE", {"Supported": "timer"})
           + response("200 OK", sdp=True, extra=TIMER_6) + recv("ACK")
           + recv_checked("INVITE", {"Session-Expires": "^ *6;refresher=uac"}, 4500)
           + in_dialog_ok(sdp=True, extra=TIMER_6) + recv("ACK")
           + recv_checked("INVITE", {"Session-Expires": "^ *6;refresher=uac"}, 4500)
           + in_dialog_ok(sdp=True, extra=TIMER_6) + recv("ACK") + bye_answer() + TAIL)
    with sip_peers.sipp_uas(xml=xml) as peer:
        async with SIPPhone(phone_account()) as phone:
            call = await phone.call(f"sip:service@127.0.0.1:{peer.port}")
            assert await call.wait_connected(5), call.end_reason
            assert call.session_expires == 6 and call.session_refresher
            await asyncio.sleep(7.0)
            assert call.state is CallState.CONFIRMED
            invites = sent(call, "INVITE")
            assert len(invites) == 3, [t for t, _ in invites]
            (t0, first), (t1, refresh1), (t2, refresh2) = invites
            ack = sent(call, "ACK")[0][0]
            assert 2.5 <= t1 - ack <= 3.6 and 2.5 <= t2 - t1 <= 3.6, (t1 - ack, t2 - t1)
            assert "Session-Expires: 6;refresher=uac" in refresh1 and "Session-Expires: 6;refresher=uac" in refresh2
            assert origin(first) == origin(refresh1) == origin(refresh2)  # same session version
            await call.hangup()
        result = peer.finish()
        assert result.successful_calls == 1, result.log


async def test_bye_when_the_refresher_stays_silent() -> None:
    """§9/§10: SIPp's INVITE asks for ``Session-Expires: 6;refresher=uac`` and supports
    timers: our 200 carries it back with ``Require: timer``; no refresh comes, so we send
    BYE at 6 - min(32, 6/3) = 4 s after the 200."""
    port = free_port(socket.SOCK_DGRAM)
    xml = (HEAD.format(name="expire") + uac_invite(port, "Supported: timer\nSession-Expires: 6;refresher=uac\n")
           + recv("180", True)
           + recv_checked("200", {"Session-Expires": "^ *6;refresher=uac", "Require": "timer"}, rrs=True)
           + uac_ack(port, for_2xx=True) + '  <recv request="BYE" timeout="6000"/>\n' + in_dialog_ok() + TAIL)
    async with SIPPhone(phone_account(listen_port=port, auto_answer=0.0, min_se=1)) as phone:
        result = await sipp_uac("127.0.0.1", port, xml=xml, timeout=15)
        assert result.returncode == 0, result.errors or result.screen
        call = next(e.call for e in await _events(phone) if isinstance(e, IncomingCall))
        assert isinstance(call, SIPCall) and call.state is CallState.TERMINATED
        assert (call.end_reason or "").startswith("session expired"), call.end_reason
        ok = next(t for t, raw in sent(call, "200 OK") if "CSeq: 1 INVITE" in raw)
        assert "Session-Expires: 6;refresher=uac" in sent(call, "200 OK")[0][1]
        bye, raw = sent(call, "BYE")[0]
        assert 3.7 <= bye - ok <= 4.6, bye - ok
        # the BYE says why (RFC 3326): no refresh came in time
        assert 'Reason: SIP;cause=408;text="session expired: no refresh within 6 s' in raw, raw


async def test_422_is_retried_once_with_the_larger_interval() -> None:
    """§7.3: our INVITE asks for 90 s; the far end answers 422 with ``Min-SE: 120``; the new
    INVITE asks for 120 s with ``Min-SE: 120``; the 200 makes the far end the refresher."""
    xml = (HEAD.format(name="too-small") + recv_checked("INVITE", {"Session-Expires": "^ *90"})
           + response("422 Session Interval Too Small", extra="Min-SE: 120\n") + recv("ACK")
           + recv_checked("INVITE", {"Session-Expires": "^ *120", "Min-SE": "^ *120"})
           + response("200 OK", sdp=True, extra="Session-Expires: 120;refresher=uas\nRequire: timer\n")
           + recv("ACK") + bye_answer() + TAIL)
    with sip_peers.sipp_uas(xml=xml) as peer:
        async with SIPPhone(phone_account(session_expires=90)) as phone:
            call = await phone.call(f"sip:service@127.0.0.1:{peer.port}")
            assert await call.wait_connected(5), call.end_reason
            assert call.session_expires == 120 and not call.session_refresher and call.min_se == 120
            await call.hangup()
        result = peer.finish()
        assert result.successful_calls == 1, result.log


@pytest.mark.parametrize(("header", "code"), [("Session-Expires: 30", 422), ("Require: precondition", 420)])
async def test_incoming_invite_refused(header: str, code: int) -> None:
    """§9: 30 s is below our 90 s minimum: 422 with ``Min-SE: 90``. An INVITE requiring an
    extension we do not do (preconditions, RFC 3312) gets 420 ``Unsupported`` (RFC 3261 §8.2.2.3)."""
    port = free_port(socket.SOCK_DGRAM)
    check = {422: ("Min-SE", "^ *90"), 420: ("Unsupported", "precondition")}[code]
    xml = (HEAD.format(name="refused") + uac_invite(port, f"Supported: timer\n{header}\n")
           + recv_checked(str(code), dict([check])) + uac_ack(port, for_2xx=False) + TAIL)
    async with SIPPhone(phone_account(listen_port=port, auto_answer=0.0)) as phone:
        result = await sipp_uac("127.0.0.1", port, xml=xml, timeout=10)
        assert result.returncode == 0, result.errors or result.screen
        assert not phone.calls and not phone.history
