"""asyncio drivers for SIP over UDP, TCP and TLS (RFC 3261 §18), IPv4 and IPv6.

One :class:`SIPConnection` per flow to one server: a connected UDP socket, or a TCP / TLS
stream framed by :class:`skinnysip.sip.message.StreamParser` (RFC 3261 §18.3). The local
address used in ``Via`` and ``Contact`` is read from the connected socket
(:attr:`SIPConnection.local_host`/``local_port``); nothing is sent anywhere but the
server the caller named. Every message sent or received is recorded, with wall-clock time,
local and remote address, transport and raw text, in :attr:`SIPConnection.exchange`.

:class:`TransactionDriver` runs sans-IO client transactions
(:mod:`skinnysip.sip.transaction`) over a connection: it transmits what they ask, feeds them
matching responses, transport errors and the loop's monotonic time, and hands their events
to the caller. Every wait has a deadline; every read a size cap; queues are bounded.

Errors: :class:`SIPTransportError` (with a one-line ``reason``) for anything the network or
the peer did wrong (refused, reset, TLS verification failed, malformed stream, …).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from skinnysip.addresses import hostport, strip_brackets
from skinnysip.net import tls as tlsmod
from skinnysip.result import TLSInfo, WireMessage, now
from skinnysip.sip.message import Request, Response, SIPParseError, StreamParser, parse_message
from skinnysip.sip.transaction import (
    ClientTransaction,
    Event,
    Timers,
    TransactionOutput,
    new_transaction,
)

__all__ = [
    "ClientEvent",
    "SIPConnection",
    "SIPTransportError",
    "Stray",
    "TransactionDriver",
    "Transport",
    "open_connection",
]

Transport = Literal["udp", "tcp", "tls"]
Message = Request | Response

MAX_MESSAGE_SIZE = 65536  # bytes; one SIP message (datagram or framed) at most
QUEUE_LIMIT = 256  # messages waiting to be read; datagrams beyond are dropped
READ_CHUNK = 16384


class SIPTransportError(Exception):
    """The transport failed; ``reason`` is a one-line, user-facing explanation."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass
class _Failure:
    reason: str


#: summary prefix of a received message that did not parse
_UNPARSEABLE = "unparseable ("


def _describe_os_error(exc: OSError, where: str) -> str:
    if isinstance(exc, ConnectionRefusedError):
        return f"connection refused by {where}"
    if isinstance(exc, ConnectionResetError):
        return f"connection reset by {where}"
    return f"network error with {where}: {exc.strerror or exc}"


