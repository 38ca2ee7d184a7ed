"""The SCCP ⇄ SIP bridge through the whole lab (skinnysip.lab.runner.Lab: registrar + proxy, SCCP
call manager, bridge): our SCCP station (line 2001) calls baresip registered as 1001, and
baresip calls the station, with audio both ways proven by tone frequency in baresip's recording
and ours (the station sends 440 Hz, baresip 660 Hz). Also: the station hears the SIP callee
ring (RingOut) before the answer, and the SIP side's busy reaches the station as Busy."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from baresip_peer import baresip
from test_lab_bridge import ALICE, BARESIP_TONE, STATION_TONE, share_of, station_rx
from test_lab_sip import DOMAIN, port, registered, settings

from skinnysip.lab.runner import Lab
from skinnysip.phone.api import CallState, IncomingCall
from skinnysip.phone.sccp_phone import SCCPAccount, SCCPCall, SCCPPhone

pytestmark = [pytest.mark.peer, pytest.mark.timeout(120)]


@pytest.fixture
async def lab() -> AsyncIterator[Lab]:
    async with Lab(settings()) as running:
        assert running.bridge is not None and running.callmanager is not None
        running.callmanager.config.dial_timeout = 1.0
        yield running


def station(lab: Lab, tmp_path: Path, **kw: object) -> SCCPPhone:
    assert lab.callmanager is not None
    return SCCPPhone(SCCPAccount(host="127.0.0.1", port=lab.callmanager.port, device_name=ALICE,
                                 source=f"tone:{STATION_TONE}", record_dir=str(tmp_path / ALICE),
                                 **kw))  # type: ignore[arg-type]


async def test_station_calls_baresip_through_the_lab(lab: Lab, tmp_path: Path) -> None:
    async with baresip("1001", "demo1001", f"127.0.0.1:{port(lab, 'udp')}", tone_hz=BARESIP_TONE,
                       answermode="manual") as bob, station(lab, tmp_path) as alice:
        await registered(lab, "1001")
        call = await alice.call("1001")  # no '#': the CM's dial timeout hands it to the bridge
        await bob.wait_event("CALL_INCOMING", timeout=15)
        for _ in range(50):  # the station hears the SIP phone ring
            if "RingOut" in call.protocol_states:
                break
            await asyncio.sleep(0.1)
        assert "RingOut" in call.protocol_states, call.protocol_states
        assert call.state is CallState.EARLY
        await bob.command("accept")
        assert await call.wait_connected(10), call.end_reason
        await asyncio.sleep(4)
        await call.hangup()
        await bob.wait_event("CALL_CLOSED")
        rx = station_rx(call, tmp_path)
        heard_by_bob = share_of(bob.recordings()["dec"], STATION_TONE)
    assert share_of(rx, BARESIP_TONE) >= 0.9, "the station did not hear baresip"
    assert heard_by_bob >= 0.9, "baresip did not hear the station"
    assert lab.bridge is not None
    [record] = lab.bridge.calls()
    summaries = [m["summary"] for m in record["messages"]]
    assert summaries[0] == f"INVITE sip:1001@{DOMAIN}" and "180 Ringing" in summaries
    assert any(s.startswith("BYE") for s in summaries)
    assert "407" not in " ".join(summaries)  # the proxy trusts the bridge


async def test_baresip_calls_station_through_the_lab(lab: Lab, tmp_path: Path) -> None:
    async with station(lab, tmp_path, auto_answer=1.0) as alice, \
            baresip("1001", "demo1001", f"127.0.0.1:{port(lab, 'udp')}", tone_hz=BARESIP_TONE) as bob:
        await registered(lab, "1001")
        await bob.command("dial", f"sip:2001@{DOMAIN}")
        event = await alice.next_event(10)
        while event is not None and not isinstance(event, IncomingCall):
            event = await alice.next_event(10)
        assert isinstance(event, IncomingCall)
        call = event.call
        assert isinstance(call, SCCPCall)
        assert await call.wait_connected(15)
        await bob.wait_event("CALL_ESTABLISHED")
        await asyncio.sleep(4)
        await bob.command("hangup")
        assert await call.wait_ended(10), "the station did not go on-hook after baresip's BYE"
        rx = station_rx(call, tmp_path)
        heard_by_bob = share_of(bob.recordings()["dec"], STATION_TONE)
    assert call.remote == "1001"
    assert share_of(rx, BARESIP_TONE) >= 0.9, "the station did not hear baresip"
    assert heard_by_bob >= 0.9, "baresip did not hear the station"


async def test_sip_busy_reaches_the_station(lab: Lab, tmp_path: Path) -> None:
    async with baresip("1001", "demo1001", f"127.0.0.1:{port(lab, 'udp')}", tone_hz=BARESIP_TONE,
                       answermode="manual") as bob, station(lab, tmp_path) as alice:
        await registered(lab, "1001")
        call = await alice.call("1001#")
        await bob.wait_event("CALL_INCOMING", timeout=15)
        await bob.command("hangup")  # baresip refuses the ringing call
        assert await call.wait_ended(10)
        assert {"Busy", "Congestion"} & set(call.protocol_states), call.protocol_states
        unknown = await alice.call("1999#")  # nobody: the lab's 404 → InvalidNumber
        assert await unknown.wait_ended(10)
        assert "InvalidNumber" in unknown.protocol_states, unknown.protocol_states
