"""SIP over WebSocket (RFC 7118) against Kamailio's websocket module, as WebRTC deployments run
it (``kamailio(websocket=True)``: xhttp takes the Upgrade, ``ws_handle_handshake`` wants the
``sip`` subprotocol, requests from WebSocket clients are NAT-handled as its example
configuration does). The probes and the phone over ``ws`` and ``wss``; tshark's view of the
wire; a browser-style leg (WSS signalling, ICE, DTLS-SRTP, rtcp-mux through rtpengine) to a
plain UDP phone; and what a client sees from a server that is not a WebSocket server.
Audio is proven by listening (≥ 95 % of 20 ms frames carry the other side's tone)."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from baresip_peer import baresip
from rtpengine_peer import RtpenginePeer, rtpengine
from sip_peers import KamailioPeer, kamailio
from test_api_sip_http import api  # noqa: F401 (the uvicorn-served API, a fixture)
from test_load_answer import load_call_to_load_answer, tone_share
from test_phone_baresip import THEIR_TONE, account, registered
from test_phone_srtp import bob_calls, heard_each_other, incoming, talk_to_bob

from peertools import TsharkCapture
from skinnysip.net import sip_transport
from skinnysip.phone.api import RegistrationState
from skinnysip.phone.sip_phone import SIPPhone
from skinnysip.probes import sip as probes

pytestmark = [pytest.mark.peer, pytest.mark.timeout(120)]

CLI = [sys.executable, "-m", "skinnysip"]


@pytest.fixture(scope="module")
def pbx() -> Iterator[KamailioPeer]:
    with kamailio(pbx=True, websocket=True) as peer:
        yield peer


def handshakes(pbx: KamailioPeer) -> list[str]:
    """The resources Kamailio logged WebSocket handshakes for (its xhttp event route)."""
    return re.findall(r"websocket handshake from \S+ for (\S+)", Path(pbx.log_file).read_text(errors="replace"))


@pytest.mark.parametrize("transport", ["ws", "wss"])
def test_cli_probes_over_a_websocket_url(pbx: KamailioPeer, transport: str) -> None:
    """``skinnysip sip options wss://host:port/path`` and ``sip auth`` (REGISTER with digest): the
    handshake asks for the URL's path, the requests say ``SIP/2.0/WS``/``WSS`` in their Via and
    ``transport=ws`` in their Contact (RFC 7118 §5.2: ``ws`` for both), Kamailio answers."""
    url = f"{transport}://127.0.0.1:{pbx.port(transport)}/sip-{transport}"
    done = subprocess.run([*CLI, "sip", "options", url, "--insecure", "--json"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    body = json.loads(done.stdout)
    assert body["statusCode"] == 200 and body["transport"] == transport, body
    assert body["serverAgent"].startswith("kamailio"), body
    sent = body["exchange"][0]["raw"]
    assert f"Via: SIP/2.0/{transport.upper()} 127.0.0.1:" in sent and ";transport=ws>" in sent, sent
    assert f"/sip-{transport}" in handshakes(pbx)

    done = subprocess.run([*CLI, "sip", "auth", url, "--insecure", "--user", "alice", "--password",
                           pbx.users["alice"], "--domain", pbx.realm, "--json"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    body = json.loads(done.stdout)
    assert body["statusCode"] == 200 and body["authenticated"] is True, body
    assert [m["summary"].split()[0] for m in body["exchange"][:4]] == ["REGISTER", "401", "REGISTER", "200"]


def test_tshark_reads_the_websocket_and_the_sip_inside(pbx: KamailioPeer) -> None:
    """What went over the wire, as Wireshark's dissectors read it: the HTTP Upgrade with
    ``Sec-WebSocket-Protocol: sip`` both ways and a 101, then SIP in WebSocket text frames —
    ours masked (RFC 6455 §5.3: a client masks every frame), Kamailio's not."""
    port = pbx.ws_port
    cap = TsharkCapture(f"tcp port {port}", decode_as=[f"tcp.port=={port},http"])
    with cap:
        result = asyncio.run(probes.options(probes.ProbeRequest(host="127.0.0.1", port=port, transport="ws",
                                                                ws_path="/tshark", timeout=5)))
    assert result.status_code == 200, result.error
    upgrade = cap.decode("http", ["http.request.method", "http.request.uri", "http.response.code",
                                  "http.upgrade", "http.sec_websocket_protocol"])
    request = next(p for p in upgrade if p.get("http.request.method"))
    response = next(p for p in upgrade if p.get("http.response.code"))
    assert request["http.request.uri"] == ["/tshark"] and request["http.sec_websocket_protocol"] == ["sip"]
    assert response["http.response.code"] == ["101"] and response["http.sec_websocket_protocol"] == ["sip"]
    frames = cap.decode("sip", ["websocket.opcode", "websocket.mask", "sip.Method", "sip.Status-Code", "sip.Via"])
    options = next(p for p in frames if p.get("sip.Method") == ["OPTIONS"])
    answer = next(p for p in frames if p.get("sip.Status-Code") == ["200"])
    assert options["websocket.opcode"] == ["1"] and options["websocket.mask"] == ["1"], options  # text, masked
    assert answer["websocket.opcode"] == ["1"] and answer["websocket.mask"] == ["0"], answer
    assert options["sip.Via"][0].startswith("SIP/2.0/WS 127.0.0.1:"), options