class SIPConnection:
    """A flow to one SIP server. Create with :func:`open_connection`; close with
    :meth:`close` (or ``async with``).

    ``transport`` is ``udp``/``tcp``/``tls``; ``reliable`` is false only for UDP.
    ``tls`` is the handshake report for TLS, else None. ``exchange`` lists every message
    sent and received, in order, as :class:`WireMessage`.
    """

    def __init__(
        self,
        transport: Transport,
        local: tuple[str, int],
        remote: tuple[str, int],
        *,
        tls: TLSInfo | None = None,
    ) -> None:
        self.transport: Transport = transport
        self.reliable = transport != "udp"
        self.local_host, self.local_port = local[0], int(local[1])
        self.remote_host, self.remote_port = remote[0], int(remote[1])
        self.tls = tls
        self.exchange: list[WireMessage] = []
        self.dropped = 0
        self._queue: asyncio.Queue[Message | _Failure] = asyncio.Queue(QUEUE_LIMIT)
        self._failure: _Failure | None = None
        self._closed = False

    # -- addresses -------------------------------------------------------------------
    @property
    def local(self) -> str:
        """``host:port`` of our end of the socket (IPv6 bracketed)."""
        return hostport(self.local_host, self.local_port)

    @property
    def remote(self) -> str:
        """``host:port`` of the server."""
        return hostport(self.remote_host, self.remote_port)

    @property
    def where(self) -> str:
        """``host:port/transport`` of the server, for error messages."""
        return f"{self.remote}/{self.transport}"

    def unparseable_received(self) -> list[str]:
        """Summaries (``"unparseable (<reason>)"``) of the received messages that did not
        parse: dropped on UDP (RFC 3261 §18.1.2), the end of a TCP/TLS flow; kept in
        :attr:`exchange` with their bytes."""
        return [m.summary for m in self.exchange if m.direction == "received" and m.summary.startswith(_UNPARSEABLE)]

    def via(self, branch: str) -> str:
        """A Via header field value for a request on this flow: our real local address and
        port, ``rport`` (RFC 3581) and ``branch`` (RFC 3261 §18.1.1, §8.1.1.7)."""
        return f"SIP/2.0/{self.transport.upper()} {self.local};rport;branch={branch}"

    # -- I/O -------------------------------------------------------------------------
    async def send(self, message: Message, note: str = "") -> None:
        """Write one message; record it. Raises :class:`SIPTransportError`."""
        if self._closed:
            raise SIPTransportError(f"connection to {self.where} is closed")
        if self._failure is not None:
            raise SIPTransportError(self._failure.reason)
        data = message.to_bytes()
        self._record("sent", message.summary + (f" ({note})" if note else ""), data)
        try:
            await self._write(data)
        except OSError as exc:
            raise SIPTransportError(_describe_os_error(exc, self.where)) from exc

    async def receive(self, timeout: float) -> Message | None:
        """The next message from the server, or None if none arrives within ``timeout``
        seconds. Raises :class:`SIPTransportError` if the flow failed (refused, reset,
        closed by the peer, malformed stream)."""
        if self._failure is not None and self._queue.empty():
            raise SIPTransportError(self._failure.reason)
        try:
            item = await asyncio.wait_for(self._queue.get(), max(0.0, timeout))
        except TimeoutError:
            return None
        if isinstance(item, _Failure):
            self._failure = item
            raise SIPTransportError(item.reason)
        return item

    async def close(self) -> None:
        """Close the socket (idempotent)."""
        self._closed = True

    async def __aenter__(self) -> SIPConnection:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- for subclasses --------------------------------------------------------------
    async def _write(self, data: bytes) -> None:
        raise NotImplementedError  # pragma: no cover

    def _record(self, direction: Literal["sent", "received"], summary: str, data: bytes) -> None:
        self.exchange.append(
            WireMessage(
                direction=direction,
                time=now(),
                local=self.local,
                remote=self.remote,
                transport=self.transport,
                summary=summary,
                raw=data.decode("utf-8", errors="replace"),
            )
        )

    def _deliver(self, item: Message | _Failure) -> None:
        try:
            self._queue.put_nowait(item)
        except asyncio.QueueFull:
            self.dropped += 1

    def _received_datagram(self, data: bytes) -> None:
        try:
            message = parse_message(data)
        except SIPParseError as exc:
            self._record("received", f"{_UNPARSEABLE}{exc.reason})", data)
            return  # RFC 3261 §18.1.2: a malformed datagram is discarded
        self._record("received", message.summary, data)
        self._deliver(message)


class _UDPProtocol(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.conn: _UDPConnection | None = None
        self.early: list[bytes | Exception] = []

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        if self.conn is None:
            if len(self.early) < QUEUE_LIMIT:
                self.early.append(data)
            return
        self.conn._received_datagram(data[:MAX_MESSAGE_SIZE])

    def error_received(self, exc: Exception) -> None:
        if self.conn is None:
            self.early.append(exc)
            return
        self.conn._udp_error(exc)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.conn is not None and exc is not None:
            self.conn._udp_error(exc)


class _UDPConnection(SIPConnection):
    def __init__(self, transport: asyncio.DatagramTransport, protocol: _UDPProtocol) -> None:
        sock = transport.get_extra_info("socket")
        local = sock.getsockname()
        remote = transport.get_extra_info("peername")
        super().__init__("udp", (local[0], local[1]), (remote[0], remote[1]))
        self._transport = transport
        protocol.conn = self
        for item in protocol.early:
            if isinstance(item, Exception):
                self._udp_error(item)
            else:
                self._received_datagram(item)
        protocol.early.clear()

    def _udp_error(self, exc: Exception) -> None:
        if isinstance(exc, ConnectionRefusedError):
            reason = f"connection refused by {self.where} (ICMP port unreachable)"
        elif isinstance(exc, OSError):
            reason = _describe_os_error(exc, self.where)
        else:
            reason = f"network error with {self.where}: {exc}"
        self._deliver(_Failure(reason))

    async def _write(self, data: bytes) -> None:
        self._transport.sendto(data)

    async def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._transport.close()


class _StreamConnection(SIPConnection):
    def __init__(
        self,
        transport: Transport,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        tls: TLSInfo | None,
        max_message_size: int,
    ) -> None:
        local = writer.get_extra_info("sockname")
        remote = writer.get_extra_info("peername")
        super().__init__(transport, (local[0], local[1]), (remote[0], remote[1]), tls=tls)
        self._reader = reader
        self._writer = writer
        self._parser = StreamParser(max_message_size)
        self._task = asyncio.get_running_loop().create_task(self._read_loop())

    async def _read_loop(self) -> None:
        unframed = b""  # bytes fed to the parser and not yet returned in a message
        try:
            while True:
                data = await self._reader.read(READ_CHUNK)
                if not data:
                    await self._queue.put(_Failure(f"connection closed by {self.where}"))
                    return
                unframed += data
                try:
                    messages = self._parser.feed(data)
                except SIPParseError as exc:
                    self._record("received", f"{_UNPARSEABLE}{exc.reason})", unframed[-MAX_MESSAGE_SIZE:])
                    await self._queue.put(_Failure(f"malformed SIP from {self.where}: {exc.reason}"))
                    return
                consumed = len(unframed) - self._parser.buffered
                framed, unframed = unframed[:consumed], unframed[consumed:]
                for message in messages:
                    # one message: its exact bytes; several in one read: re-serialized each
                    raw = framed.lstrip(b"\r\n") if len(messages) == 1 else message.to_bytes()
                    self._record("received", message.summary, raw)
                    await self._queue.put(message)  # bounded: back-pressure on the stream
        except (OSError, ssl.SSLError) as exc:
            reason = _describe_os_error(exc, self.where) if isinstance(exc, OSError) else str(exc)
            with contextlib.suppress(asyncio.QueueFull):
                self._queue.put_nowait(_Failure(reason))

    async def _write(self, data: bytes) -> None:
        self._writer.write(data)
        await asyncio.wait_for(self._writer.drain(), 10.0)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._task.cancel()
        with contextlib.suppress(BaseException):
            await self._task
        self._writer.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._writer.wait_closed(), 2.0)


