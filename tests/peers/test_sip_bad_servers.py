"""Servers that answer badly: each probe ends with a clear error that says what did arrive,
and nothing received is lost from the exchange.

No real program misbehaves like this on demand, so the server is a few lines of asyncio
answering each request with a response built from it (its Via, From, To, Call-ID, CSeq)
and then spoiled in one way."""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator, Callable

import pytest

from skinnysip.probes.sip import ProbeRequest, digest_auth, invite, options, register

pytestmark = pytest.mark.peer

Spoil = Callable[[dict[str, str]], str]


def _fields(request: str) -> dict[str, str]:
    head = request.split("\r\n\r\n", 1)[0]
    out = {"method": head.split(" ", 1)[0]}
    for name in ("Via", "From", "To", "Call-ID", "CSeq"):
        m = re.search(rf"^{name}:(.*)$", head, re.M | re.I)
        out[name] = m.group(1).strip() if m else ""
    return out


def _response(f: dict[str, str], status: str = "200 OK", to_tag: str = ";tag=srv1", extra: str = "",
              via: str | None = None, cseq: str | None = None) -> str:
    return (f"SIP/2.0 {status}\r\nVia: {via or f['Via']}\r\nFrom: {f['From']}\r\nTo: {f['To']}{to_tag}\r\n"
            f"Call-ID: {f['Call-ID']}\r\nCSeq: {cseq or f['CSeq']}\r\n{extra}Content-Length: 0\r\n\r\n")


SPOILS: dict[str, Spoil] = {
    "bad status line": lambda f: _response(f).replace("SIP/2.0 200 OK", "SIP/2.0 2OO OK"),
    "body shorter than Content-Length": lambda f: _response(f).replace("Content-Length: 0", "Content-Length: 500"),
    "binary noise": lambda f: "\x00\xff" * 64,
}


@contextlib.asynccontextmanager
async def _server(spoil: Spoil) -> AsyncIterator[tuple[int, list[str]]]:
    received: list[str] = []

    class Server(asyncio.DatagramProtocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.transport = transport

        def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
            text = data.decode("latin-1")
            received.append(text)
            f = _fields(text)
            if f["method"] == "ACK" or len(received) > 50:
                return
            reply = _response(f) if f["method"] in ("BYE", "CANCEL") else spoil(f)
            self.transport.sendto(reply.encode("latin-1"), addr)  # type: ignore[attr-defined]

    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_datagram_endpoint(Server, local_addr=("127.0.0.1", 0))
    try:
        yield transport.get_extra_info("sockname")[1], received
    finally:
        transport.close()


def _request(port: int) -> ProbeRequest:
    return ProbeRequest(host="127.0.0.1", port=port, timeout=1.0, t1=0.2, username="alice", password="pw")


@pytest.mark.parametrize("spoil", sorted(SPOILS))
@pytest.mark.parametrize("operation", [options, register, invite, digest_auth], ids=lambda o: o.__name__)
async def test_malformed_answers_are_named_in_the_error(spoil: str, operation: Callable) -> None:
    async with _server(SPOILS[spoil]) as (port, _):
        result = await operation(_request(port))
    assert not result.success and result.status_code is None
    assert result.error.startswith(f"no response from 127.0.0.1:{port}/udp within 1000 ms; ")
    assert re.search(r"; \d+ malformed messages? ignored, last unparseable \(.+\)", result.error), result.error
    bad = [m for m in result.exchange if m.direction == "received"]
    assert bad and all(m.summary.startswith("unparseable (") for m in bad)
    assert all(m.raw for m in bad)  # what arrived is kept, as text


async def test_responses_to_someone_else_are_named_in_the_error() -> None:
    def other_branch(f: dict[str, str]) -> str:
        return _response(f, via=re.sub(r"branch=[^;]+", "branch=z9hG4bKnotyours", f["Via"]))

    async with _server(other_branch) as (port, _):
        result = await options(_request(port))
    assert not result.success
    assert re.search(r"; \d+ responses? matching no request of ours \(Via branch or CSeq method changed\) ignored",
                     result.error or ""), result.error
    assert [m.summary for m in result.exchange if m.direction == "received"][0] == "200 OK"


@pytest.mark.parametrize("spoil", ["no To tag", "unusable Contact"])
async def test_2xx_that_cannot_make_a_dialog_is_acked_and_reported(spoil: str) -> None:
    def answer(f: dict[str, str]) -> str:
        if f["method"] != "INVITE":
            return _response(f)
        if spoil == "no To tag":
            return _response(f, to_tag="", extra="Contact: <sip:uas@127.0.0.1>\r\n")
        return _response(f, extra="Contact: <<garbage>>\r\n")

    async with _server(answer) as (port, received):
        result = await invite(_request(port))
        await asyncio.sleep(0.1)
    assert not result.success
    assert result.status_code == 200 and result.status_text == "OK"  # what the server said is kept
    assert result.error.startswith("the 200 OK cannot set up a dialog (")
    assert "ACKed, but no BYE can be sent" in result.error
    assert result.cleanup == "ack"
    methods = [r.split(" ", 1)[0] for r in received]
    assert methods[0] == "INVITE" and "ACK" in methods and "BYE" not in methods
