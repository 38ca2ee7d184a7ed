"""asyncio SIP transports (RFC 3261 §18): UDP sockets, TCP, TLS and WebSocket listeners and connections.

:class:`SIPTransportLayer` owns every socket of one endpoint:

- UDP sockets are bound and **not** connected, so a response or request from any address
  is heard (RFC 3261 §18.2.1; a server answering from another port is fine);
- TCP/TLS listeners accept connections; outgoing connections are opened on demand and
  reused per remote flow (§18.1.1: a request to a peer we already have a connection with
  goes on it); a connection idle for ``idle_timeout`` seconds is closed;
- each stream is framed by :class:`skinnysip.sip.message.StreamParser` (Content-Length,
  §18.3); a CRLF CRLF keep-alive ping is answered with CRLF (RFC 5626 §4.4.1);
- ``ws``/``wss`` (SIP over WebSocket, RFC 7118) are TCP/TLS connections that begin with the
  WebSocket handshake (``sip`` subprotocol; :mod:`skinnysip.net.websocket`) and carry one SIP
  message per WebSocket message, parsed as a datagram is; the keep-alive is a ping frame.

Every message is handed to ``on_message(message, flow)`` with the
:class:`~skinnysip.sip.transaction.Flow` it came on; a closed or broken stream is reported
to ``on_lost(flow, reason)``, an ICMP error for a UDP destination to
``on_unreachable(flow, reason)``. Everything sent and received is recorded in the
:class:`~skinnysip.net.trace.Trace`. Every read is capped (``max_message_size``), every
connect and handshake has a deadline, the number of connections is bounded.

Errors: :class:`SIPTransportError` (one-line ``reason``) for anything the network or the
peer did wrong.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import ssl
import sys
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from skinnysip._regex import compile_on_use
from skinnysip.addresses import family_mismatch, hostport, ip_literal, source_problem, strip_brackets
from skinnysip.net import tls as tlsmod
from skinnysip.net.trace import UNPARSEABLE, Trace, wire_time
from skinnysip.result import TLSInfo
from skinnysip.sip.message import Request, Response, SIPParseError, StreamParser, parse_message
from skinnysip.sip.transaction import Flow

if TYPE_CHECKING:
    from skinnysip.net.stun import BindingClient
    from skinnysip.net.websocket import WebSocketFraming

__all__ = [
    "MAX_MESSAGE_SIZE",
    "uri_transport",
    "Connection",
    "SIPTransportError",
    "SIPTransportLayer",
    "Transport",
    "describe_os_error",
    "route_ip",
]

Transport = Literal["udp", "tcp", "tls", "ws", "wss"]
Message = Request | Response

MAX_MESSAGE_SIZE = 65536  # bytes; one SIP message (datagram or framed) at most
READ_CHUNK = 16384
WRITE_BUFFER_LIMIT = 1 << 20  # bytes queued on one stream before we call it stuck
WS_HANDSHAKE_TIMEOUT = 10.0  # seconds an accepted WebSocket connection has to send its handshake
PONG_TIMEOUT = 10.0  # seconds a WebSocket peer has to answer our keep-alive ping (RFC 5626 §4.4.1's 10 s)
MAX_CONNECTIONS = 1024
MAX_STUN_SOURCES = 4096  # sources whose last STUN keep-alive time is remembered
UDP_RECEIVE_BUFFER = 16 << 20  # bytes asked for each SIP UDP socket (a burst waits there, not lost)
UDP_DRAIN_BATCH = 512  # datagrams read per readiness callback before other callbacks get a turn
UDP_SEND_QUEUE = 4096  # datagrams queued while the socket's send buffer is full (then dropped)
UDP_FLOW_CACHE = 4096  # source addresses a UDP socket keeps the Flow of (then it starts again)
UDP_SEND_TRIES = 4  # sends of one datagram while each attempt meets an earlier datagram's ICMP error
UDP_ERROR_QUEUE_READS = 64  # ICMP errors read from a socket's error queue at a time (bounded)
#: the start of anything that can be a SIP message (RFC 3261 §7.1/§7.2: Request-Line or
#: Status-Line); a datagram that does not begin so is dropped before any parsing
_SIP_START_RE = compile_on_use(rb"[\r\n]*(?:SIP/[0-9]|[A-Za-z][A-Za-z0-9.!%*_+`'~-]* )")
_IP_RECVERR = getattr(socket, "IP_RECVERR", 11)
_STUN_FIRST_OCTETS = (b"\x00", b"\x01")  # a STUN message's first octet (RFC 7983 §7 gives STUN 0-3)
_IPV6_RECVERR = getattr(socket, "IPV6_RECVERR", 25)
_MSG_ERRQUEUE = getattr(socket, "MSG_ERRQUEUE", 0x2000)
#: the control messages an error queue entry carries its ``sock_extended_err`` in
_RECVERR_CMSGS = ((socket.IPPROTO_IP, _IP_RECVERR), (socket.IPPROTO_IPV6, _IPV6_RECVERR))


class SIPTransportError(Exception):
    """The transport failed; ``reason`` is a one-line, user-facing explanation."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


#: how a transport failure's reason starts when the peer ended the stream connection (FIN, RST)
PEER_CLOSED = ("connection closed by ", "connection reset by ")


def closed_by_peer(reason: str) -> bool:
    """True if ``reason`` (a transport failure's text, or a call's end reason quoting one)
    says the peer closed or reset the stream connection (SIPp's ``FailedTcpClosed``)."""
    return any(prefix in reason for prefix in PEER_CLOSED)


def describe_os_error(exc: OSError, where: str) -> str:
    """One line for an OSError met while talking to ``where``."""
    if isinstance(exc, ConnectionRefusedError):
        return f"connection refused by {where}"
    if isinstance(exc, ConnectionResetError):
        return f"{PEER_CLOSED[1]}{where}"
    return f"network error with {where}: {exc.strerror or exc}"


_ROUTES: dict[str, str] = {}  # remote IP → local IP, a small cache (cleared when full)


def uri_transport(transport: str) -> str:
    """The ``transport`` parameter of a SIP URI reached over ``transport``: ``ws`` for both
    WebSocket transports (RFC 7118 §5.2; ``wss`` is not a URI transport), else its name."""
    return "ws" if transport == "wss" else transport


def route_ip(remote_ip: str) -> str:
    """The local IP the system would use to reach ``remote_ip`` (a UDP ``connect`` sends
    nothing; it only asks the routing table). Cached (at most 1024 entries). Raises
    :class:`SIPTransportError`."""
    cached = _ROUTES.get(remote_ip)
    if cached is not None:
        return cached
    if len(_ROUTES) >= 1024:
        _ROUTES.clear()
    _ROUTES[remote_ip] = _route_ip(remote_ip)
    return _ROUTES[remote_ip]


def _route_ip(remote_ip: str) -> str:
    family = socket.AF_INET6 if ":" in remote_ip else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as s:
        try:
            s.connect((remote_ip, 9))
        except OSError as exc:
            raise SIPTransportError(describe_os_error(exc, remote_ip)) from exc
        return str(s.getsockname()[0])