@pytest.mark.parametrize("transport", ["ws", "wss"])
async def test_phone_over_websocket_calls_and_is_called(pbx: KamailioPeer, transport: str, tmp_path: Path) -> None:
    """Our phone as a browser phone would be: registered over a WebSocket (Kamailio keeps the
    connection's address, ``fix_nated_register``), it calls baresip (UDP) and baresip calls it:
    Kamailio's INVITE to us comes down the same WebSocket (it cannot connect to a WebSocket
    client). Both hear each other both times."""
    async with baresip("bob", pbx.users["bob"], f"127.0.0.1:{pbx.udp_port}", tone_hz=THEIR_TONE) as bob:
        await registered(pbx, "bob")
        async with SIPPhone(account(pbx, "alice", transport, record_dir=str(tmp_path), auto_answer=0.2)) as phone:
            assert phone.registration is RegistrationState.REGISTERED, phone.registration_reason
            assert phone.flow is not None and phone.flow.transport == transport
            contacts = pbx.contacts("alice")
            assert len(contacts) == 1 and contacts[0].endswith(";transport=ws"), contacts
            _, report = await talk_to_bob(phone, bob, 2.0)
            heard_each_other(report, bob)

            mark = len(bob.events)
            call = await bob_calls(pbx, bob, phone)
            assert call.flow is not None and call.flow.connection == phone.flow.connection  # the one WebSocket
            invite = next(m for m in call.exchange if m.direction == "received" and m.summary.startswith("INVITE"))
            assert invite.transport == transport and ";transport=ws" in invite.summary, invite.summary
            await asyncio.sleep(2)
            await bob.command("hangup")
            assert await call.wait_ended(10)
            await bob.wait_event("CALL_CLOSED", after=mark)  # its recording is complete then
            report = call.media_report()
            assert report is not None
            heard_each_other(report, bob)


async def test_a_browser_style_leg_through_rtpengine(tmp_path: Path) -> None:
    """The leg a WebRTC gateway gives a browser: signalling over WSS, and rtpengine turning
    baresip's plain RTP offer into ``UDP/TLS/RTP/SAVP`` with ICE and rtcp-mux
    (``ICE=force rtcp-mux-offer``). Our phone answers as an ICE lite agent over DTLS-SRTP;
    rtpengine checks and nominates us, the handshake keys SRTP, and both sides hear each other."""
    with rtpengine() as relay, \
            kamailio(pbx=True, websocket=True,
                     rtpengine=(relay.ng_socket, "ICE=force rtcp-mux-offer UDP/TLS/RTP/SAVP", "")) as wss_pbx:
        async with baresip("bob", wss_pbx.users["bob"], f"127.0.0.1:{wss_pbx.udp_port}", tone_hz=THEIR_TONE) as bob, \
                SIPPhone(account(wss_pbx, "alice", "wss", auto_answer=0.2, ice=True, srtp="dtls",
                                 record_dir=str(tmp_path))) as phone:
            call = await bob_calls(wss_pbx, bob, phone)
            assert call.flow is not None and call.flow.transport == "wss"
            assert call.remote_offer is not None and call.remote_offer.media[0].proto == "UDP/TLS/RTP/SAVP"
            await asyncio.sleep(3)
            assert call.media is not None
            live = call.media.report()
            await bob.command("hangup")
            assert await call.wait_ended(10)
            report = call.media_report()
            assert report is not None
            ice = live["ice"]
            assert ice is not None and ice["rtp"]["nominated"] is not None, ice
            assert isinstance(relay, RtpenginePeer) and relay.relays(ice["rtp"]["nominated"][1]), ice
            assert all(d["error"] is None and d["profile"] for d in report["dtls"].values()), report["dtls"]
            assert report["srtp"]["auth_failures"] == 0
            heard_each_other(report, bob)


