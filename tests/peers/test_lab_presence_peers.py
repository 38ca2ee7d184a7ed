"""The lab as presence server and busy-lamp-field notifier (``lab/presence.py``) with real
phones: baresip 1.0 and its ``presence`` module (baresip_peer's ``presence``/``pubint``/
``watch``) PUBLISHes its PIDF to the lab and watches ours through it; two baresips call each
other through the lab while our phone watches both lines' lamps (baresip 1.0 has no dialog
package of its own, so the watcher of the lamps is ours; the calls are baresip's).

What baresip 1.0 does here (seen on the wire, the lab's record of each Call-ID): its PUBLISH
and its SUBSCRIBE are challenged (407) and sent again with credentials; its
``presence_offline``/``presence_online`` PUBLISH with ``SIP-If-Match``; on quit it removes
its publication (``Expires: 0``). Its ``contacts`` command shows each watched contact as
``Online``/``Offline`` from the PIDF ``<basic>`` of our NOTIFYs. linphonec 5.1's ``friend add``
SUBSCRIBEs to a friend's presence and prints each change (an RPID activity as its words)."""

from __future__ import annotations

import asyncio
import re
import time

import pytest
from baresip_peer import Baresip, baresip
from linphone_peer import linphonec
from test_lab_sip import DOMAIN, account, lab, port, registered  # noqa: F401 (lab: the fixture)
from test_phone_presence import lamps

from peertools import collect_events
from skinnysip.lab.runner import Lab
from skinnysip.phone.api import DialogStateChanged, PresenceChanged
from skinnysip.phone.sip_phone import SIPPhone

pytestmark = [pytest.mark.peer, pytest.mark.timeout(120)]

_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def aor(user: str) -> str:
    return f"sip:{user}@{DOMAIN}"


async def contact_state(phone: Baresip, uri: str, wanted: str, timeout: float = 10.0) -> str:
    """baresip's presence state of contact ``uri`` (its ``contacts`` command: ``Online``,
    ``Offline``, ``Busy``, ``Unknown``) once it is ``wanted``, or the last seen after
    ``timeout`` s."""
    deadline = time.monotonic() + timeout
    state = ""
    while time.monotonic() < deadline:
        listing = _ANSI.sub("", str((await phone.command("contacts")).get("data", "")))
        line = next((line for line in listing.splitlines() if f"<{uri}>" in line), "")
        state = line.lstrip("> ").split(" ", 1)[0] if line else ""
        if state == wanted:
            break
        await asyncio.sleep(0.2)
    return state


async def presence_told(phone: SIPPhone, uri: str, basic: str, timeout: float = 10.0) -> PresenceChanged:
    events = await collect_events(phone, PresenceChanged, lambda ev: any(e.uri == uri and e.basic == basic
                                                                         for e in ev), timeout)
    told = [e for e in events if e.uri == uri and e.basic == basic]
    assert told, f"{uri} never {basic}: {events}"
    return told[-1]


def last_notify(phone: SIPPhone, user: str) -> bytes:
    """The last NOTIFY ``phone`` received about ``user``'s presence (raw bytes; b"" if none)."""
    told = [m.raw for m in phone.endpoint.trace if m.direction == "received" and m.summary.startswith("NOTIFY")
            and f'entity="{aor(user)}"'.encode() in m.raw]
    return told[-1] if told else b""


async def counted(running: Lab, what: str, count: int, timeout: float = 10.0) -> None:
    """Wait until the lab counts ``count`` of ``what`` (``publications``, ``presence``…:
    :meth:`LabProxy.subscriptions`)."""
    assert running.proxy is not None
    deadline = time.monotonic() + timeout
    while running.proxy.subscriptions()[what] != count:
        assert time.monotonic() < deadline, running.proxy.subscriptions()
        await asyncio.sleep(0.1)


async def test_baresip_publishes_to_the_lab_and_watches_our_presence(lab: Lab) -> None:  # noqa: F811
    """baresip (1002, ``pubint``) PUBLISHes ``open``: the lab keeps it and our phone (1001),
    watching 1002, hears it; ``presence_offline``/``presence_online`` reach us as closed/open.
    baresip watches 1001 through the lab: ``Online`` (our registration), ``Offline`` once our
    phone publishes ``closed`` with a note, ``Online`` again after ``open``. When baresip quits
    it removes its publication, and we are told the lab's own document again."""
    assert lab.proxy is not None
    async with SIPPhone(account(lab, "1001", watch_presence=("1002",), timeout=5.0)) as alice:
        await presence_told(alice, aor("1002"), "closed")  # not registered yet: the registrar's view
        async with baresip("1002", "demo1002", f"127.0.0.1:{port(lab, 'udp')}", presence=True, pubint=60,
                           watch=(aor("1001"),)) as bob:
            await registered(lab, "1002")
            await counted(lab, "publications", 1)  # baresip's PUBLISH, accepted after the 407
            await presence_told(alice, aor("1002"), "open")
            await counted(lab, "presence", 2)  # ours and baresip's (it subscribes 1 s after its start)
            await bob.command("presence_offline")
            await presence_told(alice, aor("1002"), "closed")
            await bob.command("presence_online")
            await presence_told(alice, aor("1002"), "open")
            assert await contact_state(bob, aor("1001"), "Online") == "Online"
            await alice.publish_presence("closed", note="lunch", activity="away")
            assert await contact_state(bob, aor("1001"), "Offline") == "Offline"
            await alice.publish_presence("open")
            assert await contact_state(bob, aor("1001"), "Online") == "Online"
            await counted(lab, "publications", 2)
        await counted(lab, "publications", 1)  # baresip removed its own on quit; ours is left
        # its watchers are told the lab's own view again (the registrar's: baresip 1.0 does not
        # always finish its un-REGISTER, whose 401 it leaves unanswered when it quits)
        deadline = time.monotonic() + 10
        while b'<tuple id="lab">' not in last_notify(alice, "1002"):
            assert time.monotonic() < deadline, last_notify(alice, "1002")
            await asyncio.sleep(0.1)
    # baresip's requests were challenged, then accepted
    published = [c for c in lab.calls() if c["method"] == "PUBLISH" and c["from"] == aor("1002")]
    summaries = [m["summary"] for c in published for m in c["messages"]]
    assert "407 Proxy Authentication Required" in summaries and "200 OK" in summaries, summaries


