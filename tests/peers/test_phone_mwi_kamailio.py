"""The SIP phone's message-waiting subscription (``SIPAccount.mwi``: SUBSCRIBE
``message-summary``, RFC 3842 over RFC 6665) against Kamailio's ``presence`` +
``presence_mwi`` modules, the notifier; and against a lab extension that is no voicemail. A voicemail server's PUBLISH of a summary (sent here
from a plain socket, as a voicemail system would) makes Kamailio NOTIFY every subscriber.

Kamailio grants 10 s at most (``max_expires``), so the phone's refresh comes within the test.
"""

from __future__ import annotations

import asyncio
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from test_api_phone_http import uvicorn_server
from test_lab_sip import DOMAIN as LAB_DOMAIN
from test_lab_sip import port as lab_port
from test_lab_sip import settings as lab_settings

from peertools import free_port, require, stop_process
from skinnysip.lab.runner import Lab
from skinnysip.phone.api import ErrorEvent, MessageWaiting
from skinnysip.phone.sip_phone import SIPAccount, SIPPhone

pytestmark = [
    pytest.mark.peer,
    pytest.mark.timeout(60),
    pytest.mark.skipif(not Path("/usr/lib/x86_64-linux-gnu/kamailio/modules/presence_mwi.so").exists()
                       and not list(Path("/usr/lib").glob("*/kamailio/modules/presence_mwi.so")),
                       reason="kamailio-presence-modules is installed by scripts/install-deps.sh"),
]

MAX_EXPIRES = 10
MODULES = ("tm", "sl", "rr", "pv", "maxfwd", "textops", "siputils", "db_text", "presence", "presence_mwi")

CONFIG = """#!KAMAILIO
debug=2
log_stderror=yes
children=1
listen=udp:127.0.0.1:{port}
mpath="{modules}"
{modules_loaded}
modparam("presence", "db_url", "text://{db}")
modparam("presence", "server_address", "sip:127.0.0.1:{port}")
modparam("presence", "max_expires", {max_expires})
request_route {{
  if (!mf_process_maxfwd_header("10")) {{ sl_send_reply("483", "Too Many Hops"); exit; }}
  if (is_method("SUBSCRIBE")) {{ handle_subscribe(); exit; }}
  if (is_method("PUBLISH")) {{ handle_publish(); exit; }}
  sl_send_reply("404", "Not here");
}}
"""