def test_a_port_that_is_not_a_websocket_server_says_so(pbx: KamailioPeer) -> None:
    """Kamailio's plain SIP TCP port takes the HTTP request to its xhttp route, which refuses
    it (403: not a WebSocket port); a port where nothing listens is refused by the system.
    Both end the probe with one line that says what happened, exit status 3."""
    refused = subprocess.run([*CLI, "sip", "options", f"ws://127.0.0.1:{pbx.tcp_port}/", "--json"],
                             capture_output=True, text=True, timeout=60)
    assert refused.returncode == 3, refused.stdout + refused.stderr
    body = json.loads(refused.stdout)
    assert "refused the WebSocket upgrade with HTTP 403" in body["error"], body["error"]
    assert "Traceback" not in refused.stderr


async def test_a_websocket_client_cannot_be_reached_once_its_connection_is_gone(pbx: KamailioPeer,
                                                                               tmp_path: Path) -> None:
    """RFC 7118 §5: a server cannot open a connection to a WebSocket client. When our phone's
    WebSocket closes, it opens a new one and registers again at once (not at the refresh), so
    calls to it work again; the old Contact is replaced."""
    async with baresip("bob", pbx.users["bob"], f"127.0.0.1:{pbx.udp_port}", tone_hz=THEIR_TONE) as bob:
        await registered(pbx, "bob")
        async with SIPPhone(account(pbx, "alice", "ws", record_dir=str(tmp_path), auto_answer=0.2)) as phone:
            first = pbx.contacts("alice")
            assert phone.flow is not None
            await phone.endpoint.transport.close_connection(phone.flow)
            for _ in range(150):  # the keep-alive loop notices within its interval
                await asyncio.sleep(0.1)
                now = pbx.contacts("alice")
                if now and now != first and phone.endpoint.transport.is_open(phone.flow):
                    break
            assert pbx.contacts("alice") != first, "never registered again over a new WebSocket"
            await bob.command("dial", f"sip:alice@{pbx.realm}")
            call = await incoming(phone)
            assert await call.wait_connected(10), call.end_reason
            await call.hangup()


def test_the_api_probes_and_phones_over_websocket(pbx: KamailioPeer, api: httpx.Client,  # noqa: F811
                                                  tmp_path: Path) -> None:
    """The HTTP API takes ``transport: "wss"`` and ``wsPath`` for a probe and for a live phone,
    and its pcap export writes the WebSocket's SIP messages for Wireshark's SIP dissector."""
    client = api
    r = client.post("/api/sip/options", json={"host": "127.0.0.1", "port": pbx.wss_port, "transport": "wss",
                                             "wsPath": "/from-the-api", "tlsVerify": False, "timeout": 5000})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["success"] is True and body["transport"] == "wss" and body["statusCode"] == 200, body
    assert "/from-the-api" in handshakes(pbx)
    bad = client.post("/api/sip/options", json={"host": "127.0.0.1", "transport": "ws", "wsPath": "no-slash"})
    assert bad.status_code == 400 and "wsPath" in bad.json()["error"], bad.text

    pcap = client.post("/api/pcap", json={"exchange": body["exchange"]})
    assert pcap.status_code == 200, pcap.text
    path = tmp_path / "ws.pcapng"
    path.write_bytes(pcap.content)
    out = subprocess.run(["tshark", "-r", str(path), "-T", "fields", "-e", "sip.Method", "-e", "sip.Status-Code",
                          "-e", "frame.comment"], capture_output=True, text=True, timeout=60, check=True).stdout
    assert "OPTIONS" in out and "200" in out and "WebSocket payload, over TLS" in out, out

    created = client.post("/api/phones", json={"protocol": "sip", "aor": f"sip:carol@{pbx.realm}",
                                               "password": pbx.users["carol"], "registrar": f"127.0.0.1:{pbx.ws_port}",
                                               "transport": "ws", "wsPath": "/phone", "expires": 60})
    assert created.status_code == 201, created.text
    phone = created.json()
    try:
        assert phone["registration"]["state"] == "registered", phone
        contacts = pbx.contacts("carol")
        assert len(contacts) == 1 and contacts[0].endswith(";transport=ws"), contacts
        assert "/phone" in handshakes(pbx)
    finally:
        assert client.delete(f"/api/phones/{phone['id']}").status_code in (200, 204)