def _summary(message: Message, note: str = "") -> str:
    return f"{message.summary} ({note})" if note else message.summary


def unusable_response(message: Message) -> str | None:
    """Why a parsed response cannot be matched to any transaction (no or bad CSeq, top Via
    or Call-ID), else None. RFC 3261 §18.1.2: such a malformed response is discarded; the
    trace keeps it as ``unparseable (…)`` and the operation goes on."""
    if not isinstance(message, Response):
        return None
    try:
        message.cseq  # noqa: B018 - parsed for its check
        if message.top_via is None:
            return "no Via header field"
    except SIPParseError as exc:
        return exc.reason
    if message.call_id is None:
        return "no Call-ID header field"
    return None


def _call_id(message: Message) -> str | None:
    return message.headers.get("Call-ID")


class _DrainingDatagramTransport:
    """The part of ``asyncio.DatagramTransport`` the layer uses, on a non-blocking UDP socket
    whose reader drains up to :data:`UDP_DRAIN_BATCH` datagrams per readiness callback
    (asyncio's own reads one per loop iteration, so a burst overflowed the kernel buffer
    while the loop went round). Sends that find the buffer full wait in a bounded queue.

    ``burst`` > 0 (load generation, :attr:`SIPTransportLayer.udp_send_burst`): the sends of
    one loop round are gathered and sent together when the round's callbacks are done, at
    most ``burst`` at a time, instead of one by one between them. The peer then reads a run
    of datagrams per wake-up, and its answers come back as a run we read in one wake-up:
    fewer wake-ups on both sides, against a delay of at most one loop round. A gathered
    datagram's own error reaches the layer as an ICMP error does (:meth:`_UDPSocket.report`)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, sock: socket.socket, protocol: _UDPSocket,
                 burst: int = 0) -> None:
        self._loop = loop
        self._sock = sock
        self._protocol = protocol
        self._closing = False
        self._pending: deque[tuple[bytes, tuple[str, int]]] = deque()
        self._rearming = False  # a _watch_again is scheduled
        self._burst = burst
        self._round: list[tuple[bytes, tuple[str, int]]] = []  # gathered sends of this loop round
        self._round_end_due = False  # a _round_end is scheduled
        loop.add_reader(sock.fileno(), self._read_ready)

    def _read_ready(self) -> None:
        recvfrom, deliver = self._sock.recvfrom, self._protocol.datagram_received
        size = self._protocol.layer.max_message_size + 1  # one more: an oversize datagram is seen as such
        for n in range(UDP_DRAIN_BATCH):
            if self._closing:  # closed by a callback of the previous datagram
                return
            try:
                data, addr = recvfrom(size)
            except (BlockingIOError, InterruptedError):
                if n == 0:
                    # woken with nothing to read: ICMP errors wait in the error queue (a send
                    # took the socket's pending error). Read them, or the level-triggered
                    # readiness would call this again at once, for ever.
                    self._protocol.report(self._protocol.queued_errors())
                    self._rearm()
                return
            except OSError as exc:  # an ICMP error reported through IP_RECVERR
                self._protocol.error_received(exc)
                self._rearm()
                return
            deliver(data, addr)

    def _rearm(self) -> None:
        """Watch the socket again after an error woke the reader: uvloop closes a poll handle
        that reported an error (POLLERR) once its reader and writer callbacks have run, so
        without this the socket would hear nothing more after its first ICMP error (and
        sends waiting for room would wait for ever). From the loop's next round, after
        uvloop is done with the old handle; harmless on asyncio's loop."""
        if not self._rearming and not self._closing:
            self._rearming = True
            self._loop.call_soon(self._watch_again)

    def _watch_again(self) -> None:
        self._rearming = False
        if self._closing:
            return
        fd = self._sock.fileno()
        self._loop.remove_reader(fd)
        self._loop.add_reader(fd, self._read_ready)
        if self._pending:
            self._loop.remove_writer(fd)
            self._loop.add_writer(fd, self._write_ready)

    def _send_now(self, data: bytes, addr: tuple[str, int]) -> None:
        """``sendto``, once more for each time it only reports an earlier datagram's error.

        With IP_RECVERR an unconnected socket hands the newest ICMP error (for any
        destination) to the next send, which then sends nothing. That error is not this
        datagram's: the queued errors go to their destinations (from the loop's next round,
        not from inside a send) and the datagram is sent again. With no error queued the
        error is this datagram's own (no route, say) and is raised."""
        for attempt in range(UDP_SEND_TRIES):
            try:
                self._sock.sendto(data, addr)
                return
            except (BlockingIOError, InterruptedError):
                raise
            except OSError:
                errors = self._protocol.queued_errors() if attempt < UDP_SEND_TRIES - 1 else []
                if not errors:
                    raise
                self._loop.call_soon(self._protocol.report, errors)

    def sendto(self, data: bytes, addr: tuple[str, int]) -> None:
        """Send now, or queue (bounded) while the send buffer is full; with ``burst``, gather
        it for the end of this loop round. Raises ``OSError`` for a closed socket and, sent
        now, for this datagram's own error (:meth:`_send_now`)."""
        if self._closing:
            raise OSError("socket closed")
        if self._burst:
            gathered = self._round
            gathered.append((data, addr))
            if len(gathered) >= self._burst:
                self._send_round()
            elif not self._round_end_due:
                self._round_end_due = True
                self._loop.call_soon(self._round_end)
            return
        self._send(data, addr)

    def _round_end(self) -> None:
        self._round_end_due = False
        if not self._closing:
            self._send_round()

    def _send_round(self) -> None:
        """Send the gathered datagrams; their errors go to the layer from the loop's next
        round (not from inside a send that reached the cap)."""
        gathered, self._round = self._round, []
        errors: list[tuple[tuple[str, int] | None, Exception]] = []
        for data, addr in gathered:
            try:
                self._send(data, addr)
            except OSError as exc:
                errors.append((addr, exc))
        if errors:
            self._loop.call_soon(self._protocol.report, errors)

    def _send(self, data: bytes, addr: tuple[str, int]) -> None:
        if not self._pending:
            try:
                self._send_now(data, addr)
                return
            except (BlockingIOError, InterruptedError):
                try:
                    self._loop.add_writer(self._sock.fileno(), self._write_ready)
                except RuntimeError:  # uvloop: its poll handle closed after an error; _watch_again adds the writer
                    self._rearm()
        if len(self._pending) < UDP_SEND_QUEUE:
            self._pending.append((data, addr))

    def _write_ready(self) -> None:
        while self._pending:
            data, addr = self._pending[0]
            try:
                self._send_now(data, addr)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # this datagram's own error: reported for its destination, dropped
                self._protocol.report([(addr, exc)])
            self._pending.popleft()
        self._loop.remove_writer(self._sock.fileno())

    def is_closing(self) -> bool:
        return self._closing

    def close(self) -> None:
        if self._closing:
            return
        gathered, self._round = self._round, []
        for data, addr in gathered:  # what this round gathered still goes out (best effort: closing)
            with contextlib.suppress(OSError):
                self._send(data, addr)
        self._closing = True
        self._loop.remove_reader(self._sock.fileno())
        self._loop.remove_writer(self._sock.fileno())
        self._pending.clear()
        self._sock.close()

    def get_extra_info(self, name: str, default: object = None) -> object:
        if name == "socket":
            return self._sock
        if name == "sockname":
            return self._sock.getsockname()
        return default


