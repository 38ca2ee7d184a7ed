"""The lab proxy's request checks (RFC 3261 §16.3) and its own answers, byte-level over UDP
from a plain socket: OPTIONS to the lab itself → 200; Max-Forwards 0 → 483; a mailto:
Request-URI → 416; Proxy-Require → 420; a foreign domain → 404; an unauthenticated INVITE →
100 then 407 with a fresh digest challenge; a REGISTER for someone else's AOR → 403; no open
relay (forged in-dialog requests → 403, pre-loaded Routes → 407)."""

from __future__ import annotations

import itertools
import socket
from collections.abc import AsyncIterator, Iterator

import pytest
from test_lab_sip import DOMAIN, port, settings

from skinnysip.lab.runner import Lab
from skinnysip.sip.auth import DigestChallenge, DigestClient
from skinnysip.sip.message import Response, parse_message

pytestmark = [pytest.mark.peer, pytest.mark.timeout(60)]

_numbers = itertools.count(1)


@pytest.fixture
async def lab() -> AsyncIterator[Lab]:
    async with Lab(settings()) as running:
        yield running


@pytest.fixture
def sock() -> Iterator[socket.socket]:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    s.setblocking(False)
    yield s
    s.close()


def request(sock: socket.socket, method: str, uri: str, *, extra: str = "", to: str | None = None,
            from_user: str = "1001", max_forwards: int = 70, cseq: int = 1, to_tag: str | None = None) -> bytes:
    local = sock.getsockname()
    n = next(_numbers)
    return (f"{method} {uri} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:{local[1]};rport;branch=z9hG4bK{method}{cseq}x{n}\r\n"
            f"Max-Forwards: {max_forwards}\r\n"
            f"From: <sip:{from_user}@{DOMAIN}>;tag=t1\r\nTo: <{to or uri}>{f';tag={to_tag}' if to_tag else ''}\r\n"
            f"Call-ID: rules-{n if method != 'REGISTER' else 'reg'}\r\nCSeq: {cseq} {method}\r\n"
            f"Contact: <sip:{from_user}@127.0.0.1:{local[1]}>\r\n{extra}Content-Length: 0\r\n\r\n").encode()


async def exchange(sock: socket.socket, lab: Lab, data: bytes, finals: int = 1) -> list[Response]:
    import asyncio

    loop = asyncio.get_running_loop()
    await loop.sock_sendto(sock, data, ("127.0.0.1", port(lab, "udp")))
    out: list[Response] = []
    while sum(1 for r in out if r.status_code >= 200) < finals:
        raw = await asyncio.wait_for(loop.sock_recv(sock, 65536), 5)
        message = parse_message(raw)
        assert isinstance(message, Response)
        out.append(message)
    return out


async def test_proxy_rules(lab: Lab, sock: socket.socket) -> None:
    lab_uri = f"sip:{DOMAIN}"
    [ok] = await exchange(sock, lab, request(sock, "OPTIONS", lab_uri))
    assert ok.status_code == 200 and "INVITE" in (ok.headers.get("Allow") or "")
    [hops] = await exchange(sock, lab, request(sock, "MESSAGE", f"sip:1002@{DOMAIN}", max_forwards=0))
    assert hops.status_code == 483
    [scheme] = await exchange(sock, lab, request(sock, "MESSAGE", "mailto:someone@example.com",
                                                 to=f"sip:1002@{DOMAIN}"))
    assert scheme.status_code == 416
    [ext] = await exchange(sock, lab, request(sock, "MESSAGE", f"sip:1002@{DOMAIN}", extra="Proxy-Require: foo\r\n"))
    assert ext.status_code == 420 and ext.headers.get("Unsupported") == "foo"
    [foreign] = await exchange(sock, lab, request(sock, "MESSAGE", "sip:bob@example.com"))
    assert foreign.status_code == 404
    responses = await exchange(sock, lab, request(sock, "INVITE", f"sip:600@{DOMAIN}"))
    assert [r.status_code for r in responses] == [100, 407]
    challenge = DigestChallenge.parse(responses[1].headers.get("Proxy-Authenticate") or "", proxy=True)
    assert challenge.realm == DOMAIN and challenge.qop_options == ["auth"] and challenge.algorithm == "MD5"
    # 1001's right credentials, but for 1002's AOR: 403 (RFC 3261 §10.3 step 6)
    register = request(sock, "REGISTER", f"sip:127.0.0.1:{port(lab, 'udp')}", to=f"sip:1002@{DOMAIN}")
    [unauthorized] = await exchange(sock, lab, register)
    assert unauthorized.status_code == 401
    www = DigestChallenge.parse(unauthorized.headers.get("WWW-Authenticate") or "")
    name, value = DigestClient("1001", "demo1001").authorization(www, "REGISTER", f"sip:127.0.0.1:{port(lab, 'udp')}")
    retry = request(sock, "REGISTER", f"sip:127.0.0.1:{port(lab, 'udp')}", to=f"sip:1002@{DOMAIN}", cseq=2,
                    extra=f"{name}: {value}\r\n")
    [forbidden] = await exchange(sock, lab, retry)
    assert forbidden.status_code == 403
    assert lab.proxy is not None and lab.proxy.bindings() == []
    # no open relay: an "in-dialog" request (forged To tag) to an address that is neither a
    # registered contact nor a lab service, without the lab's Route, is refused
    [relay] = await exchange(sock, lab, request(sock, "MESSAGE", "sip:x@127.0.0.1:9", to_tag="f"))
    assert relay.status_code == 403
    # a pre-loaded Route beyond the lab needs credentials like any new request
    routed = await exchange(sock, lab, request(sock, "MESSAGE", "sip:x@127.0.0.1:9",
                                               extra="Route: <sip:127.0.0.1:9;lr>\r\n"))
    assert [r.status_code for r in routed] == [407]


async def test_the_labs_address_without_a_port_is_its_domain(lab: Lab, sock: socket.socket) -> None:
    """A Request-URI host that is the lab's address and has no port names the lab's domain
    (RFC 3261 §10.2: a domain is a host), though the lab listens on another port than 5060;
    with another port it names another server."""
    [ok] = await exchange(sock, lab, request(sock, "OPTIONS", "sip:127.0.0.1"))
    assert ok.status_code == 200 and "INVITE" in (ok.headers.get("Allow") or "")
    [challenge] = await exchange(sock, lab, request(sock, "MESSAGE", "sip:1002@127.0.0.1"))
    assert challenge.status_code == 407
    [register] = await exchange(sock, lab, request(sock, "REGISTER", "sip:127.0.0.1", to="sip:1001@127.0.0.1"))
    assert register.status_code == 401
    [elsewhere] = await exchange(sock, lab, request(sock, "MESSAGE", "sip:1002@127.0.0.1:9"))
    assert (elsewhere.status_code, elsewhere.reason) == (404, "Not Found (not a lab domain)")
