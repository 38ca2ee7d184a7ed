"""Live phones over the real HTTP API: uvicorn on a free port, Kamailio as the PBX and baresip
as the far-end phone, all on 127.0.0.1. A phone made by POST registers; it calls baresip
(which answers by itself), sends it a MESSAGE and takes baresip's call; hold, resume, DTMF
and hang-up go through the API; the event WebSocket sees the registration and call states in
order; DELETE and the server's shutdown both leave no binding at Kamailio."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from baresip_peer import Baresip, baresip
from sip_peers import KamailioPeer, kamailio
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from peertools import free_port, wait_tcp

pytestmark = [pytest.mark.peer, pytest.mark.timeout(120)]

CALL_ORDER = ["calling", "proceeding", "early", "confirmed", "terminated"]


@contextlib.contextmanager
def uvicorn_server() -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """``skinnysip.api.app:app`` under uvicorn; stopped with SIGINT so its lifespan shutdown runs."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "uvicorn", "skinnysip.api.app:app", "--host", "127.0.0.1",
                             "--port", str(port), "--log-level", "warning"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_tcp("127.0.0.1", port, 20)
        yield f"127.0.0.1:{port}", proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=40)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    with uvicorn_server() as (address, _):
        yield address


@pytest.fixture(scope="module")
def pbx() -> Iterator[KamailioPeer]:
    with kamailio(pbx=True) as peer:
        yield peer


@pytest.fixture
async def api(server: str) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=f"http://{server}", timeout=40) as client:
        yield client


async def contacts_become(pbx: KamailioPeer, user: str, present: bool, timeout: float = 10.0) -> None:
    for _ in range(int(timeout / 0.1)):
        if bool(pbx.contacts(user)) == present:
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"{user}'s bindings never became {'present' if present else 'empty'}")


@pytest.fixture
async def bob(pbx: KamailioPeer) -> AsyncIterator[Baresip]:
    async with baresip("bob", pbx.users["bob"], f"127.0.0.1:{pbx.udp_port}", tone_hz=660.0,
                       contact=f"sip:alice@{pbx.realm}") as peer:
        await contacts_become(pbx, "bob", True)
        yield peer


def alice(pbx: KamailioPeer, **extra: Any) -> dict[str, Any]:
    return {"aor": f"sip:alice@{pbx.realm}", "password": pbx.users["alice"], "registrar": f"127.0.0.1:{pbx.udp_port}",
            "expires": 60, "source": "tone:440", **extra}


async def next_event(ws: ClientConnection, kind: str, timeout: float = 15.0) -> dict[str, Any]:
    """The next event of ``kind`` (others are skipped)."""
    async with asyncio.timeout(timeout):
        while True:
            event = json.loads(await ws.recv())
            if event["event"] == kind:
                return event  # type: ignore[no-any-return]


async def call_states(ws: ClientConnection, cid: int, until: str, timeout: float = 15.0) -> list[str]:
    states: list[str] = []
    while until not in states:
        event = await next_event(ws, "callState", timeout)
        if event["call"] == cid:
            states.append(event["state"])
    return states


def in_order(states: list[str]) -> bool:
    ranks = [CALL_ORDER.index(s) for s in states]
    return ranks == sorted(ranks)