class _UDPSocket:
    """One bound, unconnected UDP socket (the protocol side of :class:`_DrainingDatagramTransport`)."""

    def __init__(self, layer: SIPTransportLayer) -> None:
        self.layer = layer
        self.transport: _DrainingDatagramTransport | None = None
        self.local: tuple[str, int] = ("", 0)
        self._flows: dict[object, Flow] = {}  # source address as received -> its Flow to us

    def connection_made(self, transport: _DrainingDatagramTransport) -> None:
        self.transport = transport
        name: tuple[str, int] = transport.get_extra_info("sockname")  # type: ignore[assignment]
        self.local = (str(name[0]), int(name[1]))
        sock: socket.socket = transport.get_extra_info("socket")  # type: ignore[assignment]
        # A burst (a flood of garbage before the answer, a load test, a garbage-collection
        # pause) must not overflow the kernel's default ~200 KiB receive buffer: ask for
        # UDP_RECEIVE_BUFFER (beyond rmem_max when allowed: SO_RCVBUFFORCE, CAP_NET_ADMIN).
        for option in (getattr(socket, "SO_RCVBUFFORCE", None), socket.SO_RCVBUF):
            if option is None:
                continue
            try:
                sock.setsockopt(socket.SOL_SOCKET, option, UDP_RECEIVE_BUFFER)
                break
            except OSError:
                continue
        # An unconnected socket hears ICMP errors only with IP_RECVERR (Linux): the
        # error queue then names the destination that was unreachable (RFC 3261 §18.4).
        with contextlib.suppress(OSError, AttributeError):
            if ":" in self.local[0]:
                sock.setsockopt(socket.IPPROTO_IPV6, _IPV6_RECVERR, 1)
            else:
                sock.setsockopt(socket.IPPROTO_IP, _IP_RECVERR, 1)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        if data[:1] in _STUN_FIRST_OCTETS:  # never a SIP message's first octet
            from skinnysip.net.stun import is_stun

            if is_stun(data):
                self.layer.stun_datagram(self.local, data, (str(addr[0]), int(addr[1])))
                return
        flow = self._flows.get(addr)
        if flow is None:  # the flow of datagrams from addr to this socket, made once (it is immutable)
            if len(self._flows) >= UDP_FLOW_CACHE:
                self._flows.clear()
            flow = self._flows[addr] = Flow("udp", (str(addr[0]), int(addr[1])), local=self.local)
        self.layer.whole_message(data, self.local, flow.remote, "udp", flow)

    def error_received(self, exc: Exception) -> None:
        """A receive met the socket's pending error: the queued errors name their
        destinations (RFC 3261 §18.4); without any, ``exc`` is reported for no destination."""
        self.report(self.queued_errors() or [(None, exc)])

    def report(self, errors: list[tuple[tuple[str, int] | None, Exception]]) -> None:
        """Hand ``(destination, error)`` pairs to the transport layer (unless there are none,
        or the socket closed since)."""
        if errors and self.transport is not None and not self.transport.is_closing():
            self.layer._udp_error(self, errors)

    def queued_errors(self) -> list[tuple[tuple[str, int] | None, Exception]]:
        """The socket's error queue, read (at most :data:`UDP_ERROR_QUEUE_READS`): each
        entry's original destination and its error (``ee_errno`` of the
        ``sock_extended_err`` the kernel attaches, ip(7)/ipv6(7))."""
        sock = self.transport.get_extra_info("socket") if self.transport is not None else None
        if not isinstance(sock, socket.socket):
            return []
        errors: list[tuple[tuple[str, int] | None, Exception]] = []
        for _ in range(UDP_ERROR_QUEUE_READS):
            try:
                _data, ancillary, _flags, address = sock.recvmsg(1, 1024, _MSG_ERRQUEUE)
            except OSError:
                break
            code = next((int.from_bytes(data[:4], sys.byteorder) for level, kind, data in ancillary
                         if (level, kind) in _RECVERR_CMSGS and len(data) >= 4), 0)
            error = OSError(code, os.strerror(code)) if code else OSError("ICMP error")
            errors.append(((str(address[0]), int(address[1])) if address else None, error))
        return errors


@dataclass(frozen=True)
class _Listener:
    transport: Transport
    local: tuple[str, int]
    server: asyncio.Server | None = None
    udp: _UDPSocket | None = None


