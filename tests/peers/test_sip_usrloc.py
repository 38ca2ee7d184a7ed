"""``skinnysip sip usrloc`` (sipsak ``-U``): register, send a MESSAGE or OPTIONS to the AOR
through the server, answer it when the server delivers it to the binding, unregister — against
two registrar/proxy implementations that route to registered contacts (Kamailio's ``pbx``
configuration: ``lookup("location")`` then ``t_relay``; Net::SIP's registrar and stateless
proxy), and against a registrar that does not route (Kamailio's plain registrar: 404).

What is checked is what went over the wire and what the servers say: our request came back
to the Contact we registered, through the server (its Via above ours), our 200 went back
through it, and the binding is gone at the end (``kamcmd ul.lookup``; Net::SIP's log of each
authenticated REGISTER: the binding, then its removal with Expires 0)."""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from baresip_peer import baresip
from netsip_peer import NetSIPServer, netsip_server
from sip_peers import KamailioPeer, kamailio
from test_api_sip_http import api  # noqa: F401 (the uvicorn-served API, a fixture)
from test_lab_sip import DOMAIN as LAB_DOMAIN
from test_lab_sip import lab, port  # noqa: F401 (lab: a fixture)
from test_phone_baresip import registered

from skinnysip.lab.runner import Lab
from skinnysip.probes.sip import ProbeRequest, UsrlocResult, usrloc

pytestmark = [pytest.mark.peer, pytest.mark.timeout(120)]


@pytest.fixture(scope="module")
def pbx() -> Iterator[KamailioPeer]:
    with kamailio(pbx=True) as peer:
        yield peer


def probe(server: KamailioPeer | NetSIPServer, transport: str = "udp", user: str = "alice",
          password: str | None = None, method: str = "MESSAGE") -> UsrlocResult:
    port = server.port(transport) if isinstance(server, KamailioPeer) else server.port
    domain = server.realm if isinstance(server, KamailioPeer) else server.domain
    request = ProbeRequest(host="127.0.0.1", port=port, transport=transport,  # type: ignore[arg-type]
                           username=user, password=server.users[user] if password is None else password,
                           domain=domain, timeout=5, tls_verify=False)
    return asyncio.run(usrloc(request, method))


def summaries(result: UsrlocResult) -> list[tuple[str, str]]:
    return [(m.direction, m.summary) for m in result.exchange]


@pytest.mark.parametrize(("transport", "method"), [("tcp", "MESSAGE"), ("tls", "MESSAGE"), ("udp", "MESSAGE"),
                                                  ("udp", "OPTIONS")])
def test_kamailio_delivers_to_the_binding_and_the_binding_is_removed(pbx: KamailioPeer, transport: str,
                                                                    method: str) -> None:
    result = probe(pbx, transport, method=method)
    assert result.success and result.error is None, result.error
    assert (result.registered, result.register_status, result.method) == (True, 200, method)
    assert result.delivered and (result.status_code, result.status_text) == (200, "OK")
    assert result.server_agent and result.server_agent.startswith("skinnysip/")  # our own 200, relayed back
    assert result.hops == 1 and result.b2bua is False
    assert result.delivered_from == f"127.0.0.1:{pbx.port(transport)}"
    # the location service rewrote the Request-URI to the Contact we registered
    contact = next(m.raw for m in result.exchange if m.direction == "sent" and m.summary.startswith("REGISTER"))
    registered = re.search(r"(?im)^Contact: <([^>]+)>", contact)
    assert registered and result.delivered_uri == registered.group(1)
    assert result.delivery_time is not None and 0 <= result.delivery_time < 1000
    assert result.unregistered is True and pbx.contacts("alice") == []
    # the ladder: the PBX challenges a MESSAGE from its users (407), not an OPTIONS; it relays
    # the request to us and our 200 back
    challenge = [("sent", f"{method} sip:alice@{pbx.realm}"), ("received", "407 Proxy Authentication Required")]
    assert summaries(result)[4:-2] == [
        *(challenge if method == "MESSAGE" else []), ("sent", f"{method} sip:alice@{pbx.realm}"),
        ("received", f"{method} {result.delivered_uri}"), ("sent", "200 OK"), ("received", "200 OK")]


