"""asyncio SCCP control connection (TCP 2000 or TLS 2443), for a station and for a call manager.

Framing is the protocol layer's :class:`~skinnysip.sccp.messages.FrameDecoder` (reference §1.1):
a frame split over reads and several frames in one read both work, and the frame size is
capped. Every frame sent or received is recorded as a :class:`~skinnysip.result.WireMessage`
(``summary`` = message name, ``raw`` = hex of the frame, ``decoded`` =
``{"id", "name", "fields"}``); with an :class:`~skinnysip.result.ExchangeLimit` the record keeps
the first messages only and counts the rest, so a flooding peer costs a counter, not memory.
A flood does not stretch deadlines either: :meth:`SCCPTransport.poll` gives the event loop a
turn every :data:`YIELD_EVERY` frames and every read.

Every failure of the connection — refused, TLS handshake, silence past a deadline, peer
closing (cleanly or mid-frame), oversize length, garbage — raises one
:class:`SCCPConnectionError` whose ``reason`` is a short human-readable sentence.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
from collections import deque
from typing import Any

from skinnysip import policy as target_policy
from skinnysip.addresses import family_mismatch, hostport, source_problem, strip_brackets
from skinnysip.net import tls as tls_helpers
from skinnysip.result import ExchangeLimit, TLSInfo, WireMessage, now
from skinnysip.sccp.messages import (
    DEFAULT_MAX_FRAME,
    FrameDecoder,
    SCCPDecodeError,
    SCCPMessage,
    decode_frame,
)

READ_SIZE = 65536
#: frames handed out by :meth:`SCCPTransport.poll` between two turns of the event loop, so a
#: peer flooding frames never starves timers and other tasks (issue 11)
YIELD_EVERY = 32
SCCP_PORT = 2000
SCCP_TLS_PORT = 2443


class SCCPConnectionError(Exception):
    """The SCCP connection failed; ``reason`` says how (one sentence)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def jsonable(value: Any) -> Any:
    """Decoded fields made JSON-safe (bytes become hex strings)."""
    if isinstance(value, bytes | bytearray):
        return bytes(value).hex()
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    return value


def describe_message(msg: SCCPMessage) -> dict[str, Any]:
    """The ``decoded`` dict of a recorded frame: ``{"id": int, "name": str, "fields": {...}}``."""
    return {"id": msg.id, "name": msg.name, "fields": jsonable(msg.fields)}