class Connection:
    """One TCP, TLS or WebSocket connection (inbound or outbound). ``ws``: the WebSocket layer
    of a ``ws``/``wss`` one (an inbound one's handshake is still to come)."""

    def __init__(self, layer: SIPTransportLayer, transport: Transport, reader: asyncio.StreamReader,
                 writer: asyncio.StreamWriter, *, inbound: bool, tls: TLSInfo | None = None,
                 ws: WebSocketFraming | None = None) -> None:
        self.layer = layer
        self.ws = ws
        self.transport: Transport = transport
        self.reader = reader
        self.writer = writer
        self.inbound = inbound
        self.tls = tls
        local = writer.get_extra_info("sockname")
        remote = writer.get_extra_info("peername")
        self.local = (str(local[0]), int(local[1]))
        self.remote = (str(remote[0]), int(remote[1]))
        self.id = id(self)
        self.flow = Flow(transport, self.remote, connection=self.id, local=self.local)
        self.last_activity = time.monotonic()
        self.closed = False
        self._pong_check: asyncio.TimerHandle | None = None
        #: CRLF pongs received on a TCP/TLS stream (RFC 5626 §4.4.1; a WebSocket's are ``ws.pongs``)
        self.pongs = 0
        self._failed: str | None = None  # why we gave the connection up ourselves
        self._parser = StreamParser(layer.max_message_size)
        self._task = asyncio.get_running_loop().create_task(self._read_loop())

    @property
    def where(self) -> str:
        return f"{hostport(*self.remote)}/{self.transport}"

    async def _read_loop(self) -> None:
        reason = f"{PEER_CLOSED[0]}{self.where}"
        if self.ws is not None:
            try:
                reason = await self._read_websocket(reason)
            except (OSError, ssl.SSLError) as exc:
                reason = describe_os_error(exc, self.where) if isinstance(exc, OSError) else str(exc)
            except asyncio.CancelledError:
                reason = "closed"
            self.layer._lost(self, self._failed or reason)
            return
        unframed = b""
        try:
            while True:
                data = await self.reader.read(READ_CHUNK)
                if not data:
                    break
                self.last_activity = time.monotonic()
                if self._parser.buffered == 0 and data[:1] in (b"\r", b"\n"):
                    rest = data.lstrip(b"\r\n")
                    if b"\r\n\r\n" in data[:len(data) - len(rest)]:  # RFC 5626 §4.4.1 ping: answer with a pong
                        with contextlib.suppress(OSError, RuntimeError):
                            self.writer.write(b"\r\n")
                    else:  # a lone CRLF between messages: the pong to our ping
                        self.pongs += 1
                    if not rest:
                        continue
                    data = rest
                unframed += data
                try:
                    messages = self._parser.feed(data)
                except SIPParseError as exc:
                    self.layer.malformed(hostport(*self.local), hostport(*self.remote), self.transport, exc.reason,
                                         unframed[-self.layer.max_message_size:])
                    reason = f"malformed SIP from {self.where}: {exc.reason}"
                    break
                consumed = len(unframed) - self._parser.buffered
                framed, unframed = unframed[:consumed], unframed[consumed:]
                for message in messages:
                    raw = framed.lstrip(b"\r\n") if len(messages) == 1 else message.to_bytes()
                    unusable = unusable_response(message)
                    if unusable is not None:  # well framed but not matchable: dropped, the stream goes on
                        self.layer.malformed(hostport(*self.local), hostport(*self.remote), self.transport,
                                             f"{message.summary}: {unusable}", raw)
                        continue
                    stamp = self.layer.stamp("received", self.local, self.remote, self.transport, message, raw)
                    if isinstance(message, Response):
                        message.received_at = stamp
                    self.layer.on_message(message, self.flow)
        except (OSError, ssl.SSLError) as exc:
            reason = describe_os_error(exc, self.where) if isinstance(exc, OSError) else str(exc)
        except asyncio.CancelledError:
            reason = "closed"
        self.layer._lost(self, self._failed or reason)

    async def _read_websocket(self, reason: str) -> str:
        """The read loop of a WebSocket connection (RFC 7118 §5): the handshake of an inbound
        one first (within :data:`WS_HANDSHAKE_TIMEOUT`), then one SIP message per WebSocket
        message. Returns why it ended."""
        from skinnysip.net.websocket import WebSocketError

        ws = self.ws
        assert ws is not None
        try:
            if not ws.is_open:
                async with asyncio.timeout(WS_HANDSHAKE_TIMEOUT):
                    while True:
                        data = await self.reader.read(READ_CHUNK)
                        if not data:
                            return f"{self.where} closed before its WebSocket handshake"
                        done = ws.handshake_step(data)
                        self._flush_ws()
                        if done:
                            break
            for raw in ws.feed(b""):  # messages that came behind the handshake
                self._ws_message(raw)
            while not ws.is_closed:
                data = await self.reader.read(READ_CHUNK)
                if not data:
                    ws.end_of_stream()
                    break
                self.last_activity = time.monotonic()
                messages = ws.feed(data)
                self._flush_ws()
                for raw in messages:
                    self._ws_message(raw)
        except TimeoutError:
            return f"no WebSocket handshake from {self.where} within {WS_HANDSHAKE_TIMEOUT:.0f} s"
        except WebSocketError as exc:
            self._flush_ws()
            self.layer.malformed(hostport(*self.local), hostport(*self.remote), self.transport, exc.reason, b"")
            return exc.reason
        return ws.close_note or reason

    def _flush_ws(self) -> None:
        assert self.ws is not None
        data = self.ws.outgoing()
        if data and not self.writer.transport.is_closing():
            self.writer.write(data)

    def _ws_message(self, raw: bytes) -> None:
        """One WebSocket message: a SIP message, or CRLFs (a keep-alive: CRLF CRLF is answered
        with CRLF, RFC 5626 §4.4.1, as SIP.js and JsSIP send it)."""
        if not raw.strip(b"\r\n"):
            if b"\r\n\r\n" in raw:
                with contextlib.suppress(SIPTransportError):
                    self.write(b"\r\n")
            return
        self.layer.whole_message(raw, self.local, self.remote, self.transport, self.flow)

    def keepalive(self, *, expect_pong: bool = False) -> None:
        """A keep-alive: CRLF CRLF (RFC 5626 §4.4.1), a ping frame on a WebSocket (RFC 6455
        §5.5.2). A WebSocket peer must answer a ping, and so must a TCP/TLS peer that agreed
        to SIP outbound (``expect_pong``: a CRLF pong, RFC 5626 §4.4.1): when no pong has come
        :data:`PONG_TIMEOUT` s later, the connection is closed as failed (a server that froze
        or a path that died without a FIN), so its user connects again. Raises
        :class:`SIPTransportError`."""
        if self.ws is None:
            self.write(b"\r\n\r\n")
            if not expect_pong:
                return
        else:
            self._raw_write(self.ws.ping())
        if self._pong_check is None:
            self._pong_check = asyncio.get_running_loop().call_later(PONG_TIMEOUT, self._pong_due, self._pongs())

    def _pongs(self) -> int:
        return self.ws.pongs if self.ws is not None else self.pongs

    def _pong_due(self, pongs: int) -> None:
        self._pong_check = None
        if self.closed or self._pongs() > pongs:
            return
        kind = "WebSocket ping" if self.ws is not None else "CRLF keep-alive ping"
        self._failed = f"no answer to a {kind} from {self.where} within {PONG_TIMEOUT:.0f} s"
        self.closed = True
        self._task.cancel()  # the read loop ends and reports the connection lost, for this reason

    def write(self, data: bytes) -> None:
        if self.ws is not None:
            from skinnysip.net.websocket import WebSocketError

            try:
                data = self.ws.message(data)
            except WebSocketError as exc:
                raise SIPTransportError(exc.reason) from exc
        self._raw_write(data)

    def _raw_write(self, data: bytes) -> None:
        if self.closed:
            raise SIPTransportError(f"connection to {self.where} is closed")
        transport = self.writer.transport
        if transport.is_closing():
            raise SIPTransportError(f"connection to {self.where} is closed")
        if transport.get_write_buffer_size() > WRITE_BUFFER_LIMIT:
            raise SIPTransportError(f"{self.where} does not read what we send (write buffer full)")
        self.writer.write(data)
        self.last_activity = time.monotonic()

    async def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self._pong_check is not None:
            self._pong_check.cancel()
        self._task.cancel()
        with contextlib.suppress(BaseException):
            await self._task
        if self.ws is not None:  # the closing handshake's first half (RFC 6455 §7.1.2), best effort
            with contextlib.suppress(Exception):
                data = self.ws.close(1000)
                if data and not self.writer.transport.is_closing():
                    self.writer.write(data)
        self.writer.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.writer.wait_closed(), 2.0)


