"""``skinnysip sip request METHOD HOST`` — one request of any method but INVITE, ACK, CANCEL and REGISTER,
as sipsak sends a message of one's own — and the probes' ``--header`` (sipsak ``-j``):

- a NOTIFY with ``Event: check-sync`` (what makes a desk phone fetch its configuration) reaches
  SIPp, whose scenario fails the call unless the Event and the added field are there;
- a MESSAGE with a body goes through Kamailio as a PBX, which challenges it (407, answered with
  Digest), to a registered baresip, which shows the text;
- an extension method gets Kamailio's own answer; a User-Agent added replaces ours;
- what cannot be one request, and header fields skinnysip writes itself, are refused before
  anything is sent; the same over the HTTP API."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from baresip_peer import baresip
from sip_peers import KamailioPeer, kamailio, sipp_uas
from test_api_sip_http import api  # noqa: F401 (the uvicorn-served API, a fixture)
from test_phone_baresip import registered
from test_phone_session_timer import recv_checked
from test_phone_sipp import HEAD, TAIL, response

pytestmark = [pytest.mark.peer, pytest.mark.timeout(120)]

SIP = [sys.executable, "-m", "skinnysip", "sip"]


def run(*args: str, env: dict[str, str] | None = None, sip: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([*(SIP if sip else SIP[:-1]), *args], capture_output=True, text=True, timeout=60, env=env)
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc


def test_a_notify_check_sync_reaches_sipp_with_its_event_and_added_field() -> None:
    xml = (HEAD.format(name="check-sync") + recv_checked("NOTIFY", {"Event": "check-sync", "X-Probe": "night 7",
                                                                     "Contact": "sip:probe@127.0.0.1"})
           + response("200 OK") + TAIL)
    with sipp_uas(xml=xml) as peer:
        proc = run("request", "NOTIFY", f"127.0.0.1:{peer.port}", "--to", "1001", "--header", "Event: check-sync",
                   "-H", "X-Probe: night 7", "--json")
        sipp = peer.finish()
    body = json.loads(proc.stdout)
    assert proc.returncode == 0 and body["statusCode"] == 200 and body["method"] == "NOTIFY", body
    assert (sipp.successful_calls, sipp.failed_calls) == (1, 0), sipp.log[-2000:]
    sent = body["exchange"][0]["raw"]
    assert sent.startswith(f"NOTIFY sip:1001@127.0.0.1:{peer.port} SIP/2.0\r\n")
    assert "\r\nEvent: check-sync\r\nX-Probe: night 7\r\n" in sent and "Content-Length: 0\r\n" in sent


@pytest.fixture(scope="module")
def pbx() -> Iterator[KamailioPeer]:
    with kamailio(pbx=True) as peer:
        yield peer


async def test_a_message_with_a_body_through_the_pbx_to_baresip_with_digest(pbx: KamailioPeer) -> None:
    async with baresip("bob", pbx.users["bob"], f"127.0.0.1:{pbx.udp_port}") as bob:
        await registered(pbx, "bob")
        base = ["request", "MESSAGE", f"127.0.0.1:{pbx.udp_port}", "--domain", pbx.realm, "--to", "bob",
                "--user", "alice", "--body", "hello bob, from a probe", "--json"]
        # no password: the PBX's challenge is the answer
        refused = run(*base)
        body = json.loads(refused.stdout)
        assert refused.returncode == 1 and body["statusCode"] == 407, body
        assert body["requiresAuth"] is True and body["authScheme"] == "Digest"
        done = run(*base, "--password", pbx.users["alice"])
        body = json.loads(done.stdout)
        assert done.returncode == 0 and body["statusCode"] in (200, 202), body
        sent = [m["raw"] for m in body["exchange"] if m["direction"] == "sent"]
        assert [s.split(" ", 1)[0] for s in sent] == ["MESSAGE", "MESSAGE"]
        assert "Proxy-Authorization: Digest username=\"alice\"" in sent[1]
        assert "Content-Type: text/plain\r\n" in sent[1] and sent[1].endswith("\r\n\r\nhello bob, from a probe")
        deadline = time.monotonic() + 5
        while "hello bob, from a probe" not in bob.log.read_text(errors="replace"):
            assert time.monotonic() < deadline, bob.log.read_text(errors="replace")[-2000:]
            time.sleep(0.1)


def test_an_extension_method_gets_kamailios_answer_and_our_user_agent_can_be_replaced(
        kamailio_md5: KamailioPeer) -> None:
    proc = run("request", "FETCH", f"127.0.0.1:{kamailio_md5.udp_port}", "-H", "User-Agent: friendly-scanner",
               "--json")
    body = json.loads(proc.stdout)
    assert proc.returncode == 1 and body["statusCode"] == 404 and body["method"] == "FETCH", body
    sent = body["exchange"][0]["raw"]
    assert sent.count("User-Agent:") == 1 and "User-Agent: friendly-scanner\r\n" in sent
    assert re.search(r"request FETCH \S+ from 127\.0\.0\.1:", Path(kamailio_md5.log_file).read_text(errors="replace"))
    # --header on the other probes too: OPTIONS carries it
    proc = run("options", f"127.0.0.1:{kamailio_md5.udp_port}", "-H", "X-Probe: 1", "--json")
    assert proc.returncode == 0 and "\r\nX-Probe: 1\r\n" in json.loads(proc.stdout)["exchange"][0]["raw"]


@pytest.mark.parametrize(("args", "says"), [
    (["INVITE"], "use the invite probe"),
    (["ACK"], "belongs to an INVITE transaction"),
    (["cancel"], "belongs to a pending request"),
    (["REGISTER"], "would leave a binding"),
    (["NOT IFY"], "is not a SIP method"),
    (["NOTIFY", "-H", "Via: SIP/2.0/UDP x"], "Via is written by skinnysip itself"),
    (["NOTIFY", "-H", "i: x"], "Call-ID is written by skinnysip itself"),
    (["NOTIFY", "-H", "Event"], "is not 'Name: value'"),
    (["MESSAGE", "--content-type", "text/plain"], "a Content-Type needs a body"),
    (["MESSAGE", "--body", "x", "--content-type", "text"], "is not a media type"),
    (["MESSAGE", "--body", "x", "--body-file", "/etc/hostname"], "not both"),
])
def test_what_cannot_be_sent_is_refused_before_anything_is(args: list[str], says: str) -> None:
    proc = run("request", args[0], "127.0.0.1", "-p", "9", *args[1:])
    assert proc.returncode == 2 and says in proc.stderr, proc.stderr


def test_a_request_over_http(api: httpx.Client, kamailio_md5: KamailioPeer) -> None:  # noqa: F811
    r = api.post("/api/sip/request", json={"host": "127.0.0.1", "port": kamailio_md5.udp_port, "method": "FETCH",
                                           "headers": [{"name": "X-Probe", "value": "api"}], "body": "hi",
                                           "contentType": "text/plain;charset=utf-8"})
    body = r.json()
    assert r.status_code == 200 and body["statusCode"] == 404 and body["method"] == "FETCH", body
    assert "\r\nX-Probe: api\r\n" in body["exchange"][0]["raw"]
    assert "Content-Type: text/plain;charset=utf-8\r\n" in body["exchange"][0]["raw"]
    # methods are case-sensitive (RFC 3261 §7.1): sent as written
    r = api.post("/api/sip/request", json={"host": "127.0.0.1", "port": kamailio_md5.udp_port, "method": "fetch"})
    assert r.status_code == 200 and r.json()["exchange"][0]["raw"].startswith("fetch "), r.text
    for payload, field in (({"method": "INVITE"}, "method"), ({"method": "FETCH", "headers": [{"name": "CSeq",
                                                                                               "value": "1"}]},
                                                               "headers"),
                           ({"method": "FETCH", "contentType": "text"}, "contentType"),
                           ({"method": "FETCH", "contentType": "text/plain"}, "body: content_type: a Content-Type needs")):
        bad = api.post("/api/sip/request", json={"host": "127.0.0.1", **payload})
        assert bad.status_code == 400 and bad.json()["error"].startswith(field), bad.text


def test_load_request_sends_notifies_sipp_counts_and_checks_each_one() -> None:
    """The ``request`` load scenario: each attempt one NOTIFY (a new Call-ID: one SIPp "call")
    with the added Event and a body; SIPp fails any call whose NOTIFY lacks them."""
    calls = 30
    xml = (HEAD.format(name="notify-flood")
           + recv_checked("NOTIFY", {"Event": "check-sync", "Content-Type": "application/x-test", "X-Run": "7"})
           + response("200 OK") + TAIL)
    with sipp_uas(xml=xml, calls=calls) as peer:
        proc = run("load", "request", f"127.0.0.1:{peer.port}", "--method", "NOTIFY", "--to", "1001", "-H",
                   "Event: check-sync", "-H", "X-Run: 7", "--body", "resync", "--content-type", "application/x-test",
                   "-r", "30", "-m", str(calls), "--json", "--quiet", sip=False)
        sipp = peer.finish(timeout=15)
    result = json.loads(proc.stdout)
    assert proc.returncode == 0 and (result["successful"], result["failed"]) == (calls, 0), (result, proc.stderr)
    assert (sipp.successful_calls, sipp.failed_calls) == (calls, 0), sipp.log[-2000:]
