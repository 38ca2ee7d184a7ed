"""The phone as a watcher (busy lamps, RFC 4235; presence, RFC 3856) and a presence publisher
(RFC 3903) against Kamailio's presence server, fed by real programs: its pua_dialoginfo
publishes the dialogs of calls between two baresips, baresip's presence module publishes
its PIDF and watches ours (``presence_peer.kamailio_presence``: registrar, PBX and presence
server in one Kamailio 5.6)."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from presence_peer import PresencePeer, available, kamailio_presence, presence_baresip
from test_api_sip_http import api  # noqa: F401 (the uvicorn-served API, a fixture)

from peertools import collect_events, distinct
from skinnysip.phone.api import DialogStateChanged, PresenceChanged
from skinnysip.phone.sip_phone import SIPAccount, SIPPhone

pytestmark = [pytest.mark.peer, pytest.mark.timeout(120),
              pytest.mark.skipif(not available(), reason="kamailio-presence-modules: scripts/install-deps.sh")]

CLI = [sys.executable, "-m", "skinnysip"]
MAX_EXPIRES = 10  # s: subscriptions and publications are refreshed within the tests


@pytest.fixture(scope="module")
def server() -> Iterator[PresencePeer]:
    with kamailio_presence(max_expires=MAX_EXPIRES) as peer:
        yield peer


def account(server: PresencePeer, user: str, **kw: Any) -> SIPAccount:
    return SIPAccount(aor=server.aor(user), password=server.users[user], registrar=server.registrar, expires=60,
                      timeout=5.0, **kw)


def lamps(events: list[DialogStateChanged], uri: str) -> list[str]:
    """The lamp states of ``uri`` in order, repeats folded."""
    out: list[str] = []
    for e in events:
        if e.uri == uri and (not out or out[-1] != e.state):
            out.append(e.state)
    return out


def in_order(seq: list[str], wanted: list[str]) -> bool:
    it = iter(seq)
    return all(any(x == w for x in it) for w in wanted)


async def wait_active(phone: SIPPhone, count: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while sum(w.state == "active" for w in phone.watches.values()) < count:
        assert time.monotonic() < deadline, [(w.uri, w.state, w.reason) for w in phone.watches.values()]
        await asyncio.sleep(0.05)


async def test_busy_lamps_follow_a_call_between_two_baresips(server: PresencePeer) -> None:
    """carol (baresip) calls bob (baresip, answering by hand) through Kamailio; our phone
    watches both lines: bob's lamp rings, goes busy and idle; carol's calls, goes busy and
    idle. Kamailio's first NOTIFY has no body (nothing known) and its caller state is spelt
    ``Trying``: both are read."""
    bob_uri, carol_uri = server.aor("bob"), server.aor("carol")
    async with presence_baresip(server, "bob", pubint=0, answermode="manual") as bob, \
            presence_baresip(server, "carol", pubint=0) as carol, \
            SIPPhone(account(server, "alice", watch_dialog=("bob", "carol"))) as alice:
        await wait_active(alice, 2)
        assert {(s.presentity, s.event) for s in server.subscriptions("dialog")} >= {(bob_uri, "dialog"),
                                                                                    (carol_uri, "dialog")}
        await carol.command("dial", bob_uri)
        ringing = await collect_events(alice, DialogStateChanged, lambda ev: "ringing" in lamps(ev, bob_uri), 10)
        await bob.command("accept")
        busy = await collect_events(alice, DialogStateChanged,
                             lambda ev: "busy" in lamps(ev, bob_uri) and "busy" in lamps(ev, carol_uri), 10)
        await asyncio.sleep(1.0)
        await carol.command("hangup")
        idle = await collect_events(alice, DialogStateChanged,
                             lambda ev: lamps(ev, bob_uri)[-1:] == ["idle"] and lamps(ev, carol_uri)[-1:] == ["idle"],
                             10)
        events = ringing + busy + idle
        assert in_order(lamps(events, bob_uri), ["ringing", "busy", "idle"]), lamps(events, bob_uri)
        assert in_order(lamps(events, carol_uri), ["calling", "busy", "idle"]), lamps(events, carol_uri)
        confirmed = next(e for e in events if e.uri == bob_uri and e.state == "busy")
        [dialog] = [d for d in confirmed.dialogs if d.state == "confirmed"]
        assert dialog.direction == "recipient" and dialog.remote_identity == carol_uri, dialog
        watch = alice.watches[(bob_uri, "dialog")]
        assert watch.state == "active" and watch.lamp == "idle"
    # closing the phone ended both watches: SUBSCRIBE Expires 0 in each subscription's dialog
    ended = [s for s in server.received("SUBSCRIBE") if re.search(r"(?m)^From: <sip:alice@", s)
             and "\r\nEvent: dialog\r\n" in s and "\r\nExpires: 0\r\n" in s]
    assert len(ended) == 2, ended


async def test_presence_both_ways_with_baresip_and_refreshes(server: PresencePeer) -> None:
    """carol (baresip, ``pubint``) publishes open and then closed; our phone, watching her,
    hears both. Our phone publishes closed with a note: Kamailio takes it and NOTIFYs carol,
    who watches us. Within Kamailio's 10 s our publication is refreshed by its entity-tag
    (no body) and our subscription in its dialog, both accepted."""
    alice_uri, carol_uri = server.aor("alice"), server.aor("carol")
    async with presence_baresip(server, "carol", pubint=60, watch=(alice_uri,)) as carol, \
            SIPPhone(account(server, "alice", watch_presence=("carol",))) as alice:
        opened = await collect_events(alice, PresenceChanged, lambda ev: any(e.basic == "open" for e in ev), 10)
        assert opened and opened[-1].uri == carol_uri and opened[-1].basic == "open", opened
        await carol.command("presence_offline")
        closed = await collect_events(alice, PresenceChanged, lambda ev: any(e.basic == "closed" for e in ev), 10)
        assert closed and closed[-1].basic == "closed", closed

        await alice.publish_presence("closed", note="in a meeting", activity="busy")
        assert alice.publication is not None and alice.publication.state == "published"
        etag = alice.publication.etag
        deadline = time.monotonic() + 10
        ours = []
        while not ours and time.monotonic() < deadline:
            ours = [n for n in server.sent("NOTIFY") if re.search(r"(?m)^To: <sip:carol@", n)
                    and "in a meeting" in n and "<basic>closed</basic>" in n]
            await asyncio.sleep(0.2)
        assert ours, "Kamailio did not pass our PIDF to carol"
        await asyncio.sleep(MAX_EXPIRES - 1.0)  # our refreshes come at 80 % of the 10 s
        publishes = [p for p in server.received("PUBLISH") if re.search(r"(?m)^From: <sip:alice@", p)]
        refreshes = [p for p in publishes if f"SIP-If-Match: {etag}" in p]
        assert refreshes and all(p.endswith("\r\n\r\n") for p in refreshes), publishes[-1:]
        assert alice.publication.state == "published", alice.publication.reason
        # each refresh carries the credentials of the first PUBLISH's 407 (same Call-ID, RFC 3261
        # §22.3), so Kamailio, which challenges every PUBLISH out of a dialog, challenged one only
        assert all("\r\nProxy-Authorization: Digest " in p for p in refreshes), refreshes[-1]
        challenged = distinct([m for m in alice.endpoint.trace if m.direction == "received"
                               and m.summary.startswith("407") and re.search(rb"(?m)^CSeq: *\d+ PUBLISH", m.raw)])
        assert len(challenged) == 1, [m.summary for m in alice.endpoint.trace]
        subscribes = [s for s in server.received("SUBSCRIBE") if re.search(r"(?m)^From: <sip:alice@", s)
                      and "\r\nEvent: presence\r\n" in s]  # refreshed in its dialog: one Call-ID
        assert len({re.search(r"(?m)^Call-ID: *(\S+)", s).group(1) for s in subscribes}) == 1  # type: ignore[union-attr]
        assert alice.watches[(carol_uri, "presence")].state == "active"
    # closing removed our publication (Expires 0 with the entity-tag)
    last = [p for p in server.received("PUBLISH") if re.search(r"(?m)^From: <sip:alice@", p)][-1]
    assert "\r\nExpires: 0\r\n" in last and "SIP-If-Match:" in last


def test_the_cli_watches_and_publishes(server: PresencePeer) -> None:
    """``phone --watch carol --presence closed:lunch --json``: a JSON presence line for the
    publishing baresip, our PUBLISH seen by Kamailio, and a bad --presence a usage error."""

    async def run() -> subprocess.CompletedProcess[str]:
        async with presence_baresip(server, "carol", pubint=60):
            cmd = [*CLI, "phone", server.aor("dave"), "--password", server.users["dave"], "--registrar",
                   server.registrar, "--watch", "carol", "--blf", "carol", "--presence", "closed:lunch", "--json",
                   "--duration", "4"]
            proc = await asyncio.create_subprocess_exec(*cmd, stdout=asyncio.subprocess.PIPE,
                                                        stderr=asyncio.subprocess.PIPE)
            out, err = await asyncio.wait_for(proc.communicate(), 60)
            return subprocess.CompletedProcess(cmd, proc.returncode or 0, out.decode(), err.decode())

    done = asyncio.run(run())
    assert done.returncode == 0, done.stderr
    lines = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    presence = [e for e in lines if e["event"] == "presence"]
    assert presence and presence[-1]["uri"] == server.aor("carol") and presence[-1]["basic"] == "open", lines
    ours = [p for p in server.received("PUBLISH") if re.search(r"(?m)^From: <sip:dave@", p)]
    assert any("<basic>closed</basic>" in p and "lunch" in p for p in ours), ours
    assert "\r\nExpires: 0\r\n" in ours[-1]  # removed when the phone stopped
    bad = subprocess.run([*CLI, "phone", server.aor("dave"), "--presence", "maybe"], capture_output=True, text=True,
                         timeout=60)
    assert bad.returncode == 2 and "--presence" in bad.stderr and "Traceback" not in bad.stderr, bad.stderr


def test_the_api_watches_a_line_and_publishes(server: PresencePeer, api: httpx.Client) -> None:  # noqa: F811
    """``POST /api/phones/{id}/watches`` and ``/presence``: the phone view lists the watch and
    its state; ``DELETE`` ends both; an SCCP-style bad event is a 400."""
    created = api.post("/api/phones", json={"protocol": "sip", "aor": server.aor("dave"),
                                            "password": server.users["dave"], "registrar": server.registrar,
                                            "expires": 60})
    assert created.status_code == 201, created.text
    phone = created.json()["id"]
    try:
        watch = api.post(f"/api/phones/{phone}/watches", json={"target": "bob", "event": "dialog"})
        assert watch.status_code == 201 and watch.json()["uri"] == server.aor("bob"), watch.text
        for _ in range(100):
            view = api.get(f"/api/phones/{phone}").json()
            if view["watches"] and view["watches"][0]["state"] == "active":
                break
            time.sleep(0.05)
        assert view["watches"][0] | {"dialogs": []} == {"uri": server.aor("bob"), "event": "dialog", "state": "active",
                                                          "reason": "", "basic": None, "notes": [], "activities": [],
                                                          "lamp": "idle", "dialogs": []}, view["watches"]
        assert api.post(f"/api/phones/{phone}/watches", json={"target": "bob", "event": "mood"}).status_code == 400
        published = api.post(f"/api/phones/{phone}/presence", json={"basic": "closed", "note": "out"})
        assert published.status_code == 200 and published.json()["success"] is True, published.text
        assert any("<basic>closed</basic>" in p and ">out<" in p for p in server.received("PUBLISH")
                   if re.search(r"(?m)^From: <sip:dave@", p))
        assert api.delete(f"/api/phones/{phone}/presence").status_code == 200
        gone = api.delete(f"/api/phones/{phone}/watches", params={"target": "bob", "event": "dialog"})
        assert gone.status_code == 200, gone.text
        assert api.delete(f"/api/phones/{phone}/watches", params={"target": "bob", "event": "dialog"}).status_code == 404
        assert api.get(f"/api/phones/{phone}").json()["watches"] == []
    finally:
        api.delete(f"/api/phones/{phone}")