async def test_phone_over_http_registers_calls_baresip_and_unregisters(
        api: httpx.AsyncClient, server: str, pbx: KamailioPeer, bob: Baresip) -> None:
    created = await api.post("/api/phones", json=alice(pbx))
    assert created.status_code == 201, created.text
    phone = created.json()
    pid = phone["id"]
    assert phone["registration"]["state"] == "registered" and phone["registration"]["expires"] == 60
    assert pbx.users["alice"] not in created.text
    await contacts_become(pbx, "alice", True)
    async with connect(f"ws://{server}/api/phones/{pid}/events") as ws:
        again = (await api.post(f"/api/phones/{pid}/register")).json()
        assert again["success"] is True and again["registration"]["state"] == "registered"
        first, second = await next_event(ws, "registration"), await next_event(ws, "registration")
        assert (first["state"], second["state"]) == ("registering", "registered") and second["expires"] == 60
        off = (await api.post(f"/api/phones/{pid}/unregister")).json()  # REGISTER Expires 0
        assert off["success"] is True and off["registration"]["state"] == "unregistered", off
        assert (await next_event(ws, "registration"))["state"] == "unregistered"
        assert pbx.contacts("alice") == []
        back = (await api.post(f"/api/phones/{pid}/register")).json()
        assert back["success"] is True and back["registration"]["state"] == "registered", back
        await contacts_become(pbx, "alice", True)

        placed = await api.post(f"/api/phones/{pid}/calls", json={"target": "bob"})
        assert placed.status_code == 201, placed.text
        cid = placed.json()["id"]
        states = await call_states(ws, cid, "confirmed")
        assert in_order(states), states
        await bob.wait_event("CALL_ESTABLISHED")

        held = await api.post(f"/api/phones/{pid}/calls/{cid}/hold")
        assert held.status_code == 200 and held.json()["localHold"] is True, held.text
        resumed = await api.post(f"/api/phones/{pid}/calls/{cid}/resume")
        assert resumed.status_code == 200 and resumed.json()["localHold"] is False, resumed.text
        times = resumed.json()  # baresip's 180 alerted the call before its 200 confirmed it
        assert times["started"] <= times["alerting"] <= times["connected"], times
        assert (await api.post(f"/api/phones/{pid}/calls/{cid}/resume")).status_code == 409  # not on hold
        muted = await api.post(f"/api/phones/{pid}/calls/{cid}/mute")  # silence sent, no re-INVITE
        assert muted.status_code == 200 and muted.json()["muted"] is True, muted.text
        reasons = [(await next_event(ws, "callState"))["reason"] for _ in range(3)]
        assert reasons == ["on hold", "resumed", "muted"], reasons
        unmuted = await api.post(f"/api/phones/{pid}/calls/{cid}/unmute")
        assert unmuted.status_code == 200 and unmuted.json()["muted"] is False, unmuted.text

        sent = await api.post(f"/api/phones/{pid}/calls/{cid}/dtmf", json={"digits": "159#", "duration": 120})
        assert sent.status_code == 200, sent.text
        await asyncio.sleep(0.5)
        assert [e.get("param") for e in bob.events if e.get("type") == "CALL_DTMF_START"] == ["1", "5", "9", "#"]

        said = await api.post(f"/api/phones/{pid}/messages", json={"target": "bob", "text": "hello over http"})
        assert said.status_code == 200 and said.json()["success"] is True, said.text
        assert (await api.post(f"/api/phones/{pid}/messages", json={"target": "nobody", "text": "x"})).status_code == 409

        live = (await api.get(f"/api/phones/{pid}")).json()
        assert [(c["id"], c["state"]) for c in live["calls"]] == [(cid, "confirmed")]
        assert live["calls"][0]["media"]["received"]["packets"] > 0

        ended = await api.post(f"/api/phones/{pid}/calls/{cid}/hangup")
        assert ended.status_code == 200 and ended.json()["state"] == "terminated", ended.text
        assert (await call_states(ws, cid, "terminated"))[-1] == "terminated"
        await bob.wait_event("CALL_CLOSED")
        assert "hello over http" in bob.log.read_text(errors="replace")

        detail = (await api.get(f"/api/phones/{pid}/calls/{cid}")).json()
        summaries = [m["summary"] for m in detail["exchange"]]
        assert summaries[0].startswith("INVITE") and any(s.startswith("BYE") for s in summaries)
        assert any(s.startswith("ACK") for s in summaries)
        assert sum(s.startswith("INVITE") for s in summaries) >= 3  # INVITE (+auth) + hold + resume
        assert {"direction", "time", "local", "remote", "transport", "summary", "raw"} <= set(detail["exchange"][0])
        assert detail["media"]["final"] is True and detail["endReason"]

        gone = await api.delete(f"/api/phones/{pid}")
        assert gone.status_code == 200 and gone.json()["registration"]["state"] == "unregistered"
        assert (await next_event(ws, "registration"))["state"] == "unregistered"
        with pytest.raises(ConnectionClosed):
            await asyncio.wait_for(ws.recv(), 5)
        assert ws.close_code == 1000
    assert pbx.contacts("alice") == []
    assert (await api.get(f"/api/phones/{pid}")).status_code == 404