async def open_connection(
    host: str,
    port: int,
    transport: Transport = "udp",
    *,
    timeout: float = 10.0,
    verify: bool = True,
    ca_file: str | None = None,
    max_message_size: int = MAX_MESSAGE_SIZE,
) -> SIPConnection:
    """Open a flow to ``host:port`` over ``transport``.

    ``host``: name, IPv4 or IPv6 literal (brackets allowed); resolved with the system
    resolver. UDP uses the first address; TCP and TLS try the addresses in the resolver's
    order until one accepts (RFC 3263 §4.3: on failure, try the next), so ``localhost``
    works whether the server listens on ``::1`` or ``127.0.0.1``. ``timeout`` (seconds)
    bounds resolution, all connect attempts and the TLS handshake together. TLS: SNI is the
    host name (not sent for IP literals), the certificate is verified unless ``verify`` is
    false (against ``ca_file`` or the system store).
    Raises :class:`SIPTransportError` with a clear reason.
    """
    host = strip_brackets(host)
    where = f"{hostport(host, port)}/{transport}"
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    kind = socket.SOCK_DGRAM if transport == "udp" else socket.SOCK_STREAM
    try:
        infos = await asyncio.wait_for(loop.getaddrinfo(host, port, type=kind), timeout)
    except TimeoutError as exc:
        raise SIPTransportError(f"cannot resolve {host!r} within {timeout * 1000:.0f} ms") from exc
    except (socket.gaierror, UnicodeError) as exc:
        raise SIPTransportError(f"cannot resolve {host!r}: {getattr(exc, 'strerror', None) or exc}") from exc
    if not infos:
        raise SIPTransportError(f"cannot resolve {host!r}: no address")
    if transport == "udp":
        family, _, _, _, address = infos[0]
        protocol = _UDPProtocol()
        try:
            dgram, _ = await loop.create_datagram_endpoint(
                lambda: protocol, remote_addr=(str(address[0]), int(address[1])), family=family
            )
        except OSError as exc:
            raise SIPTransportError(_describe_os_error(exc, where)) from exc
        return _UDPConnection(dgram, protocol)
    context: ssl.SSLContext | None = None
    if transport == "tls":
        try:
            context = tlsmod.client_context(verify, ca_file)
        except (OSError, ssl.SSLError) as exc:
            raise SIPTransportError(f"cannot load CA file {ca_file!r}: {exc}") from exc
    elif transport != "tcp":
        raise SIPTransportError(f"unknown transport {transport!r}")
    addresses = list(dict.fromkeys((family, str(a[0]), int(a[1])) for family, _, _, _, a in infos))
    errors: list[str] = []
    streams: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
    for family, ip, ip_port in addresses:
        remaining = deadline - loop.time()
        attempt = f"{hostport(ip, ip_port)}/{transport}" if len(addresses) > 1 else where
        if remaining <= 0:
            errors.append(f"no connection to {attempt} within {timeout * 1000:.0f} ms")
            break
        try:
            streams = await asyncio.wait_for(
                asyncio.open_connection(
                    ip,
                    ip_port,
                    ssl=context,
                    server_hostname=host if context is not None else None,
                    limit=max_message_size,
                    family=family,
                ),
                remaining,
            )
            break
        except TimeoutError:
            errors.append(f"no connection to {attempt} within {timeout * 1000:.0f} ms")
            break
        except ssl.SSLError as exc:
            # the server answered: a certificate or handshake problem is not a reason to
            # try another address of the same name
            raise SIPTransportError(tlsmod.verification_error(exc)) from exc
        except OSError as exc:
            errors.append(_describe_os_error(exc, attempt))
    if streams is None:
        raise SIPTransportError("; ".join(errors))
    reader, writer = streams
    info = None
    if context is not None:
        info = tlsmod.describe(writer.get_extra_info("ssl_object"), verified=verify)
    return _StreamConnection(transport, reader, writer, info, max_message_size)