class SCCPTransport:
    """One SCCP connection over an asyncio stream pair.

    ``protocol_version`` (settable) picks classic vs v17 layouts for decoding and for the
    record of sent frames; frames already buffered are re-decoded when it changes, so a
    RegisterAck followed in the same read by a layout-sensitive message is still right.
    ``messages`` is the wire record, shared with the caller if a list is passed in; ``limit``
    (shared too, e.g. by the connections of one operation) bounds it: beyond it frames are
    decoded and handed out as usual but only counted in ``limit.dropped``.
    """

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        *,
        transport: str = "tcp",
        protocol_version: int = 0,
        max_frame: int = DEFAULT_MAX_FRAME,
        messages: list[WireMessage] | None = None,
        tls_info: TLSInfo | None = None,
        limit: ExchangeLimit | None = None,
    ) -> None:
        self.reader = reader
        self.writer = writer
        self.transport = transport
        self.messages: list[WireMessage] = messages if messages is not None else []
        self.tls_info = tls_info
        self.limit = limit
        self._decoder = FrameDecoder(protocol_version=protocol_version, max_frame=max_frame)
        self._ready: deque[tuple[SCCPMessage, int]] = deque()
        self._taken = 0
        self._closed = False
        self._error: SCCPConnectionError | None = None
        #: reasons of the last frames skipped because their payload was malformed (bounded)
        self.skipped: deque[str] = deque(maxlen=100)
        sock = writer.get_extra_info("sockname") or ("?", 0)
        peer = writer.get_extra_info("peername") or ("?", 0)
        self.local_ip: str = str(sock[0])
        self.local_port: int = int(sock[1])
        self.remote_ip: str = str(peer[0])
        self.remote_port: int = int(peer[1])
        self.local = hostport(self.local_ip, self.local_port)
        self.remote = hostport(self.remote_ip, self.remote_port)

    # ---- opening ------------------------------------------------------------------------

    @classmethod
    async def connect(
        cls,
        host: str,
        port: int,
        *,
        timeout: float,
        use_tls: bool = False,
        tls_verify: bool = True,
        ca_file: str | None = None,
        protocol_version: int = 0,
        max_frame: int = DEFAULT_MAX_FRAME,
        messages: list[WireMessage] | None = None,
        limit: ExchangeLimit | None = None,
        local_ip: str | None = None,
    ) -> SCCPTransport:
        """Open TCP (or TLS) to ``host``:``port`` within ``timeout`` seconds, from ``local_ip``
        (an IP literal of this host; None: the address the routing table picks).

        With an active target policy (:mod:`skinnysip.policy`) ``host`` is resolved once, checked,
        and the connection goes to that address (``host`` stays the TLS server name).

        Raises :class:`SCCPConnectionError` on refusal (by the peer or the target policy),
        timeout, DNS or TLS failure.
        """
        ctx: ssl.SSLContext | None = None
        if use_tls:
            try:
                ctx = tls_helpers.client_context(tls_verify, ca_file)
            except (OSError, ssl.SSLError) as exc:
                raise SCCPConnectionError(f"cannot load CA file {ca_file!r}: {exc}") from exc
        where = hostport(host, port)
        address = host
        policy = target_policy.active()
        if policy is not None:  # resolved once and checked; the connection goes to that address
            try:
                address = (await policy.resolve(host, timeout=timeout))[0]
            except target_policy.TargetRefused as exc:
                raise SCCPConnectionError(exc.reason) from None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        local_addr = None
        if local_ip is not None:
            mismatch = family_mismatch(local_ip, address)
            if mismatch is not None:
                raise SCCPConnectionError(mismatch)
            local_addr = (strip_brackets(local_ip), 0)
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(address, port, limit=READ_SIZE, local_addr=local_addr), timeout)
        except TimeoutError as exc:
            raise SCCPConnectionError(f"connection to {where} timed out after {timeout * 1000:.0f} ms") from exc
        except ConnectionRefusedError as exc:
            raise SCCPConnectionError(f"connection refused by {where}") from exc
        except socket.gaierror as exc:
            raise SCCPConnectionError(f"cannot resolve {host!r}: {exc.strerror}") from exc
        except OSError as exc:
            problem = source_problem(exc) if local_addr is not None else None
            if problem is not None:
                raise SCCPConnectionError(f"cannot connect to {where} from {local_ip}: {problem}") from exc
            raise SCCPConnectionError(f"cannot connect to {where}: {exc.strerror or exc}") from exc
        info = None
        if ctx is not None:  # the handshake on the connected socket, so its failures say so
            try:
                await asyncio.wait_for(writer.start_tls(ctx, server_hostname=host),
                                       max(0.0, deadline - loop.time()))
            except TimeoutError as exc:
                writer.transport.abort()
                raise SCCPConnectionError(f"TLS handshake with {where} did not complete within "
                                          f"{timeout * 1000:.0f} ms") from exc
            except ssl.SSLError as exc:
                writer.transport.abort()
                raise SCCPConnectionError(tls_helpers.verification_error(exc)) from exc
            except (ConnectionError, OSError) as exc:
                writer.transport.abort()
                raise SCCPConnectionError(f"TLS handshake with {where} failed: {exc.strerror or exc}") from exc
            info = tls_helpers.describe(writer.get_extra_info("ssl_object"), verified=tls_verify)
        return cls(reader, writer, transport="tls" if use_tls else "tcp", protocol_version=protocol_version,
                   max_frame=max_frame, messages=messages, tls_info=info, limit=limit)

    # ---- properties ---------------------------------------------------------------------

    @property
    def protocol_version(self) -> int:
        return self._decoder.protocol_version

    @protocol_version.setter
    def protocol_version(self, value: int) -> None:
        self._decoder.protocol_version = value

    @property
    def closed(self) -> bool:
        return self._closed

    # ---- record -------------------------------------------------------------------------

    @property
    def dropped(self) -> int:
        """Messages not kept in the record because of ``limit`` (all connections sharing it)."""
        return self.limit.dropped if self.limit is not None else 0

    def _record(self, direction: str, msg: SCCPMessage, raw: bytes) -> None:
        if self.limit is not None and not self.limit.admit(2 * len(raw)):
            return
        self.messages.append(
            WireMessage(
                direction=direction,  # type: ignore[arg-type]
                time=now(),
                local=self.local,
                remote=self.remote,
                transport=self.transport,
                summary=msg.name,
                raw=raw.hex(),
                decoded=describe_message(msg),
            )
        )

    # ---- sending ------------------------------------------------------------------------

    async def send(self, frame: bytes, timeout: float = 5.0) -> SCCPMessage:
        """Write one whole frame and record it; returns its decoded form."""
        if self._closed:
            raise SCCPConnectionError("connection already closed")
        try:
            msg = decode_frame(frame, protocol_version=self.protocol_version)
        except SCCPDecodeError as exc:  # our own frame should always decode; record it raw
            msg = SCCPMessage(id=-1, name="Undecodable", fields={"reason": exc.reason}, raw=frame)
        self._record("sent", msg, frame)
        try:
            self.writer.write(frame)
            await asyncio.wait_for(self.writer.drain(), timeout)
        except TimeoutError as exc:
            raise SCCPConnectionError(f"sending {msg.name} to {self.remote} timed out") from exc
        except (ConnectionError, OSError) as exc:
            raise SCCPConnectionError(f"connection lost while sending {msg.name}: {exc}") from exc
        return msg

    async def send_all(self, frames: list[bytes]) -> None:
        for frame in frames:
            await self.send(frame)

    # ---- receiving ----------------------------------------------------------------------

    def _take_ready(self) -> SCCPMessage:
        msg, version = self._ready.popleft()
        if (version >= 17) != (self.protocol_version >= 17):
            # the layout family changed after this frame was decoded: decode it again
            try:
                msg = decode_frame(msg.raw, protocol_version=self.protocol_version)
            except SCCPDecodeError as exc:
                raise SCCPConnectionError(f"malformed {msg.name} frame from {self.remote}: {exc.reason}") from exc
        self._record("received", msg, msg.raw)
        return msg

    async def recv(self, timeout: float) -> SCCPMessage:
        """The next message, waiting at most ``timeout`` seconds.

        Raises :class:`SCCPConnectionError` on timeout ("no answer"), peer close (saying
        whether it was mid-frame), a read error, or a malformed/oversize frame.
        """
        msg = await self.poll(timeout)
        if msg is None:
            raise SCCPConnectionError(
                f"no answer from {self.remote} within {timeout * 1000:.0f} ms"
                + (f" ({self._decoder.pending()} bytes of an incomplete frame buffered)"
                   if self._decoder.pending() else "")
            )
        return msg

    async def poll(self, timeout: float) -> SCCPMessage | None:
        """Like :meth:`recv`, but returns ``None`` when ``timeout`` seconds pass quietly."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(0.0, timeout)
        self._taken += 1
        if self._taken >= YIELD_EVERY:
            self._taken = 0
            await asyncio.sleep(0)
        while not self._ready:
            if self._error is not None:
                self._closed = True
                raise self._error
            if self._closed:
                raise SCCPConnectionError("connection already closed")
            remaining = deadline - loop.time()
            if remaining <= 0:
                return None
            try:
                data = await asyncio.wait_for(self.reader.read(READ_SIZE), remaining)
            except TimeoutError:
                continue
            except (ConnectionError, OSError, ssl.SSLError) as exc:
                self._closed = True
                raise SCCPConnectionError(f"connection to {self.remote} failed: {exc}") from exc
            if not data:
                self._closed = True
                pending = self._decoder.pending()
                if pending:
                    raise SCCPConnectionError(
                        f"{self.remote} closed the connection mid-frame ({pending} bytes of an incomplete frame)"
                    )
                raise SCCPConnectionError(f"{self.remote} closed the connection")
            await asyncio.sleep(0)  # a read that never waits must not starve the loop
            version = self.protocol_version
            try:
                msgs = self._decoder.feed(data)
            except SCCPDecodeError as exc:
                # keep what decoded before the bad frame; a broken stream ends after those
                self._ready.extend((m, version) for m in exc.messages)
                if exc.fatal:
                    self._error = SCCPConnectionError(f"malformed data from {self.remote}: {exc.reason}")
                else:
                    self.skipped.append(exc.reason)
                continue
            self._ready.extend((m, version) for m in msgs)
        return self._take_ready()

    def buffered(self) -> int:
        """Decoded messages waiting to be taken by :meth:`recv`."""
        return len(self._ready)

    # ---- closing ------------------------------------------------------------------------

    async def close(self, timeout: float = 2.0) -> None:
        """Close the connection (idempotent, bounded)."""
        self._closed = True
        if self.writer.is_closing():
            return
        with contextlib.suppress(Exception):
            self.writer.close()
            await asyncio.wait_for(self.writer.wait_closed(), timeout)
