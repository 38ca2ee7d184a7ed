"""STUN Binding from a media socket: the transport address a NAT maps it to (RFC 8489 §7,
which obsoletes RFC 5389; "server reflexive" in RFC 8445's words). The same Binding is
SIP outbound's keep-alive over UDP (RFC 5626 §4.4.2, §8): the SIP socket asks the registrar's
SIP port, and :func:`binding_answer` is the registrar's side.

A phone behind a NAT puts its private address in SDP, so the far end's RTP goes nowhere.
With a STUN server outside the NAT, each call's RTP and RTCP sockets first ask it which
address and port it saw them from, and the SDP gives those (pjsua's ``--stun-srv``,
baresip's ``medianat stun``). The NAT keeps the mapping while the call's RTP flows.

The messages and their retransmission (RTO 500 ms, doubling, 7 requests; RFC 8489 §6.2.1)
are aioice's (:mod:`aioice.stun`), imported only when a Binding is asked for. This module
sends over a datagram transport that the media stream owns and reads: the stream hands
each received datagram that :func:`is_stun` recognises to
:meth:`BindingClient.received`.
"""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from skinnysip.addresses import hostport, is_ipv6
from skinnysip.sip.message import SIPParseError
from skinnysip.sip.uri import parse_hostport

if TYPE_CHECKING:
    from aioice import stun as aioice_stun

#: The STUN port over UDP (RFC 8489 §9).
DEFAULT_PORT = 3478
#: Seconds :meth:`BindingClient.mapped_address` waits for an answer by default: the first
#: four requests (0, 0.5, 1.5, 3.5 s) and time for the last one's answer.
DEFAULT_TIMEOUT = 5.0
#: Binding transactions in flight on one client at most (a bound on the pending table).
MAX_PENDING = 8
STUN_HEADER_SIZE = 20  # RFC 8489 §5: type (16), length (16), magic cookie (32), transaction ID (96)

Address = tuple[str, int]


def is_stun(data: bytes) -> bool:
    """True if ``data`` is a STUN message sharing the media port: its first octet is 0..3
    (RFC 7983 §7, the demultiplexing of STUN, DTLS, TURN and RTP/RTCP on one port), it holds
    at least the 20-octet STUN header and its length field (a multiple of 4) covers the rest
    (RFC 8489 §5; RFC 3489's older messages, without the magic cookie, included).

    Peers send them from their RTP ports (ICE connectivity checks, RFC 7675 consent, NAT
    keep-alives); they are neither RTP nor RTCP, so a media stream counts them apart instead of
    as parse errors."""
    if len(data) < STUN_HEADER_SIZE or data[0] > 3:
        return False
    length = int.from_bytes(data[2:4], "big")
    return length % 4 == 0 and STUN_HEADER_SIZE + length == len(data)