def test_a_b2bua_that_sends_the_message_anew_is_recognised_by_its_text() -> None:
    """Kamailio answering the MESSAGE 202 itself and sending a new one to the binding (the uac
    module), as PBXs that are back-to-back user agents relay messages: another Call-ID, From
    the PBX, none of our Via fields; the random text of the body is what comes back."""
    with kamailio(pbx=True, message_b2bua=True) as b2bua:
        result = probe(b2bua)
        assert result.success and result.delivered and result.b2bua is True, result.error
        assert (result.status_code, result.status_text) == (202, "Accepted") and result.hops == 1
        ours = next(m.raw for m in result.exchange if m.direction == "sent" and m.summary.startswith("MESSAGE"))
        arrived = next(m.raw for m in result.exchange if m.direction == "received" and m.summary.startswith("MESSAGE"))
        call_id = re.compile(r"(?im)^Call-ID: *(\S+)")
        assert call_id.search(ours).group(1) != call_id.search(arrived).group(1)  # type: ignore[union-attr]
        assert re.search(r"(?im)^From: <sip:pbx@", arrived) and ours.split("\r\n\r\n", 1)[1] in arrived
        assert "b2bua: MESSAGE anew to sip:alice@127.0.0.1:" in Path(b2bua.log_file).read_text(errors="replace")
        assert result.unregistered is True and b2bua.contacts("alice") == []


def test_a_registrar_that_does_not_route_is_not_delivered(kamailio_md5: KamailioPeer) -> None:
    """Kamailio's plain registrar keeps the binding but answers requests to users itself."""
    result = probe(kamailio_md5)
    assert result.success and result.registered and not result.delivered
    assert (result.status_code, result.status_text) == (404, "Not Here")
    assert result.delivered_from is None and result.unregistered is True and kamailio_md5.contacts("alice") == []


def test_a_refused_registration_sends_nothing_to_the_aor(pbx: KamailioPeer) -> None:
    result = probe(pbx, password="not-her-password")
    assert not result.success and result.error == "registration refused: 403 Forbidden"
    assert (result.registered, result.register_status, result.status_code) == (False, 403, 403)
    assert [s for _, s in summaries(result)] == [f"REGISTER sip:{pbx.realm}", "401 Unauthorized",
                                                 f"REGISTER sip:{pbx.realm}", "403 Forbidden"]


def test_net_sip_registrar_and_stateless_proxy_deliver_to_the_binding() -> None:
    """A stack written apart from Kamailio's: it challenges the MESSAGE with 401 (not 407), its
    proxy is stateless and rewrites the Request-URI to the registered contact."""
    with netsip_server() as server:
        result = probe(server)
        assert result.success and result.delivered, result.error
        assert (result.status_code, result.hops, result.delivered_from) == (200, 1, f"127.0.0.1:{server.port}")
        assert summaries(result)[5][1].startswith("401 ")  # its reason phrase: Authorization required
        assert result.unregistered is True
        assert server.registrations() == [("alice", 60), ("alice", 0)]  # the binding, then its removal
        assert server.seen("MESSAGE") == 2  # challenged, then relayed


