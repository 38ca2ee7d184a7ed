"""The phone as a watcher and a presence publisher, at the edges a real server does not show:
busy-lamp dialog-info (RFC 4235) with full and partial documents and a version gap, a PIDF
(RFC 3863) with notes and RPID activities, malformed bodies (400 with a Warning), and PUBLISH
(RFC 3903) with its entity-tag refreshes, a 412 and the removal. The notifier is a raw UDP
socket on 127.0.0.1 that sends exact bytes; each NOTIFY goes out when the phone answered the
one before. Kamailio's side is in ``tests/peers/test_phone_presence.py``."""

from __future__ import annotations

import asyncio
import json
import os
import re
import sys
from pathlib import Path
from typing import Any

import pytest

from skinnysip.phone import subscription
from skinnysip.phone.api import DialogStateChanged, ErrorEvent, PhoneError, PresenceChanged, event_to_dict
from skinnysip.phone.sip_phone import SIPAccount, SIPPhone

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from peertools import collect_events  # noqa: E402
from rawsip import response, udp_server  # noqa: E402

pytestmark = pytest.mark.timeout(60)

ENTITY = "sip:bob@example.test"
DI = "urn:ietf:params:xml:ns:dialog-info"


def dialog_info(version: int, state: str, dialogs: str = "") -> str:
    return (f'<?xml version="1.0"?>\n<dialog-info xmlns="{DI}" version="{version}" state="{state}" '
            f'entity="{ENTITY}">{dialogs}</dialog-info>')


def dialog(state: str, direction: str = "recipient", ident: str = "d1") -> str:
    return (f'<dialog id="{ident}" call-id="c-{ident}" local-tag="l1" remote-tag="r1" direction="{direction}">'
            f'<state>{state}</state><remote><identity>sip:carol@example.test</identity></remote></dialog>')


PIDF = ('<?xml version="1.0" encoding="UTF-8"?>\n<presence xmlns="urn:ietf:params:xml:ns:pidf" '
        'xmlns:dm="urn:ietf:params:xml:ns:pidf:data-model" xmlns:rpid="urn:ietf:params:xml:ns:pidf:rpid" '
        f'entity="{ENTITY}"><tuple id="t1"><status><basic>closed</basic></status></tuple>'
        '<dm:person id="p1"><rpid:activities><rpid:meal/></rpid:activities><dm:note>at lunch</dm:note>'
        '</dm:person></presence>')


class Notifier:
    """Answers SUBSCRIBE 200 (Expires 60) and sends ``bodies`` as NOTIFYs, the next one each
    time the phone answers the previous one; a None in ``bodies`` waits for the next
    SUBSCRIBE instead. Remembers the SUBSCRIBEs and the phone's answers."""

    def __init__(self, event: str, content_type: str, bodies: list[str | None]) -> None:
        self.event, self.content_type, self.bodies = event, content_type, list(bodies)
        self.cseq = 0
        self.answers: list[str] = []
        self.subscribes: list[str] = []
        self.dialog: dict[str, str] = {}

    def notify(self, final: str | None = None) -> list[bytes]:
        """The next NOTIFY; ``final``: the body of a last one, ``terminated`` (RFC 6665 §4.2.1.2)."""
        if final is None and (not self.bodies or self.bodies[0] is None):
            return []
        body = (final if final is not None else str(self.bodies.pop(0))).encode()
        state = "terminated;reason=timeout" if final is not None else "active;expires=60"
        self.cseq += 1
        d = self.dialog
        head = (f"NOTIFY {d['contact']} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{d['port']};branch=z9hG4bKn{self.cseq}"
                f"x{len(self.answers)}\r\nMax-Forwards: 70\r\nFrom: {d['to']};tag=ntf1\r\nTo: {d['from']}\r\n"
                f"Call-ID: {d['call_id']}\r\nCSeq: {self.cseq} NOTIFY\r\nEvent: {self.event}\r\n"
                f"Subscription-State: {state}\r\nContact: <sip:127.0.0.1:{d['port']}>\r\n"
                f"Content-Type: {self.content_type}\r\nContent-Length: {len(body)}\r\n\r\n")
        return [head.encode() + body]

    def __call__(self, data: bytes, f: dict[str, str]) -> list[bytes]:
        if f["method"] == "SUBSCRIBE":
            self.subscribes.append(data.decode("latin-1"))
            contact = re.search(r"<([^>]+)>", f["Contact"])
            assert contact is not None
            first = "call_id" not in self.dialog
            self.dialog = {"contact": contact.group(1), "to": f["To"].split(";tag=")[0], "from": f["From"],
                           "call_id": f["Call-ID"], "port": self.dialog.get("port", "")}
            ok = response(f, to_tag="" if ";tag=" in f["To"] else ";tag=ntf1",
                          extra=f"Expires: 60\r\nContact: <sip:127.0.0.1:{self.dialog['port']}>\r\n")
            if "\r\nExpires: 0\r\n" in self.subscribes[-1]:  # the end: a last NOTIFY follows
                return [ok, *self.notify(final=self.bodies[-1] if self.bodies and self.bodies[-1] else "")]
            if self.bodies and self.bodies[0] is None:
                self.bodies.pop(0)
                first = True
            return [ok, *(self.notify() if first else [])]
        if f["method"] == "SIP/2.0":  # the phone's answer to our NOTIFY
            self.answers.append(data.decode("latin-1"))
            return self.notify()
        return [] if f["method"] == "ACK" else [response(f)]