class StunError(Exception):
    """A Binding that gave no mapped address: ``reason`` says why (no answer within the
    deadline, an error response with its code, a response without an address)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def parse_server(text: str) -> tuple[str, int]:
    """``host[:port]``, ``[IPv6]:port`` or a bare IPv6 literal → (host, port); port
    :data:`DEFAULT_PORT` when absent. ``ValueError`` for an empty or malformed host or a port
    outside 1-65535."""
    value = text.strip()
    if is_ipv6(value) and not value.startswith("["):
        return value, DEFAULT_PORT
    try:
        host, port = parse_hostport(value)
    except SIPParseError as exc:
        raise ValueError(f"STUN server {text!r}: {exc.reason}") from None
    if port == 0:
        raise ValueError(f"STUN server {text!r}: port 1-65535")
    return host, DEFAULT_PORT if port is None else port


#: RFC 8489 §5's magic cookie: a request without it comes from an RFC 3489 client
MAGIC_COOKIE = bytes.fromhex("2112a442")
_BINDING_REQUEST, _BINDING_RESPONSE, _MAPPED_ADDRESS = 0x0001, 0x0101, 0x0001


def binding_answer(data: bytes, source: Address) -> bytes | None:
    """The success response to an unauthenticated STUN Binding request ``data`` that came
    from ``source`` (IP text, port): XOR-MAPPED-ADDRESS = ``source`` and FINGERPRINT (RFC 8489
    §7.3.1, §14.2; RFC 5626 §8: a SIP outbound registrar or edge proxy is a STUN server on its
    SIP UDP ports). A request of an RFC 3489 client (no magic cookie: Sofia-SIP's ``stunc``,
    older phones) gets the answer it understands, as RFC 8489 §12.2 says: its 128-bit
    transaction ID echoed and a plain MAPPED-ADDRESS (:func:`classic_binding_answer`). None
    for anything that is not a well-formed Binding request."""
    if data[4:8] != MAGIC_COOKIE:
        return classic_binding_answer(data, source)
    from aioice import stun

    try:
        message = stun.parse_message(data)
    except ValueError:  # malformed, or a FINGERPRINT that does not match
        return None
    if message.message_method != stun.Method.BINDING or message.message_class != stun.Class.REQUEST:
        return None
    response = stun.Message(stun.Method.BINDING, stun.Class.RESPONSE, message.transaction_id,
                            {"XOR-MAPPED-ADDRESS": source})
    response.add_fingerprint()
    return bytes(response)


def classic_binding_answer(data: bytes, source: Address) -> bytes | None:
    """The RFC 3489 (§11.1) Binding response to an RFC 3489 Binding request ``data`` (a header
    whose 128-bit transaction ID has no magic cookie) from ``source``: the same transaction ID
    and MAPPED-ADDRESS = ``source`` (IPv4 only: RFC 3489 has no IPv6 family). None when it is no
    Binding request, when ``source`` is IPv6, or when it asks what one address cannot do
    (RESPONSE-ADDRESS, or a CHANGE-REQUEST with a flag set: another address or port to answer
    from, which RFC 8489 §12.2 lets a server refuse)."""
    if len(data) < STUN_HEADER_SIZE or int.from_bytes(data[0:2], "big") != _BINDING_REQUEST:
        return None
    length = int.from_bytes(data[2:4], "big")
    if length % 4 or STUN_HEADER_SIZE + length != len(data) or ":" in source[0]:
        return None
    pos = STUN_HEADER_SIZE
    while pos + 4 <= len(data):
        kind, size = int.from_bytes(data[pos:pos + 2], "big"), int.from_bytes(data[pos + 2:pos + 4], "big")
        value = data[pos + 4:pos + 4 + size]
        if len(value) != size:
            return None
        if kind == 0x0002 or (kind == 0x0003 and (size != 4 or int.from_bytes(value, "big") & 0x6)):
            return None  # RESPONSE-ADDRESS; CHANGE-REQUEST with change-IP or change-port
        pos += 4 + size + (-size % 4)
    mapped = b"\x00\x01" + source[1].to_bytes(2, "big") + ipaddress.IPv4Address(source[0]).packed
    attribute = _MAPPED_ADDRESS.to_bytes(2, "big") + len(mapped).to_bytes(2, "big") + mapped
    return _BINDING_RESPONSE.to_bytes(2, "big") + len(attribute).to_bytes(2, "big") + data[4:20] + attribute


class BindingClient:
    """Binding requests over a datagram socket read by someone else.

    ``send(data, address)`` sends one datagram from the socket whose mapping is wanted. The
    owner of the socket passes every datagram for which :func:`is_stun`
    is true to :meth:`received`.
    """

    def __init__(self, send: Callable[[bytes, Address], None]) -> None:
        self._send = send
        self._pending: dict[bytes, aioice_stun.Transaction] = {}

    # aioice's TransactionSender protocol
    def send_stun(self, message: Any, addr: Address) -> None:
        self._send(bytes(message), addr)

    def received(self, data: bytes, addr: Address) -> bool:
        """Give a received STUN datagram to the transaction it answers. True if it did; a
        malformed message or one for no pending request is dropped (False)."""
        if not self._pending:
            return False
        from aioice import stun

        try:
            message = stun.parse_message(data)
        except ValueError:
            return False
        transaction = self._pending.get(message.transaction_id)
        if transaction is None or message.message_method != stun.Method.BINDING:
            return False
        transaction.response_received(message, addr)
        return True

    async def mapped_address(self, server: Address, *, timeout: float = DEFAULT_TIMEOUT) -> Address:
        """Send Binding requests to ``server`` (an IP literal and port) until one is answered;
        return the XOR-MAPPED-ADDRESS (or the older MAPPED-ADDRESS) it gives: (IP text, port).

        Raises :class:`StunError` when no answer comes within ``timeout`` seconds (and after
        the RFC's seven requests), for an error response (its ERROR-CODE, RFC 8489 §14.8),
        for a success without an address, and when :data:`MAX_PENDING` Bindings are in
        flight already. ``ValueError`` for a ``server`` that is not an IP literal."""
        ipaddress.ip_address(server[0])
        if len(self._pending) >= MAX_PENDING:
            raise StunError(f"{MAX_PENDING} STUN requests are in flight already")
        from aioice import stun

        request = stun.Message(message_method=stun.Method.BINDING, message_class=stun.Class.REQUEST)
        transaction = stun.Transaction(request, server, self)
        self._pending[request.transaction_id] = transaction
        where = f"STUN server {hostport(*server)}"
        try:
            async with asyncio.timeout(timeout):
                response, _ = await transaction.run()
        except (TimeoutError, stun.TransactionTimeout):
            raise StunError(f"no answer from {where} within {timeout * 1000:.0f} ms") from None
        except stun.TransactionFailed as exc:
            code, reason = exc.response.attributes.get("ERROR-CODE", (0, "no ERROR-CODE"))
            raise StunError(f"{where} answered error {code} {reason}") from None
        finally:
            self._pending.pop(request.transaction_id, None)
        mapped = response.attributes.get("XOR-MAPPED-ADDRESS") or response.attributes.get("MAPPED-ADDRESS")
        if not mapped:
            raise StunError(f"{where} answered without a mapped address")
        return str(mapped[0]), int(mapped[1])