async def test_a_phone_over_http_registers_from_its_local_ip(api: httpx.AsyncClient, pbx: KamailioPeer) -> None:
    created = await api.post("/api/phones", json=alice(pbx, localIp="127.0.0.8"))
    assert created.status_code == 201, created.text
    pid = created.json()["id"]
    try:
        await contacts_become(pbx, "alice", True)
        assert all(c.startswith("sip:alice@127.0.0.8:") for c in pbx.contacts("alice")), pbx.contacts("alice")
    finally:
        assert (await api.delete(f"/api/phones/{pid}")).status_code == 200
    await contacts_become(pbx, "alice", False)
    bad = await api.post("/api/phones", json=alice(pbx, localIp="alice"))
    assert bad.status_code == 400 and bad.json()["error"].startswith("localIp:"), bad.text


async def test_incoming_call_answered_over_http(api: httpx.AsyncClient, server: str, pbx: KamailioPeer,
                                               bob: Baresip) -> None:
    pid = (await api.post("/api/phones", json=alice(pbx))).json()["id"]
    try:
        await contacts_become(pbx, "alice", True)
        async with connect(f"ws://{server}/api/phones/{pid}/events") as ws:
            await bob.command("dial", f"sip:alice@{pbx.realm}")
            incoming = await next_event(ws, "incomingCall")
            cid = incoming["call"]
            assert "bob" in incoming["remote"]
            assert (await api.post(f"/api/phones/{pid}/calls/{cid}/hold")).status_code == 409  # not answered yet
            assert (await api.post(f"/api/phones/{pid}/calls/{cid}/mute")).status_code == 409  # nor is this
            answered = await api.post(f"/api/phones/{pid}/calls/{cid}/answer")
            assert answered.status_code == 200 and answered.json()["direction"] == "incoming", answered.text
            assert "confirmed" in await call_states(ws, cid, "confirmed")
            await bob.wait_event("CALL_ESTABLISHED")
            await bob.command("hangup")
            assert (await call_states(ws, cid, "terminated"))[-1] == "terminated"
            detail = (await api.get(f"/api/phones/{pid}/calls/{cid}")).json()
            assert detail["endReason"] == "BYE received"
            assert [m["summary"].split()[0] for m in detail["exchange"] if m["direction"] == "received"][0] == "INVITE"
    finally:
        await api.delete(f"/api/phones/{pid}")


async def test_server_shutdown_unregisters_every_phone(pbx: KamailioPeer) -> None:
    with uvicorn_server() as (address, proc):
        async with httpx.AsyncClient(base_url=f"http://{address}", timeout=40) as client:
            r = await client.post("/api/phones", json=alice(pbx))
            assert r.status_code == 201 and r.json()["registration"]["state"] == "registered", r.text
        await contacts_become(pbx, "alice", True)
        proc.send_signal(signal.SIGINT)
        assert await asyncio.to_thread(proc.wait, 40) == 0
    assert pbx.contacts("alice") == []