def account(port: int, **kw: Any) -> SIPAccount:
    return SIPAccount(aor="sip:alice@example.test", registrar=f"127.0.0.1:{port}", register=False, timeout=3.0, **kw)


async def next_of(phone: SIPPhone, kind: type, count: int, timeout: float = 5.0) -> list[Any]:
    """The next ``count`` events of ``kind`` (fewer after ``timeout`` s)."""
    return await collect_events(phone, kind, lambda found: len(found) >= count, timeout)


async def test_a_busy_lamp_follows_full_and_partial_dialog_info() -> None:
    notifier = Notifier("dialog", "application/dialog-info+xml", [
        dialog_info(0, "full"),
        dialog_info(1, "partial", dialog("early")),
        dialog_info(2, "partial", dialog("confirmed")),
        dialog_info(3, "partial", dialog("terminated")),
    ])
    with udp_server(notifier) as (port, _):
        notifier.dialog["port"] = str(port)
        async with SIPPhone(account(port)) as phone:
            sub = phone.watch("bob", "dialog")
            assert phone.watch("sip:bob@example.test", "dialog") is sub  # watching again: the same watch
            events = await next_of(phone, DialogStateChanged, 4)
            assert [e.state for e in events] == ["idle", "ringing", "busy", "idle"]
            assert events[1].dialogs[0].remote_identity == "sip:carol@example.test"
            assert event_to_dict(events[2])["dialogs"][0]["state"] == "confirmed"
            assert sub.state == "active" and sub.lamp == "idle"
            assert await phone.unwatch("bob", "dialog") and not await phone.unwatch("bob", "dialog")
            for _ in range(40):  # the notifier's last NOTIFY (terminated) is answered 200, quietly
                if len(notifier.answers) == 5:
                    break
                await asyncio.sleep(0.05)
            assert len(notifier.answers) == 5 and notifier.answers[-1].startswith("SIP/2.0 200 "), notifier.answers[-1:]
            assert not [e for e in await next_of(phone, ErrorEvent, 1, 0.3)]
    subscribe = notifier.subscribes[0]
    assert subscribe.startswith("SUBSCRIBE sip:bob@example.test SIP/2.0\r\n")
    assert "\r\nEvent: dialog\r\n" in subscribe and "\r\nAccept: application/dialog-info+xml\r\n" in subscribe
    assert all(a.startswith("SIP/2.0 200 ") for a in notifier.answers)
    assert "\r\nExpires: 0\r\n" in notifier.subscribes[-1]  # unwatch: the subscription ended