# -- running client transactions over a connection ----------------------------------------


@dataclass(frozen=True)
class ClientEvent:
    """An event of one of the driver's transactions."""

    transaction: ClientTransaction
    event: Event


@dataclass(frozen=True)
class Stray:
    """A message that matched no running transaction (a request from the server, a late
    retransmission of a 2xx after its transaction ended, …)."""

    message: Message


class TransactionDriver:
    """Runs client transactions over one :class:`SIPConnection` (RFC 3261 §17.1).

    :meth:`start` sends a request in a new transaction; :meth:`next_event` waits (until an
    absolute loop-clock ``deadline``) for the next transaction event or stray message,
    meanwhile firing the transactions' timers (retransmissions on UDP) on time.
    ``clock`` defaults to the running loop's monotonic ``time()``. ``unmatched_responses``
    counts responses that matched no transaction (RFC 3261 §17.1.3: wrong branch or method).
    """

    def __init__(
        self,
        connection: SIPConnection,
        timers: Timers | None = None,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self.connection = connection
        self.timers = timers or Timers()
        self.clock = clock or asyncio.get_running_loop().time
        self.transactions: list[ClientTransaction] = []
        self.unmatched_responses = 0
        self._pending: deque[ClientEvent | Stray] = deque()

    async def start(self, request: Request) -> ClientTransaction:
        """Create the client transaction for ``request`` and transmit it."""
        tx = new_transaction(request, reliable=self.connection.reliable, timers=self.timers)
        self.transactions.append(tx)
        await self._apply(tx, tx.start(self.clock()))
        return tx

    async def send_direct(self, request: Request, note: str = "") -> None:
        """Send a request outside any transaction (the ACK for a 2xx, RFC 3261 §17.1).
        Raises :class:`SIPTransportError`."""
        await self.connection.send(request, note)

    async def _apply(self, tx: ClientTransaction, out: TransactionOutput) -> None:
        for item in out.transmit:
            try:
                await self.connection.send(item.message, "retransmission" if item.kind == "retransmission" else "")
            except SIPTransportError as exc:
                self._queue_events(tx, out)
                self._queue_events(tx, tx.transport_error(exc.reason, self.clock()))
                return
        self._queue_events(tx, out)

    def _queue_events(self, tx: ClientTransaction, out: TransactionOutput) -> None:
        for event in out.events:
            self._pending.append(ClientEvent(tx, event))
        if tx.terminated and tx in self.transactions:
            self.transactions.remove(tx)

    def _next_timer(self) -> float | None:
        deadlines = [d for tx in self.transactions if (d := tx.deadline) is not None]
        return min(deadlines) if deadlines else None

    async def next_event(self, deadline: float) -> ClientEvent | Stray | None:
        """The next event, or None once the loop clock reaches ``deadline`` without one."""
        for _ in range(100000):  # each pass consumes a message, fires a timer or ends
            if self._pending:
                return self._pending.popleft()
            current = self.clock()
            timer = self._next_timer()
            if timer is not None and timer <= current:
                for tx in list(self.transactions):
                    if tx.deadline is not None and tx.deadline <= current:
                        await self._apply(tx, tx.tick(current))
                continue
            if current >= deadline:
                return None
            wake = deadline if timer is None else min(deadline, timer)
            try:
                message = await self.connection.receive(wake - current)
            except SIPTransportError as exc:
                if not self.transactions:
                    raise
                for tx in list(self.transactions):
                    self._queue_events(tx, tx.transport_error(exc.reason, self.clock()))
                continue
            if message is None:
                continue
            await self._dispatch(message)
        return None

    async def _dispatch(self, message: Message) -> None:
        if isinstance(message, Response):
            for tx in self.transactions:
                if tx.matches(message):
                    await self._apply(tx, tx.receive(message, self.clock()))
                    return
            self.unmatched_responses += 1
        self._pending.append(Stray(message))