async def test_busy_lamps_of_a_call_between_two_baresips(lab: Lab) -> None:  # noqa: F811
    """baresip 1003 calls baresip 1002 (answering by hand) through the lab; our phone watches
    both lines: 1002's lamp idle → ringing → busy → idle (its dialog ``recipient``, 1003 the
    remote identity), 1003's idle → calling → busy → idle."""
    registrar = f"127.0.0.1:{port(lab, 'udp')}"
    async with baresip("1002", "demo1002", registrar, answermode="manual") as bob, \
            baresip("1003", "demo1003", registrar) as carol, \
            SIPPhone(account(lab, "1001", watch_dialog=("1002", "1003"), timeout=5.0)) as alice:
        await registered(lab, "1002")
        await registered(lab, "1003")
        start = await collect_events(alice, DialogStateChanged,
                                     lambda ev: lamps(ev, aor("1002")) == ["idle"] == lamps(ev, aor("1003")), 10)
        await carol.command("dial", aor("1002"))
        ringing = await collect_events(alice, DialogStateChanged, lambda ev: "ringing" in lamps(ev, aor("1002")), 10)
        await bob.wait_event("CALL_INCOMING")
        await bob.command("accept")
        busy = await collect_events(alice, DialogStateChanged, lambda ev: "busy" in lamps(ev, aor("1002"))
                                    and "busy" in lamps(ev, aor("1003")), 10)
        await carol.wait_event("CALL_ESTABLISHED")
        await asyncio.sleep(0.5)
        await carol.command("hangup")
        idle = await collect_events(alice, DialogStateChanged,
                                    lambda ev: lamps(ev, aor("1002"))[-1:] == ["idle"] == lamps(ev, aor("1003"))[-1:],
                                    10)
    events = start + ringing + busy + idle
    assert lamps(events, aor("1002")) == ["idle", "ringing", "busy", "idle"], lamps(events, aor("1002"))
    assert lamps(events, aor("1003")) == ["idle", "calling", "busy", "idle"], lamps(events, aor("1003"))
    confirmed = next(e for e in events if e.uri == aor("1002") and e.state == "busy")
    [dialog] = confirmed.dialogs
    assert dialog.direction == "recipient" and (dialog.remote_identity or "").startswith(aor("1003")), dialog
    assert dialog.call_id and dialog.local_tag and dialog.remote_tag


async def test_linphonec_watches_our_presence_through_the_lab(lab: Lab) -> None:  # noqa: F811
    """linphonec 5.1 adds us (1001) as a friend: it SUBSCRIBEs to our presence at the lab and
    shows what the NOTIFYs say — Offline while we are not registered, Online once we are, and
    "Out to lunch" when we PUBLISH ``closed`` with the RPID activity ``meal`` (RFC 4480): our
    PIDF as another implementation reads it."""
    assert lab.proxy is not None
    async with linphonec("1003", "demo1003", f"127.0.0.1:{port(lab, 'udp')}", realm=DOMAIN,
                         algorithm="MD5") as peer:
        await peer.wait_registered()
        mark = len(peer.lines)
        await peer.command(f'friend add "alice" {aor("1001")}')
        pattern = rf'^Friend "alice" <{re.escape(aor("1001"))}> is (.+)$'
        assert (await peer.wait_line(pattern, 10, mark)).group(1) == "Offline"
        async with SIPPhone(account(lab, "1001")) as ours:
            mark = len(peer.lines)
            assert (await peer.wait_line(pattern, 10, mark)).group(1) == "Online"
            mark = len(peer.lines)
            await ours.publish_presence("closed", note="lunch", activity="meal")
            assert (await peer.wait_line(pattern, 10, mark)).group(1) == "Out to lunch"
        subscribes = [c for c in lab.proxy.calls() if c["method"] == "SUBSCRIBE" and "1003" in c["from"]]
        assert subscribes and subscribes[-1]["state"] == "subscribed", subscribes