async def test_a_version_gap_brings_a_refresh_for_the_full_state(monkeypatch: pytest.MonkeyPatch) -> None:
    """RFC 4235 §4.1: a partial document whose version is not the last + 1 cannot be applied;
    the phone refreshes the subscription, and the notifier's full document sets the lamp."""
    monkeypatch.setattr(subscription, "MIN_SPACING", 0.1)
    notifier = Notifier("dialog", "application/dialog-info+xml", [
        dialog_info(4, "full", dialog("confirmed")),
        dialog_info(6, "partial", dialog("terminated")),  # 5 was lost
        None,
        dialog_info(7, "full"),  # the answer to the refresh
    ])
    with udp_server(notifier) as (port, _):
        notifier.dialog["port"] = str(port)
        async with SIPPhone(account(port)) as phone:
            phone.watch("bob", "dialog")
            events = await next_of(phone, DialogStateChanged, 2)
            assert [e.state for e in events] == ["busy", "idle"]
            gaps = [e.reason for e in phone.seen if isinstance(e, ErrorEvent)]  # type: ignore[attr-defined]
            assert any("version 6" in reason and "refreshing" in reason for reason in gaps), gaps
    assert len(notifier.subscribes) >= 2 and notifier.subscribes[1].split("\r\n", 1)[0].startswith("SUBSCRIBE sip:")
    assert ";tag=" in re.search(r"(?m)^To:.*$", notifier.subscribes[1]).group(0)  # type: ignore[union-attr]


async def test_an_old_version_is_discarded_without_a_refresh() -> None:
    notifier = Notifier("dialog", "application/dialog-info+xml", [
        dialog_info(4, "full", dialog("confirmed")),
        dialog_info(4, "full"),  # a repeat of version 4 (saying something else): discarded
        dialog_info(3, "partial", dialog("terminated")),  # older still
    ])
    with udp_server(notifier) as (port, _):
        notifier.dialog["port"] = str(port)
        async with SIPPhone(account(port)) as phone:
            sub = phone.watch("bob", "dialog")
            events = await next_of(phone, DialogStateChanged, 3, 1.5)
            assert [e.state for e in events] == ["busy"] and sub.lamp == "busy"
            assert not [e for e in phone.seen if isinstance(e, ErrorEvent)]  # type: ignore[attr-defined]
            assert len(notifier.answers) == 3 and len(notifier.subscribes) == 1


async def test_presence_notes_and_activities_are_told() -> None:
    notifier = Notifier("presence", "application/pidf+xml", [PIDF])
    with udp_server(notifier) as (port, _):
        notifier.dialog["port"] = str(port)
        async with SIPPhone(account(port)) as phone:
            sub = phone.watch("bob")
            [event] = await next_of(phone, PresenceChanged, 1)
            assert (event.uri, event.basic, event.notes, event.activities) == (ENTITY, "closed", ("at lunch",), ("meal",))
            assert event_to_dict(event)["activities"] == ["meal"]
            assert sub.basic == "closed"
    assert "\r\nEvent: presence\r\n" in notifier.subscribes[0]
    assert "\r\nAccept: application/pidf+xml\r\n" in notifier.subscribes[0]


@pytest.mark.parametrize(("package", "content_type", "body"), [
    ("presence", "application/pidf+xml", "<presence xmlns='urn:ietf:params:xml:ns:pidf'><tuple"),  # truncated
    ("dialog", "application/dialog-info+xml", dialog_info(0, "full", dialog("dancing"))),  # no such state
    ("dialog", "application/dialog-info+xml",
     '<!DOCTYPE lol [<!ENTITY a "aaaa">]><dialog-info xmlns="urn:ietf:params:xml:ns:dialog-info"/>'),
])
async def test_a_malformed_body_is_refused_400_with_a_warning(package: str, content_type: str, body: str) -> None:
    notifier = Notifier(package, content_type, [body])
    with udp_server(notifier) as (port, _):
        notifier.dialog["port"] = str(port)
        async with SIPPhone(account(port)) as phone:
            phone.watch("bob", package)
            for _ in range(200):  # up to 10 s: a busy CI machine runs two test workers at once
                if notifier.answers:
                    break
                await asyncio.sleep(0.05)
            assert not await next_of(phone, DialogStateChanged if package == "dialog" else PresenceChanged, 1, 0.3)
    answer, *last = notifier.answers  # (and the answer to the last NOTIFY at close, if it came in time)
    assert answer.startswith("SIP/2.0 400 ") and "\r\nWarning: 399 " in answer, answer
    assert all(a.startswith("SIP/2.0 200 ") for a in last), last