def registrar_accepted(pbx: KamailioPeer) -> int:
    out = subprocess.run(["kamcmd", "-s", pbx.ctl_socket, "stats.get_statistics", "registrar:"],
                         capture_output=True, text=True, timeout=10).stdout
    found = re.search(r"accepted_regs = (\d+)", out)
    assert found, out
    return int(found.group(1))


@pytest.mark.parametrize("transport", ["ws", "wss"])
def test_load_register_over_websocket_counts_what_kamailio_counts(pbx: KamailioPeer, transport: str) -> None:
    """``skinnysip load register wss://…`` (digest, then unregister): every attempt succeeds
    and Kamailio's own counter agrees (each attempt is a REGISTER and an un-REGISTER)."""
    before = registrar_accepted(pbx)
    done = subprocess.run([*CLI, "load", "register", f"{transport}://127.0.0.1:{pbx.port(transport)}/load", "-u",
                           "alice", "--password", pbx.users["alice"], "--domain", pbx.realm, "-r", "50", "-m", "100",
                           "--insecure", "--json"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    result = json.loads(done.stdout)
    assert (result["attempted"], result["successful"], result["failed"]) == (100, 100, 0), result
    assert registrar_accepted(pbx) - before == 200
    assert "/load" in handshakes(pbx)


def test_load_calls_over_websocket_to_load_answer_are_heard(tmp_path: Path) -> None:
    """``load answer --no-register --transport ws`` is a WebSocket SIP server (our listener);
    ``load call --transport ws`` places three calls to it, each over its WebSocket: all
    counted on both sides, and each caller's recording hears the answering side's tone."""
    run = load_call_to_load_answer(tmp_path, 3, ["--transport", "ws", "--source", f"tone:{THEIR_TONE:g}"],
                                   ["--transport", "ws", "--source", "tone:440"])
    run.capture.stop()
    assert run.caller.returncode == 0, run.caller.stderr[-2000:]
    caller = json.loads(run.caller.stdout)
    assert (caller["successful"], caller["failed"]) == (3, 0), caller
    assert run.code == 0 and (run.result["successful"], run.result["failed"]) == (3, 0), run.err[-2000:]
    heard = sorted(run.record.glob("*-rx.wav"))
    assert len(heard) == 3 and all(tone_share(path, THEIR_TONE) > 0.8 for path in heard), heard


@pytest.mark.parametrize("transport", ["ws", "wss"])
async def test_a_browser_like_phone_with_an_invalid_host_is_reached_by_its_connection(
        pbx: KamailioPeer, transport: str, tmp_path: Path) -> None:
    """``ws_invalid_host``: Via and Contact name a random ``….invalid`` host, as JsSIP and SIP.js
    do. Kamailio (its example configuration's NAT handling) keeps the WebSocket's source for
    the binding and aliases the Contact of our INVITE, so both baresip's call to us and the
    BYE of our call to it come down our WebSocket."""
    async with baresip("bob", pbx.users["bob"], f"127.0.0.1:{pbx.udp_port}", tone_hz=THEIR_TONE) as bob:
        await registered(pbx, "bob")
        async with SIPPhone(account(pbx, "alice", transport, ws_invalid_host=True, auto_answer=0.2,
                                    record_dir=str(tmp_path))) as phone:
            assert phone.registration is RegistrationState.REGISTERED, phone.registration_reason
            host = phone.endpoint.ws_host
            assert host is not None and host.endswith(".invalid")
            register = next(m.raw.decode() for m in phone.endpoint.trace.records if m.summary.startswith("REGISTER"))
            assert f"Via: SIP/2.0/{transport.upper()} {host};rport;" in register, register
            assert f"@{host};transport=ws>" in register, register
            _, report = await talk_to_bob(phone, bob, 1.5)  # the in-dialog requests to our aliased Contact
            heard_each_other(report, bob)

            mark = len(bob.events)
            call = await bob_calls(pbx, bob, phone)
            invite = next(m for m in call.exchange if m.direction == "received" and m.summary.startswith("INVITE"))
            assert f"@{host};transport=ws" in invite.summary, invite.summary
            await asyncio.sleep(2)
            await bob.command("hangup")  # its BYE reaches us by the alias Kamailio put on our Contact
            assert await call.wait_ended(10)
            await bob.wait_event("CALL_CLOSED", after=mark)
            report = call.media_report()
            assert report is not None
            heard_each_other(report, bob)


def test_the_phone_command_takes_a_wss_url_and_a_browser_like_host(pbx: KamailioPeer) -> None:
    """``skinnysip phone … --registrar wss://host:port/path --ws-invalid-host``: registered over
    the secure WebSocket (the handshake asked for the path), the binding Kamailio keeps names the
    ``.invalid`` host, and the phone unregisters when it stops."""
    done = subprocess.run([*CLI, "phone", f"sip:carol@{pbx.realm}", "--password", pbx.users["carol"], "--registrar",
                           f"wss://127.0.0.1:{pbx.wss_port}/cli-phone", "--insecure", "--ws-invalid-host",
                           "--keepalive", "0.5", "--duration", "1.5", "--json"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    states = [json.loads(line)["state"] for line in done.stdout.splitlines() if '"registration"' in line]
    assert states == ["registering", "registered", "unregistered"], done.stdout  # pinged and answered meanwhile
    assert "/cli-phone" in handshakes(pbx)
    refused = subprocess.run([*CLI, "phone", f"sip:carol@{pbx.realm}", "--registrar", "wss://127.0.0.1:1/x",
                              "--transport", "udp", "--duration", "1"], capture_output=True, text=True, timeout=60)
    assert refused.returncode == 2 and "--registrar says wss but --transport says udp" in refused.stderr, refused.stderr


async def wait_registration(phone: SIPPhone, state: RegistrationState, timeout: float) -> None:
    for _ in range(int(timeout / 0.2)):
        if phone.registration is state:
            return
        await asyncio.sleep(0.2)
    raise AssertionError(f"not {state.value} within {timeout} s: {phone.registration} ({phone.registration_reason})")


async def test_a_frozen_server_is_noticed_by_its_unanswered_ping_and_the_phone_recovers(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A WebSocket peer must answer a ping (RFC 6455 §5.5.2). Kamailio frozen (SIGSTOP: its
    connections stay open, nothing is answered): our ping goes unanswered, after the pong
    timeout (10 s; 3 s here) the connection counts as failed, the phone tries to connect
    again and says registration failed, with why; once Kamailio runs again the phone
    registers again by itself."""
    monkeypatch.setattr(sip_transport, "PONG_TIMEOUT", 3.0)
    with kamailio(pbx=True, websocket=True) as pbx:
        async with SIPPhone(account(pbx, "alice", "ws", keepalive_interval=1.0, timeout=4.0)) as phone:
            assert phone.registration is RegistrationState.REGISTERED, phone.registration_reason
            with pbx.frozen():
                await wait_registration(phone, RegistrationState.FAILED, 45)
                assert "WebSocket" in phone.registration_reason, phone.registration_reason
            await wait_registration(phone, RegistrationState.REGISTERED, 40)
            assert phone.flow is not None and phone.endpoint.transport.is_open(phone.flow)