def test_cli_exit_status_and_nagios_line(pbx: KamailioPeer, kamailio_md5: KamailioPeer) -> None:
    def run(server: KamailioPeer, *extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "skinnysip", "sip", "usrloc", f"127.0.0.1:{server.udp_port}",
                               "-u", "alice", "--domain", server.realm, *extra], capture_output=True, text=True,
                              timeout=60, env={"SKINNYSIP_PASSWORD": server.users["alice"], "PATH": "/usr/bin:/bin"})

    done = run(pbx)
    assert done.returncode == 0 and done.stdout.startswith("ok"), done.stdout + done.stderr
    assert re.search(r"delivered to us\s+True", done.stdout) and re.search(r"proxies on the way\s+1", done.stdout)
    done = run(pbx, "--method", "options", "--nagios")
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.startswith(f"SIP OK - OPTIONS to the registered AOR came back through 127.0.0.1:{pbx.udp_port}/udp")
    assert re.search(r"\| rtt=[0-9.]+ms;;;0; delivery=[0-9.]+ms;;;0;\n$", done.stdout), done.stdout
    done = run(kamailio_md5, "--nagios")
    assert done.returncode == 2 and done.stdout.startswith("SIP CRITICAL - not delivered: 404 Not Here"), done.stdout
    done = run(kamailio_md5)
    assert done.returncode == 1 and done.stdout.startswith("not delivered: 404 Not Here"), done.stdout
    done = run(pbx, "--method", "INFO")
    assert done.returncode == 2 and "Invalid value for '--method': 'INFO' is not one of" in done.stderr, done.stderr


def test_over_the_http_api(api: httpx.Client, pbx: KamailioPeer) -> None:  # noqa: F811
    body = {"host": "127.0.0.1", "port": pbx.udp_port, "username": "alice", "password": pbx.users["alice"],
            "domain": pbx.realm, "method": "OPTIONS"}
    answer = api.post("/api/sip/usrloc", json=body)
    assert answer.status_code == 200, answer.text
    data = answer.json()
    assert data["success"] and data["delivered"] and data["method"] == "OPTIONS" and data["hops"] == 1
    assert data["registerStatus"] == 200 and data["unregistered"] is True and pbx.contacts("alice") == []
    assert api.post("/api/sip/usrloc", json={**body, "expires": 0}).status_code == 400
    assert api.post("/api/sip/usrloc", json={**body, "method": "INFO"}).status_code == 400


async def test_the_embedded_lab_delivers_to_the_binding(lab: Lab) -> None:  # noqa: F811
    """The README's lab as the server (its registrar and proxy): MESSAGE over TCP, OPTIONS over
    UDP; no binding is left."""
    assert lab.proxy is not None
    for transport, method in (("tcp", "MESSAGE"), ("udp", "OPTIONS")):
        request = ProbeRequest(host="127.0.0.1", port=port(lab, transport), transport=transport,  # type: ignore[arg-type]
                               username="1001", password="demo1001", domain=LAB_DOMAIN, timeout=5)
        result = await usrloc(request, method)
        assert result.success and result.delivered and result.status_code == 200, result.error
        assert result.hops == 1 and result.unregistered is True
    assert [b for b in lab.proxy.bindings() if b["user"] == "1001"] == []


async def test_a_forked_request_counts_only_when_our_copy_arrives(pbx: KamailioPeer) -> None:
    """alice's other device (baresip, registered as alice) gets a forked copy of the MESSAGE
    and may answer it first (RFC 3261 §16.7: the proxy relays the first 2xx); our copy still
    has to reach our binding, and the other binding stays registered."""
    async with baresip("alice", pbx.users["alice"], f"127.0.0.1:{pbx.udp_port}") as phone:
        await registered(pbx, "alice")
        theirs = pbx.contacts("alice")
        request = ProbeRequest(host="127.0.0.1", port=pbx.udp_port, username="alice", password=pbx.users["alice"],
                               domain=pbx.realm, timeout=5)
        result = await usrloc(request)
        assert result.success and result.delivered and result.status_code == 200, result.error
        assert result.hops == 1 and result.unregistered is True
        assert pbx.contacts("alice") == theirs  # only ours was removed
        for _ in range(50):  # the fork reached baresip too: it shows the text
            if "skinnysip usrloc check" in phone.log.read_text(errors="replace"):
                break
            await asyncio.sleep(0.1)
        else:
            raise AssertionError(phone.log.read_text(errors="replace")[-2000:])