def presence_server(etags: list[str], received: list[str], refuse_refresh: bool = False) -> Any:
    """200 with the next SIP-ETag to each PUBLISH (Expires 60); a refresh (no body) gets 412
    once when ``refuse_refresh``."""
    refused = [not refuse_refresh]

    def reply(data: bytes, f: dict[str, str]) -> list[bytes]:
        text = data.decode("latin-1")
        if f["method"] != "PUBLISH":
            return [] if f["method"] == "ACK" else [response(f)]
        received.append(text)
        if "SIP-If-Match:" in text and text.endswith("\r\n\r\n") and not refused[0]:
            refused[0] = True
            return [response(f, "412 Conditional Request Failed")]
        return [response(f, extra=f"SIP-ETag: {etags.pop(0) if len(etags) > 1 else etags[0]}\r\nExpires: 60\r\n")]

    return reply


async def test_publish_refresh_modify_and_remove_carry_the_entity_tag() -> None:
    received: list[str] = []
    with udp_server(presence_server(["e1", "e2", "e3", "e4"], received, refuse_refresh=True)) as (port, _):
        async with SIPPhone(account(port)) as phone:
            await phone.publish_presence("open", note="at my desk")
            assert phone.publication is not None and phone.publication.etag == "e1"
            assert phone.publication.expires == 60
            await phone.publication.refresh()  # 412: it forgot e1, so the body goes again
            assert phone.publication.etag == "e2"
            await phone.publish_presence("closed", activity="away")  # a modification of e2
            assert phone.publication.etag == "e3"
            with pytest.raises(ValueError):
                await phone.publish_presence("maybe")
    first, refresh, anew, modify, remove = received
    assert first.startswith("PUBLISH sip:alice@example.test SIP/2.0\r\n") and "\r\nEvent: presence\r\n" in first
    assert "SIP-If-Match" not in first and "<basic>open</basic>" in first and "at my desk" in first
    assert "\r\nSIP-If-Match: e1\r\n" in refresh and refresh.endswith("\r\n\r\n")  # no body
    assert "SIP-If-Match" not in anew and "<basic>open</basic>" in anew
    assert "\r\nSIP-If-Match: e2\r\n" in modify and "<basic>closed</basic>" in modify and "away" in modify
    assert "\r\nSIP-If-Match: e3\r\n" in remove and "\r\nExpires: 0\r\n" in remove


async def test_a_refused_publish_is_a_phone_error_with_the_answer() -> None:
    def refuse(data: bytes, f: dict[str, str]) -> list[bytes]:
        return [response(f, "489 Bad Event")]

    with udp_server(refuse) as (port, _):
        async with SIPPhone(account(port)) as phone:
            with pytest.raises(PhoneError, match="489 Bad Event"):
                await phone.publish_presence("open")
            assert phone.publication is not None and phone.publication.state == "failed"


def test_the_cli_prints_each_lamp_change() -> None:
    """``phone --blf bob`` (no registration) prints a line per NOTIFY: the lamp and the dialogs
    behind it, for a person (and JSON with --json)."""
    import subprocess

    notifier = Notifier("dialog", "application/dialog-info+xml", [
        dialog_info(0, "full"), dialog_info(1, "partial", dialog("early")), dialog_info(2, "partial", dialog("confirmed"))])
    with udp_server(notifier) as (port, _):
        notifier.dialog["port"] = str(port)
        done = subprocess.run([sys.executable, "-m", "skinnysip", "phone", "sip:alice@example.test", "--registrar",
                               f"127.0.0.1:{port}", "--no-register", "--blf", "bob", "--duration", "1.5",
                               "--exec", "sleep 1; watches"],
                              capture_output=True, text=True, timeout=60, env={**os.environ, "COLUMNS": "1000"})
    assert done.returncode == 0, done.stderr
    lines = [line for line in done.stdout.splitlines() if line.startswith("dialogState:")]
    assert lines == ["dialogState: uri=sip:bob@example.test, state=idle",
                     "dialogState: uri=sip:bob@example.test, state=ringing, dialogs=early recipient sip:carol@example.test",
                     "dialogState: uri=sip:bob@example.test, state=busy, dialogs=confirmed recipient sip:carol@example.test"], \
        done.stdout
    [shown] = [json.loads(line) for line in done.stdout.splitlines() if line.startswith('{"uri"')]
    assert shown == {"uri": "sip:bob@example.test", "event": "dialog", "state": "active", "reason": "", "lamp": "busy",
                     "dialogs": [{"id": "d1", "state": "confirmed", "direction": "recipient", "callId": "c-d1",
                                  "remote": "sip:carol@example.test", "remoteTarget": None, "duration": None}]}, shown