class SIPTransportLayer:
    """The sockets of one endpoint. ``on_message(message, flow)`` is called for every
    parsed message, ``on_lost(flow, reason)`` when a stream ends. ``tls_server``: the
    context for TLS listeners (certificate and key); ``tls_client``: for outgoing TLS.
    ``idle_timeout``: seconds of silence after which a stream is closed. ``udp_send_burst``:
    :attr:`udp_send_burst` (``ValueError`` if negative)."""

    def __init__(
        self,
        on_message: Callable[[Message, Flow], None],
        on_lost: Callable[[Flow, str], None],
        *,
        on_unreachable: Callable[[Flow, str], None] | None = None,
        trace: Trace | None = None,
        max_message_size: int = MAX_MESSAGE_SIZE,
        max_connections: int = MAX_CONNECTIONS,
        idle_timeout: float = 64.0,
        udp_send_burst: int = 0,
    ) -> None:
        self.on_message = on_message
        self.on_lost = on_lost
        self.on_unreachable = on_unreachable
        self.trace = trace if trace is not None else Trace()
        self.max_message_size = max_message_size
        self.max_connections = max_connections
        self.idle_timeout = idle_timeout
        #: UDP sockets bound from now on gather each loop round's sends and send them
        #: together, at most this many at a time (0: each at once; :class:`_DrainingDatagramTransport`)
        if udp_send_burst < 0:
            raise ValueError(f"udp_send_burst {udp_send_burst} is negative")
        self.udp_send_burst = udp_send_burst
        #: the User-Agent of our WebSocket handshakes, the Server of our answers to them
        self.agent: str | None = None
        self.listeners: list[_Listener] = []
        self.udp: dict[tuple[str, int], _UDPSocket] = {}
        #: sockets of one flow's own (:meth:`udp_flow` with ``reuse=False``), closed by :meth:`close_udp`
        self._own_udp: set[tuple[str, int]] = set()
        self._port_cursor = 0  # where the next own socket's search of a port range starts
        self.connections: dict[int, Connection] = {}
        self._by_remote: dict[tuple[str, str, int], Connection] = {}
        self._connecting: dict[tuple[str, str, int], asyncio.Future[Connection]] = {}
        self.udp_errors: list[tuple[tuple[str, int] | None, str]] = []
        #: received messages dropped as malformed (RFC 3261 §18.1.2), and the last one's summary
        self.malformed_count = 0
        self.last_malformed: str | None = None
        #: answer STUN Binding requests on our SIP UDP sockets (a SIP outbound registrar or
        #: edge proxy, RFC 5626 §8); how many were answered, and STUN messages dropped
        self.answer_stun = False
        self.stun_answered = 0
        self.stun_dropped = 0
        #: when (monotonic s) each source's last answered Binding came, newest last (at most
        #: :data:`MAX_STUN_SOURCES`): a registrar's view of which UDP flows keep alive
        self.stun_seen: OrderedDict[tuple[str, int], float] = OrderedDict()
        self._stun_clients: dict[tuple[str, int], BindingClient] = {}
        #: the local IP every outgoing flow starts from (SIPp ``-i``, pjsua ``--bound-addr``),
        #: and the local port (0: any; sipsak ``-l``); None: the address the routing table
        #: picks for each remote (:func:`route_ip`). Set with :meth:`set_source`.
        self.source_ip: str | None = None
        self.source_port = 0
        self.closed = False

    def set_source(self, ip: str | None, port: int = 0) -> None:
        """Start every later outgoing flow from ``ip`` (an IPv4 or IPv6 literal of this host;
        a wildcard or None: the routed address) and local ``port`` (0: any). Raises
        :class:`ValueError` for a malformed address or port; an address this host does not
        have fails at the first flow (:class:`SIPTransportError`, nothing sent)."""
        if ip is not None:
            ip = ip_literal(ip)
            if ip in ("0.0.0.0", "::"):
                ip = None
        if not 0 <= port <= 65535:
            raise ValueError(f"source port {port} is not 0-65535")
        self.source_ip, self.source_port = ip, port

    def local_ip_for(self, remote_ip: str) -> str:
        """Our local IP towards ``remote_ip``: :attr:`source_ip` when set, else the routed
        one. Raises :class:`SIPTransportError` (no route; the source is of the other family)."""
        source = self.source_ip
        if source is None:
            return route_ip(remote_ip)
        mismatch = family_mismatch(source, remote_ip)
        if mismatch is not None:
            raise SIPTransportError(mismatch)
        return source

    # -- listening ------------------------------------------------------------------------
    async def listen(self, transport: Transport, host: str, port: int, *,
                     tls_server: ssl.SSLContext | None = None) -> tuple[str, int]:
        """Bind a UDP socket or start a TCP/TLS/WS/WSS listener on ``host:port`` (port 0: any;
        a WebSocket listener takes any path). Returns the bound (IP, port). Raises
        :class:`SIPTransportError` (e.g. port busy)."""
        host = strip_brackets(host)
        loop = asyncio.get_running_loop()
        where = f"{hostport(host, port)}/{transport}"
        try:
            if transport == "udp":
                proto = await self._bind_udp(loop, host, port)
                self.udp[proto.local] = proto
                self.listeners.append(_Listener("udp", proto.local, udp=proto))
                return proto.local
            secure = transport in ("tls", "wss")
            if secure and tls_server is None:
                raise SIPTransportError(f"a {transport.upper()} listener needs a certificate and key")
            server = await asyncio.start_server(
                lambda r, w: self._accepted(transport, r, w), host, port,
                ssl=tls_server if secure else None, limit=self.max_message_size,
                ssl_handshake_timeout=10.0 if secure else None)
        except OSError as exc:
            if exc.errno in (98, 48):  # EADDRINUSE (Linux, BSD)
                raise SIPTransportError(f"cannot listen on {where}: address already in use") from exc
            raise SIPTransportError(f"cannot listen on {where}: {exc.strerror or exc}") from exc
        name = server.sockets[0].getsockname()
        local = (str(name[0]), int(name[1]))
        self.listeners.append(_Listener(transport, local, server=server))
        return local

    async def _bind_udp(self, loop: asyncio.AbstractEventLoop, host: str, port: int) -> _UDPSocket:
        """A bound, non-blocking UDP socket on ``host:port`` with its draining transport.
        Raises ``OSError`` (``socket.gaierror`` for a name that does not resolve)."""
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        try:  # an IP literal needs no look-up (nor the executor thread getaddrinfo runs in)
            socket.inet_pton(family, host)
            address: tuple[Any, ...] = (host, port)
        except OSError:
            infos = await loop.getaddrinfo(host, port, family=family, type=socket.SOCK_DGRAM)
            address = infos[0][4]
        sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            sock.setblocking(False)
            sock.bind(address)
        except OSError:
            sock.close()
            raise
        proto = _UDPSocket(self)
        proto.connection_made(_DrainingDatagramTransport(loop, sock, proto, self.udp_send_burst))
        return proto

    def _accepted(self, transport: Transport, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.closed or len(self.connections) >= self.max_connections:
            writer.close()
            return
        info = None
        if transport in ("tls", "wss"):
            info = tlsmod.describe(writer.get_extra_info("ssl_object"), verified=False)
        ws = None
        if transport in ("ws", "wss"):
            from skinnysip.net.websocket import WebSocketFraming

            peer = writer.get_extra_info("peername")
            ws = WebSocketFraming.server(f"{hostport(str(peer[0]), int(peer[1]))}/{transport}",
                                         max_size=self.max_message_size, server=self.agent)
        conn = Connection(self, transport, reader, writer, inbound=True, tls=info, ws=ws)
        self.connections[conn.id] = conn
        self._by_remote[(transport, *conn.remote)] = conn

    # -- outgoing flows ---------------------------------------------------------------------
    async def udp_flow(self, remote: tuple[str, int], *, reuse: bool = True,
                       ports: tuple[int, int] | None = None) -> Flow:
        """A UDP flow to ``remote`` (IP, port) from one of our UDP sockets: one bound to the
        local address that routes there (or a wildcard of the same family); if there is
        none, a socket is bound on that address with an ephemeral port. ``reuse=False``: a
        socket of the flow's own (SIPp ``-t un``), on a port of ``ports`` (first, last) when
        given, to end with :meth:`close_udp`. Raises :class:`SIPTransportError` (no free port)."""
        ip = strip_brackets(remote[0])
        local_ip = self.local_ip_for(ip)
        if not reuse:
            return Flow("udp", (ip, remote[1]), local=await self._own_socket(local_ip, ports))
        wildcard = "::" if ":" in local_ip else "0.0.0.0"
        for (bound_ip, bound_port), sock in self.udp.items():
            if (bound_ip == local_ip or bound_ip == wildcard and self.source_ip is None) \
                    and sock.local not in self._own_udp and self.source_port in (0, bound_port):
                return Flow("udp", (ip, remote[1]), local=sock.local)
        try:
            local = await self.listen("udp", local_ip, self.source_port)
        except SIPTransportError as exc:
            if self.source_ip is None and not self.source_port:
                raise
            raise SIPTransportError(f"cannot send from {hostport(local_ip, self.source_port)}/udp: "
                                    f"{source_problem(exc.__cause__) or exc.reason}") from exc
        return Flow("udp", (ip, remote[1]), local=local)

    async def bind_udp(self, local_ip: str, ports: tuple[int, int] | None) -> tuple[str, int]:
        """Bind a UDP socket on ``local_ip``: on a free port of ``ports`` (first, last), searched
        on from where the last search ended (the ports just freed come last), or on any port
        when None. Returns the bound (IP, port); :class:`SIPTransportError` when every port of
        the range is taken."""
        if ports is None:
            return await self.listen("udp", local_ip, 0)
        first, last = ports
        size = last - first + 1
        for step in range(size):
            port = first + (self._port_cursor + step) % size
            if (local_ip, port) in self.udp:
                continue
            try:
                local = await self.listen("udp", local_ip, port)
            except SIPTransportError:
                continue
            self._port_cursor = (self._port_cursor + step + 1) % size
            return local
        raise SIPTransportError(f"no free UDP port in {first}-{last}")

    async def _own_socket(self, local_ip: str, ports: tuple[int, int] | None) -> tuple[str, int]:
        local = await self.bind_udp(local_ip, ports)
        self._own_udp.add(local)
        return local

    def close_udp(self, flow: Flow) -> None:
        """Close the UDP socket ``flow`` has of its own (:meth:`udp_flow` with
        ``reuse=False``); a shared socket, or one already closed: nothing to do."""
        local = flow.local
        if local is None or local not in self._own_udp:
            return
        self._own_udp.discard(local)
        sock = self.udp.pop(local, None)
        self._stun_clients.pop(local, None)
        self.listeners = [listener for listener in self.listeners if listener.udp is not sock]
        if sock is not None and sock.transport is not None:
            sock.transport.close()

    async def connect(self, transport: Transport, remote: tuple[str, int], *, timeout: float,
                      tls_client: ssl.SSLContext | None = None, server_name: str | None = None,
                      reuse: bool = True, ws_path: str = "/") -> Connection:
        """The connection to ``remote`` over TCP/TLS/WS/WSS: an open one is reused (inbound or
        outbound), else a new one is opened within ``timeout`` seconds (TLS and WebSocket
        handshakes included; SNI, name checks and the WebSocket's Host use ``server_name``;
        ``ws_path``: the resource the WebSocket handshake asks for). ``reuse=False``: always a
        new one, the caller's alone (never handed out for ``remote`` again; close it with
        :meth:`close_connection`). Raises :class:`SIPTransportError`."""
        ip = strip_brackets(remote[0])
        if not reuse:
            if len(self.connections) >= self.max_connections:
                raise SIPTransportError(f"too many connections open ({self.max_connections})")
            return await self._open(transport, ip, int(remote[1]), timeout, tls_client, server_name, shared=False,
                                    ws_path=ws_path)
        key = (transport, ip, int(remote[1]))
        conn = self._by_remote.get(key)
        if conn is not None and not conn.closed:
            return conn
        pending = self._connecting.get(key)
        if pending is not None:
            return await asyncio.wait_for(asyncio.shield(pending), timeout)
        if len(self.connections) >= self.max_connections:
            raise SIPTransportError(f"too many connections open ({self.max_connections})")
        future: asyncio.Future[Connection] = asyncio.get_running_loop().create_future()
        self._connecting[key] = future
        try:
            conn = await self._open(transport, ip, int(remote[1]), timeout, tls_client, server_name,
                                    ws_path=ws_path)
            future.set_result(conn)
            return conn
        except SIPTransportError as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: no "never retrieved" warning
            raise
        finally:
            del self._connecting[key]

    async def _open(self, transport: Transport, ip: str, port: int, timeout: float,
                    tls_client: ssl.SSLContext | None, server_name: str | None, *, shared: bool = True,
                    ws_path: str = "/") -> Connection:
        where = f"{hostport(ip, port)}/{transport}"
        context = None
        if transport in ("tls", "wss"):
            context = tls_client or tlsmod.client_context(True, None)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        local_addr = None
        if self.source_ip is not None or self.source_port:
            local_addr = (self.local_ip_for(ip), self.source_port)
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(ip, port, limit=self.max_message_size, local_addr=local_addr), timeout)
        except TimeoutError as exc:
            raise SIPTransportError(f"no connection to {where} within {timeout * 1000:.0f} ms") from exc
        except OSError as exc:
            problem = source_problem(exc) if local_addr is not None else None
            if local_addr is not None and problem is not None:
                raise SIPTransportError(f"cannot connect to {where} from {hostport(*local_addr)}: {problem}") from exc
            raise SIPTransportError(describe_os_error(exc, where)) from exc
        if context is not None:
            # the handshake separately, so a port that accepts TCP but never speaks TLS says so
            remaining = max(0.001, deadline - loop.time())
            try:
                await asyncio.wait_for(writer.start_tls(context, server_hostname=server_name or ip,
                                                        ssl_handshake_timeout=remaining), remaining)
            except TimeoutError as exc:
                writer.close()
                raise SIPTransportError(f"TLS handshake with {hostport(ip, port)} did not complete within "
                                        f"{timeout * 1000:.0f} ms") from exc
            except ssl.SSLError as exc:
                writer.close()
                raise SIPTransportError(tlsmod.verification_error(exc)) from exc
            except (OSError, EOFError) as exc:  # closed during the handshake
                writer.close()
                reason = describe_os_error(exc, where) if isinstance(exc, OSError) else f"closed by {where}"
                raise SIPTransportError(f"TLS handshake with {hostport(ip, port)} failed: {reason}") from exc
        info = None
        if context is not None:
            info = tlsmod.describe(writer.get_extra_info("ssl_object"),
                                   verified=context.verify_mode != ssl.CERT_NONE)
        ws = None
        if transport in ("ws", "wss"):
            ws = await self._websocket_handshake(reader, writer, server_name or ip, port, ws_path,
                                                 transport == "wss", max(0.001, deadline - loop.time()))
        conn = Connection(self, transport, reader, writer, inbound=False, tls=info, ws=ws)
        self.connections[conn.id] = conn
        if shared:
            self._by_remote[(transport, ip, port)] = conn
        return conn

    async def _websocket_handshake(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, host: str,
                                   port: int, path: str, secure: bool, timeout: float) -> WebSocketFraming:
        """The client's opening handshake on a fresh stream (RFC 6455 §4.1, RFC 7118 §4.1)
        within ``timeout`` s. Raises :class:`SIPTransportError` (closing the stream)."""
        from skinnysip.net.websocket import WebSocketError, WebSocketFraming

        where = f"{hostport(host, port)}{path} ({'wss' if secure else 'ws'})"
        try:
            ws = WebSocketFraming.client(host, port, path, secure=secure, max_size=self.max_message_size,
                                         user_agent=self.agent)
            writer.write(ws.outgoing())
            async with asyncio.timeout(timeout):
                while True:
                    data = await reader.read(READ_CHUNK)
                    if not data:
                        raise SIPTransportError(f"{where} closed the connection during the WebSocket handshake")
                    if ws.handshake_step(data):
                        return ws
        except TimeoutError as exc:
            writer.close()
            raise SIPTransportError(f"no WebSocket handshake answer from {where} within "
                                    f"{timeout * 1000:.0f} ms") from exc
        except WebSocketError as exc:
            writer.close()
            raise SIPTransportError(exc.reason) from exc
        except SIPTransportError:
            writer.close()
            raise
        except (OSError, ssl.SSLError) as exc:
            writer.close()
            raise SIPTransportError(describe_os_error(exc, where) if isinstance(exc, OSError) else str(exc)) from exc

    async def close_connection(self, flow: Flow) -> None:
        """Close the TCP/TLS connection of ``flow`` (none, or already closed: nothing to do);
        its transactions hear that it was lost, as when the peer closes it."""
        conn = self.connections.get(flow.connection) if flow.connection is not None else None
        if conn is not None:
            await conn.close()

    # -- sending ----------------------------------------------------------------------------
    def local_address(self, flow: Flow) -> tuple[str, int]:
        """Our (IP, port) on ``flow`` as the peer sees it: the connection's local end, or
        the UDP socket's address (a wildcard socket reports the routed IP)."""
        if flow.connection is not None and flow.connection in self.connections:
            return self.connections[flow.connection].local
        if flow.local is not None:
            ip, port = flow.local
            if ip in ("0.0.0.0", "::"):
                ip = self.local_ip_for(flow.remote[0])
            return ip, port
        raise SIPTransportError(f"no socket for {hostport(*flow.remote)}/{flow.transport}")

    def send(self, message: Message, flow: Flow, note: str = "") -> None:
        """Transmit ``message`` on ``flow`` now (streams: the bytes are queued). A reliable
        flow whose connection is gone uses another open connection to the same remote.
        Raises :class:`SIPTransportError`."""
        data = message.to_bytes()
        if len(data) > self.max_message_size:
            raise SIPTransportError(f"message of {len(data)} bytes is larger than {self.max_message_size}")
        if flow.transport == "udp":
            if flow.local is not None:  # that socket, or none (an own one closed: not another's)
                sock = self.udp.get(flow.local)
            else:
                sock = next((s for s in self.udp.values() if (":" in s.local[0]) == (":" in flow.remote[0])), None)
            if sock is None or sock.transport is None or sock.transport.is_closing():
                raise SIPTransportError(f"no UDP socket to send to {hostport(*flow.remote)}")
            stamp = self.stamp("sent", sock.local, flow.remote, "udp", message, data, note)
            if isinstance(message, Request) and message.sent_at is None:
                message.sent_at = stamp
            try:
                sock.transport.sendto(data, flow.remote)
            except OSError as exc:
                raise SIPTransportError(describe_os_error(exc, f"{hostport(*flow.remote)}/udp")) from exc
            return
        conn = self.connections.get(flow.connection) if flow.connection is not None else None
        if conn is None or conn.closed:
            conn = self._by_remote.get((flow.transport, *flow.remote))
        if conn is None or conn.closed:
            raise SIPTransportError(f"no open {flow.transport.upper()} connection to {hostport(*flow.remote)}")
        stamp = self.stamp("sent", conn.local, flow.remote, conn.transport, message, data, note)
        if isinstance(message, Request) and message.sent_at is None:
            message.sent_at = stamp
        conn.write(data)

    def stamp(self, direction: Literal["sent", "received"], local: tuple[str, int], remote: tuple[str, int],
              transport: Transport, message: Message, raw: bytes, note: str = "") -> float:
        """Trace one message that crossed the wire and return its :func:`wire_time` stamp. With
        the trace off (load generation) nothing is formatted: only the stamp. A sent message's
        ``local`` on a wildcard UDP socket is given as the routed IP (:meth:`local_address`)."""
        if not self.trace.enabled:
            return wire_time()
        if direction == "sent":
            local = self.local_address(Flow(transport, remote, local=local))
        return self.trace.add(direction, hostport(*local), hostport(*remote), transport, _summary(message, note),
                              raw, _call_id(message))

    def is_open(self, flow: Flow) -> bool:
        """Whether ``flow`` can carry a message now: always on UDP; on TCP/TLS while its
        connection (or another open one to the same remote) is up."""
        if flow.transport == "udp":
            return True
        conn = self.connections.get(flow.connection) if flow.connection is not None else None
        if conn is None or conn.closed:
            conn = self._by_remote.get((flow.transport, *flow.remote))
        return conn is not None and not conn.closed

    def send_keepalive(self, flow: Flow, *, expect_pong: bool = False) -> None:
        """A CRLF CRLF keep-alive ping on ``flow`` (RFC 5626 §4.4.1 on streams; on UDP the
        same bytes, which SIP servers ignore, keep a NAT binding open). Not traced.
        ``expect_pong``: the peer agreed to SIP outbound, so a TCP/TLS connection whose pong
        does not come within :data:`PONG_TIMEOUT` s fails (a WebSocket's always does).
        Raises :class:`SIPTransportError`."""
        ping = b"\r\n\r\n"
        if flow.transport == "udp":
            self._udp_socket(flow).sendto(ping, flow.remote)
            return
        conn = self.connections.get(flow.connection) if flow.connection is not None else None
        if conn is None or conn.closed:
            raise SIPTransportError(f"no open {flow.transport.upper()} connection to {hostport(*flow.remote)}")
        conn.keepalive(expect_pong=expect_pong)

    def _udp_socket(self, flow: Flow) -> _DrainingDatagramTransport:
        sock = self.udp.get(flow.local) if flow.local is not None else None
        if sock is None or sock.transport is None:
            raise SIPTransportError(f"no UDP socket to send to {hostport(*flow.remote)}")
        return sock.transport

    async def stun_keepalive(self, flow: Flow, *, timeout: float | None = None) -> tuple[str, int]:
        """SIP outbound's keep-alive on a UDP ``flow`` (RFC 5626 §4.4.2): a STUN Binding
        request from the flow's SIP socket to its remote SIP port, retransmitted as RFC 8489
        §6.2.1 says. Returns the XOR-MAPPED-ADDRESS (IP text, port) the server saw; a change
        means the NAT binding, hence the flow, changed. Raises :class:`SIPTransportError` when
        no answer comes within ``timeout`` seconds (default :data:`PONG_TIMEOUT`: the flow
        failed) or the answer is an error."""
        from skinnysip.net.stun import BindingClient, StunError

        if flow.transport != "udp" or flow.local is None:
            raise SIPTransportError("a STUN keep-alive needs a UDP flow")
        sock = self._udp_socket(flow)
        client = self._stun_clients.get(flow.local)
        if client is None:
            client = self._stun_clients[flow.local] = BindingClient(sock.sendto)
        try:
            return await client.mapped_address(flow.remote, timeout=PONG_TIMEOUT if timeout is None else timeout)
        except StunError as exc:
            raise SIPTransportError(f"STUN keep-alive: {exc.reason}") from None

    def stun_datagram(self, local: tuple[str, int], data: bytes, source: tuple[str, int]) -> None:
        """A STUN message that came to the SIP UDP socket bound at ``local`` (RFC 7983's first
        octet 0-3; SIP outbound multiplexes STUN on the SIP port, RFC 5626 §4.4.2/§8): the
        answer to our keep-alive, or — when :attr:`answer_stun` — a Binding request answered
        with the address it came from. Anything else is counted in :attr:`stun_dropped`."""
        client = self._stun_clients.get(local)
        if client is not None and client.received(data, source):
            return
        sock = self.udp.get(local)
        if self.answer_stun and sock is not None and sock.transport is not None:
            from skinnysip.net.stun import binding_answer

            answer = binding_answer(data, source)
            if answer is not None:
                self.stun_answered += 1
                self.stun_seen[source] = time.monotonic()
                self.stun_seen.move_to_end(source)
                while len(self.stun_seen) > MAX_STUN_SOURCES:
                    self.stun_seen.popitem(last=False)
                sock.transport.sendto(answer, source)
                return
        self.stun_dropped += 1

    # -- receiving --------------------------------------------------------------------------
    def whole_message(self, data: bytes, local: tuple[str, int], source: tuple[str, int], transport: Transport,
                      flow: Flow | None) -> None:
        """One received unit that holds one whole SIP message — a datagram, or a WebSocket
        message (RFC 7118 §5) — parsed, traced and handed on (``flow``: the connection's; a
        UDP one is made). A malformed one is dropped (RFC 3261 §18.1.2), counted and traced."""
        if not _SIP_START_RE.match(data):
            if data.strip(b"\r\n"):  # not a CRLF keep-alive (RFC 5626 §3.5.1): garbage, dropped unparsed
                self.malformed(hostport(*local), hostport(*source), transport, "not a SIP start line",
                               data[: self.max_message_size])
            return
        if len(data) > self.max_message_size:
            self.malformed(hostport(*local), hostport(*source), transport,
                           f"{'datagram' if transport == 'udp' else 'message'} of {len(data)} octets exceeds "
                           f"the {self.max_message_size}-octet limit",
                           data[: self.max_message_size])
            return
        try:
            message = parse_message(data, self.max_message_size)
        except SIPParseError as exc:
            self.malformed(hostport(*local), hostport(*source), transport, exc.reason, data)
            return  # RFC 3261 §18.1.2: a malformed datagram is discarded
        unusable = unusable_response(message)
        if unusable is not None:
            self.malformed(hostport(*local), hostport(*source), transport, f"{message.summary}: {unusable}", data)
            return
        stamp = self.stamp("received", local, source, transport, message, data)
        if isinstance(message, Response):
            message.received_at = stamp
        self.on_message(message, flow if flow is not None else Flow("udp", source, local=local))

    def malformed(self, local: str, remote: str, transport: str, reason: str, raw: bytes) -> None:
        """Count a received message that was dropped as malformed and trace it as
        ``unparseable (reason)`` (:attr:`malformed_count`, :attr:`last_malformed`)."""
        self.malformed_count += 1
        self.last_malformed = f"{UNPARSEABLE}{reason})"
        self.trace.add("received", local, remote, transport, self.last_malformed, raw)

    def _udp_error(self, sock: _UDPSocket, errors: list[tuple[tuple[str, int] | None, Exception]]) -> None:
        """ICMP (or other) errors of UDP datagrams: each is kept in :attr:`udp_errors` and
        fails the client transactions sending to its destination (``on_unreachable``, once
        per destination)."""
        seen: set[tuple[str, int] | None] = set()
        for remote, exc in errors:
            if remote in seen:
                continue
            seen.add(remote)
            where = f"{hostport(*remote)}/udp" if remote else "a UDP peer"
            if isinstance(exc, ConnectionRefusedError):
                reason = f"connection refused by {where} (ICMP port unreachable)"
            elif isinstance(exc, OSError):
                reason = describe_os_error(exc, where)
            else:
                reason = f"network error with {where}: {exc}"
            if len(self.udp_errors) < 100:
                self.udp_errors.append((remote, reason))
            if remote is not None and self.on_unreachable is not None:
                self.on_unreachable(Flow("udp", remote, local=sock.local), reason)

    def _lost(self, conn: Connection, reason: str) -> None:
        conn.closed = True
        self.connections.pop(conn.id, None)
        key = (conn.transport, *conn.remote)
        if self._by_remote.get(key) is conn:
            del self._by_remote[key]
        with contextlib.suppress(Exception):
            conn.writer.close()
        if not self.closed:
            self.on_lost(conn.flow, reason)

    # -- housekeeping -----------------------------------------------------------------------
    async def close_idle(self, busy: set[int]) -> None:
        """Close streams silent for ``idle_timeout`` seconds whose id is not in ``busy``."""
        limit = time.monotonic() - self.idle_timeout
        for conn in list(self.connections.values()):
            if conn.last_activity < limit and conn.id not in busy:
                await conn.close()
                self._lost(conn, "idle")

    async def close(self) -> None:
        """Close every socket, listener and connection (idempotent)."""
        self.closed = True
        for listener in self.listeners:
            if listener.server is not None:
                listener.server.close()
            if listener.udp is not None and listener.udp.transport is not None:
                listener.udp.transport.close()
        for conn in list(self.connections.values()):
            await conn.close()
        self.connections.clear()
        self._by_remote.clear()
        for listener in self.listeners:
            if listener.server is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(listener.server.wait_closed(), 2.0)