async def test_sccp_phones_over_http_call_each_other(api: httpx.AsyncClient) -> None:
    """Two SCCP phones made over the API on the lab call manager: alice dials bob's line,
    bob answers over the API, both calls are confirmed, alice hangs up."""
    from test_sccp_phone import ALICE, BOB, lab_config

    from skinnysip.lab.callmanager import LabCallManager

    cm = LabCallManager(lab_config())
    await cm.start()
    try:
        made = {}
        for name, device in (("alice", ALICE), ("bob", BOB)):
            r = await api.post("/api/phones", json={"protocol": "sccp", "host": "127.0.0.1", "port": cm.port,
                                                   "deviceName": device})
            assert r.status_code == 201, r.text
            assert r.json()["registration"]["state"] == "registered"
            made[name] = r.json()["id"]
        again = await api.post(f"/api/phones/{made['alice']}/register")  # once a connection (§3.1): refused, not 500
        assert again.status_code == 409 and "the station is registered" in again.json()["error"], again.text
        r = await api.post(f"/api/phones/{made['alice']}/calls", json={"target": "2002"})
        assert r.status_code == 201, r.text
        alice_call = r.json()["id"]
        incoming: list[dict[str, Any]] = []
        for _ in range(50):
            incoming = (await api.get(f"/api/phones/{made['bob']}/calls")).json()
            if incoming and incoming[0]["state"] == "incoming":
                break
            await asyncio.sleep(0.1)
        assert incoming and incoming[0]["state"] == "incoming"
        r = await api.post(f"/api/phones/{made['bob']}/calls/{incoming[0]['id']}/answer")
        assert r.status_code == 200, r.text
        detail = (await api.get(f"/api/phones/{made['alice']}/calls/{alice_call}")).json()
        for _ in range(30):
            if detail["state"] == "confirmed":
                break
            await asyncio.sleep(0.1)
            detail = (await api.get(f"/api/phones/{made['alice']}/calls/{alice_call}")).json()
        assert detail["state"] == "confirmed"
        assert any(m["summary"].startswith("KeypadButton") or "OffHook" in m["summary"] for m in detail["exchange"])
        r = await api.post(f"/api/phones/{made['alice']}/calls/{alice_call}/hangup")
        assert r.status_code == 200, r.text
        for phone_id in made.values():
            assert (await api.delete(f"/api/phones/{phone_id}")).status_code == 200
    finally:
        await cm.stop()


async def test_attended_transfer_over_http(api: httpx.AsyncClient, pbx: KamailioPeer) -> None:
    """alice (made over the API) calls bob and carol (our phones, auto-answer), then transfers
    bob to carol attended (``replaces``): bob's INVITE replaces alice–carol, bob and carol end
    up connected, alice has no call left."""
    from skinnysip.phone.api import CallState
    from skinnysip.phone.sip_phone import SIPAccount, SIPPhone

    def account(user: str) -> SIPAccount:
        return SIPAccount(aor=f"sip:{user}@{pbx.realm}", password=pbx.users[user],
                          registrar=f"127.0.0.1:{pbx.udp_port}", auto_answer=0.1)

    async with SIPPhone(account("bob")) as bob, SIPPhone(account("carol")) as carol:
        pid = (await api.post("/api/phones", json=alice(pbx))).json()["id"]
        try:
            ids = []
            for target in ("bob", "carol"):
                r = await api.post(f"/api/phones/{pid}/calls", json={"target": target})
                assert r.status_code == 201, r.text
                ids.append(r.json()["id"])
                for _ in range(100):
                    if (await api.get(f"/api/phones/{pid}/calls/{ids[-1]}")).json()["state"] == "confirmed":
                        break
                    await asyncio.sleep(0.1)
            to_bob, to_carol = ids
            assert (await api.post(f"/api/phones/{pid}/calls/{to_bob}/hold")).status_code == 200
            r = await api.post(f"/api/phones/{pid}/calls/{to_bob}/transfer",
                               json={"target": f"sip:carol@{pbx.realm}", "replaces": to_carol})
            assert r.status_code == 200, r.text
            for _ in range(100):
                live_bob = [c for c in bob.calls if c.state is CallState.CONFIRMED]
                live_carol = [c for c in carol.calls if c.state is CallState.CONFIRMED]
                if len(live_bob) == 1 and len(live_carol) == 1 and "bob" in live_carol[0].remote:
                    break
                await asyncio.sleep(0.1)
            assert len(live_bob) == 1 and "carol" in live_bob[0].remote
            assert len(live_carol) == 1 and "bob" in live_carol[0].remote
            for _ in range(50):
                calls = (await api.get(f"/api/phones/{pid}/calls")).json()
                if all(c["state"] == "terminated" for c in calls):
                    break
                await asyncio.sleep(0.1)
            assert all(c["state"] == "terminated" for c in calls), calls
        finally:
            await api.delete(f"/api/phones/{pid}")