@pytest.fixture(scope="module")
def notifier() -> Iterator[int]:
    """Kamailio as the message-summary notifier on a free UDP port of 127.0.0.1; its port."""
    binary = require("kamailio")
    modules = next(Path("/usr/lib").glob("*/kamailio/modules/presence_mwi.so")).parent
    workdir = Path(tempfile.mkdtemp(prefix="skinnysip-kamailio-presence-"))
    shutil.copytree("/usr/share/kamailio/dbtext/kamailio", workdir / "db")
    port = free_port(socket.SOCK_DGRAM)
    cfg = workdir / "kamailio.cfg"
    cfg.write_text(CONFIG.format(port=port, modules=modules, db=workdir / "db", max_expires=MAX_EXPIRES,
                                 modules_loaded="\n".join(f'loadmodule "{m}.so"' for m in MODULES)))
    check = subprocess.run([binary, "-c", "-f", str(cfg)], capture_output=True, text=True, timeout=30)
    assert check.returncode == 0, check.stderr[-2000:]
    proc = subprocess.Popen([binary, "-f", str(cfg), "-DD", "-E", "-P", str(workdir / "pid"), "-Y", str(workdir),
                             "-m", "32", "-M", "8"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(1.0)  # UDP has no connect to wait for; the first test's SUBSCRIBE retransmits anyway
        assert proc.poll() is None, "kamailio with presence did not start"
        yield port
    finally:
        stop_process(proc)
        shutil.rmtree(workdir, ignore_errors=True)


def publish(port: int, user: str, body: str, n: int) -> str:
    """A voicemail server's PUBLISH of ``user``'s summary (RFC 3903): Kamailio's status line."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.settimeout(5)
        data = (f"PUBLISH sip:{user}@127.0.0.1 SIP/2.0\r\n"
                f"Via: SIP/2.0/UDP 127.0.0.1:{sock.getsockname()[1]};branch=z9hG4bKvm{n}x{time.time_ns()}\r\n"
                f"Max-Forwards: 70\r\nFrom: <sip:voicemail@127.0.0.1>;tag=vm{n}\r\nTo: <sip:{user}@127.0.0.1>\r\n"
                f"Call-ID: vm-{n}-{time.time_ns()}\r\nCSeq: {n} PUBLISH\r\nEvent: message-summary\r\nExpires: 3600\r\n"
                f"Content-Type: application/simple-message-summary\r\nContent-Length: {len(body)}\r\n\r\n{body}")
        sock.sendto(data.encode(), ("127.0.0.1", port))
        return sock.recv(65536).decode(errors="replace").split("\r\n", 1)[0]


async def events_of(phone: SIPPhone, kind: type, count: int, timeout: float) -> list:
    found: list = []
    deadline = time.monotonic() + timeout
    while len(found) < count and time.monotonic() < deadline:
        event = await phone.next_event(0.2)
        if isinstance(event, kind):
            found.append(event)
    return found


async def test_subscribed_phone_hears_the_mailbox_refreshes_and_unsubscribes(notifier: int) -> None:
    account = SIPAccount(aor="sip:alice@127.0.0.1", registrar=f"127.0.0.1:{notifier}", register=False, mwi=True,
                         listen_host="127.0.0.1")
    async with SIPPhone(account) as phone:
        assert phone.mwi is not None
        for _ in range(50):
            if phone.mwi.state == "active":
                break
            await asyncio.sleep(0.1)
        assert phone.mwi.state == "active", phone.mwi.reason
        waiting = "Messages-Waiting: yes\r\nMessage-Account: sip:alice@127.0.0.1\r\nVoice-Message: 2/8 (0/2)\r\n"
        assert publish(notifier, "alice", waiting, 1) == "SIP/2.0 200 OK"
        [event] = await events_of(phone, MessageWaiting, 1, 5)
        assert event.waiting and event.account == "sip:alice@127.0.0.1"
        assert dict(event.counts) == {"voice-message": (2, 8, 0, 2)}
        assert publish(notifier, "alice", "Messages-Waiting: no\r\n", 2) == "SIP/2.0 200 OK"
        [cleared] = await events_of(phone, MessageWaiting, 1, 5)
        assert cleared.waiting is False
        # Kamailio grants 10 s: the refresh, in the dialog, before they run out
        await asyncio.sleep(MAX_EXPIRES * 0.8 + 1.0)
        subscribes = [r for r in phone.endpoint.trace if r.summary.startswith("SUBSCRIBE")]
        assert len(subscribes) >= 2 and len({r.call_id for r in subscribes}) == 1
        assert phone.mwi.state == "active"
        assert not await events_of(phone, ErrorEvent, 1, 0.3)
    # closing the phone unsubscribes: a SUBSCRIBE with Expires 0, answered 200
    trace = list(phone.endpoint.trace)
    last = [r for r in trace if r.summary.startswith("SUBSCRIBE")][-1]
    assert b"Expires: 0" in last.raw
    assert trace[trace.index(last) + 1].summary == "200 OK"


async def test_a_server_without_the_event_package_is_an_error_event() -> None:
    """A mailbox URI that is no voicemail server: the lab's echo extension, whose UA does not
    take SUBSCRIBE (405; the lab itself is the notifier only for its users' own mailboxes,
    test_lab_voicemail.py). The refusal is an ErrorEvent, the phone goes on."""
    async with Lab(lab_settings()) as lab:
        account = SIPAccount(aor=f"sip:1001@{LAB_DOMAIN}", password="demo1001",
                             registrar=f"127.0.0.1:{lab_port(lab, 'udp')}", mwi=True, mwi_uri=f"sip:600@{LAB_DOMAIN}")
        async with SIPPhone(account) as phone:
            [error] = await events_of(phone, ErrorEvent, 1, 10)
            assert error.reason == "SUBSCRIBE message-summary refused: 405 Method Not Allowed"
            assert phone.mwi is not None and phone.mwi.state == "failed"
            assert phone.registration.value == "registered"


async def test_the_api_phone_view_shows_the_mailbox(notifier: int) -> None:
    """``GET /api/phones/{id}`` carries ``messageWaiting``: the subscription's state and the
    last summary heard (counts per message class), so a client that was not listening to the
    event socket when the NOTIFY came still sees the lamp. (Before, only the event said it.)"""
    body = {"protocol": "sip", "aor": "sip:carol@127.0.0.1", "registrar": f"127.0.0.1:{notifier}",
            "register": False, "mwi": True}
    with uvicorn_server() as (address, _):
        async with httpx.AsyncClient(base_url=f"http://{address}", timeout=30) as api:
            created = await api.post("/api/phones", json=body)
            assert created.status_code == 201, created.text
            pid = created.json()["id"]
            view: dict = {}
            for _ in range(50):
                view = (await api.get(f"/api/phones/{pid}")).json()["messageWaiting"]
                if view["subscription"] == "active":
                    break
                await asyncio.sleep(0.1)
            assert view["subscription"] == "active" and view["waiting"] is None and view["counts"] == {}, view
            waiting = "Messages-Waiting: yes\r\nMessage-Account: sip:carol@127.0.0.1\r\nVoice-Message: 3/1 (1/0)\r\n"
            assert publish(notifier, "carol", waiting, 11) == "SIP/2.0 200 OK"
            for _ in range(50):
                view = (await api.get(f"/api/phones/{pid}")).json()["messageWaiting"]
                if view["waiting"] is not None:
                    break
                await asyncio.sleep(0.1)
            assert view["waiting"] is True and view["account"] == "sip:carol@127.0.0.1", view
            assert view["counts"] == {"voice-message": {"new": 3, "old": 1, "newUrgent": 1, "oldUrgent": 0}}
            assert view["updated"] is not None and abs(view["updated"] - time.time()) < 10
            listed = (await api.get("/api/phones")).json()["phones"]
            assert [p["messageWaiting"]["waiting"] for p in listed if p["id"] == pid] == [True]
            assert (await api.delete(f"/api/phones/{pid}")).status_code == 200
