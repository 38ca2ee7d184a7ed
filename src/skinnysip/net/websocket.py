"""SIP over WebSocket (RFC 7118): the WebSocket layer of one ``ws``/``wss`` connection.

The WebSocket protocol (RFC 6455: the HTTP/1.1 Upgrade handshake, frames, masking, ping,
close) is the ``websockets`` library's sans-IO implementation; this module adds what RFC 7118
asks of a SIP entity on top of it and no socket of its own — bytes in, bytes out:

- the handshake offers, and must agree on, the ``sip`` subprotocol (RFC 7118 §4.1/§4.2): a
  server that answers without it is refused (the connection is not used), a client that does
  not offer it gets 400;
- each WebSocket message carries exactly one SIP message (§5): :meth:`WebSocketFraming.feed`
  returns whole messages (fragments joined), text or binary; :meth:`WebSocketFraming.message`
  sends one as a text frame when it is UTF-8 (it always is for SIP without a binary body),
  else as a binary frame (§5.1);
- pings are answered with pongs and a close frame with a close frame by the library.

Every message is capped at ``max_size`` octets (a larger one fails the connection with close
code 1009). Errors: :class:`WebSocketError` with a one-line ``reason``.

Imported only when a ``ws``/``wss`` flow is opened or listened on.
"""

from __future__ import annotations

from websockets.client import ClientProtocol
from websockets.exceptions import InvalidStatus, WebSocketException
from websockets.frames import Frame, Opcode
from websockets.http11 import Request, Response
from websockets.protocol import State
from websockets.server import ServerProtocol
from websockets.typing import Subprotocol
from websockets.uri import parse_uri

__all__ = ["DEFAULT_PATH", "SUBPROTOCOL", "WebSocketError", "WebSocketFraming"]

#: the WebSocket subprotocol of SIP (RFC 7118 §4, IANA "WebSocket Subprotocol Name Registry")
SUBPROTOCOL = "sip"
#: the resource asked for when none is given (Kamailio and FreeSWITCH take any; Asterisk wants ``/ws``)
DEFAULT_PATH = "/"
MAX_EVENTS = 1024  # frames kept between two reads of one connection (bounded; a flood fails it)


class WebSocketError(Exception):
    """The WebSocket layer failed; ``reason`` is one user-facing line."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class WebSocketFraming:
    """The WebSocket state of one connection, either side. Make one with :meth:`client` or
    :meth:`server`; send :meth:`outgoing` after every call that can produce bytes."""

    def __init__(self, protocol: ClientProtocol | ServerProtocol, where: str, *, server: str | None = None) -> None:
        self._protocol = protocol
        self._server_header = server
        self._where = where
        self._parts: list[bytes] = []  # the fragments of a message not yet complete
        self._ready: list[bytes] = []  # whole messages found while the handshake completed
        #: pong frames received (answers to our pings: the peer is alive, RFC 6455 §5.5.3)
        self.pongs = 0

    # -- the opening handshake (RFC 6455 §4) --------------------------------------------------
    @classmethod
    def client(cls, host: str, port: int, path: str = DEFAULT_PATH, *, secure: bool = False,
               max_size: int = 65536, user_agent: str | None = None) -> WebSocketFraming:
        """A client: its handshake request (``GET path`` with ``Sec-WebSocket-Protocol: sip``)
        is waiting in :meth:`outgoing`. ``host`` goes into the Host header (a name or IP).
        Raises :class:`WebSocketError` for a path that is not a URI path."""
        scheme = "wss" if secure else "ws"
        shown = f"[{host}]" if ":" in host else host
        if not path.startswith("/") or any(c in path for c in " \r\n#"):
            raise WebSocketError(f"WebSocket path {path!r} must start with '/' and hold no spaces")
        try:
            uri = parse_uri(f"{scheme}://{shown}:{port}{path}")
        except WebSocketException as exc:
            raise WebSocketError(f"bad WebSocket URI {scheme}://{shown}:{port}{path}: {exc}") from exc
        protocol = ClientProtocol(uri, subprotocols=[Subprotocol(SUBPROTOCOL)], max_size=max_size)
        request = protocol.connect()
        if user_agent:
            request.headers["User-Agent"] = user_agent
        protocol.send_request(request)
        return cls(protocol, f"{scheme}://{shown}:{port}{path}")

    @classmethod
    def server(cls, where: str, *, max_size: int = 65536, server: str | None = None) -> WebSocketFraming:
        """A server waiting for a client's handshake request (``where``: names the peer in errors)."""
        protocol = ServerProtocol(subprotocols=[Subprotocol(SUBPROTOCOL)], max_size=max_size)
        return cls(protocol, where, server=server)

    @property
    def is_open(self) -> bool:
        """The handshake is done and no close frame has been sent or received."""
        return self._protocol.state is State.OPEN

    @property
    def is_closed(self) -> bool:
        """The WebSocket is closing or closed (a close frame went either way, or it failed)."""
        return self._protocol.state in (State.CLOSING, State.CLOSED)

    def handshake_step(self, data: bytes) -> bool:
        """Feed bytes received while the handshake is under way; True once it is complete
        (messages that came right behind it are kept for the next :meth:`feed`). A server
        answers the request here (101, or 400 when ``sip`` is not offered; the answer is in
        :meth:`outgoing`). Raises :class:`WebSocketError` when the handshake failed."""
        protocol = self._protocol
        protocol.receive_data(data)
        events = protocol.events_received()
        done = False
        for i, event in enumerate(events):
            if isinstance(event, Request) and isinstance(protocol, ServerProtocol):
                response = protocol.accept(event)
                if self._server_header:
                    response.headers["Server"] = self._server_header
                protocol.send_response(response)
                if protocol.handshake_exc is not None:
                    raise WebSocketError(f"WebSocket handshake from {self._where} refused "
                                         f"({response.status_code}): {_why(protocol.handshake_exc)}")
                done = True
            elif isinstance(event, Response):
                if protocol.handshake_exc is not None:
                    raise WebSocketError(_client_failure(self._where, event, protocol.handshake_exc))
                if protocol.subprotocol != SUBPROTOCOL:  # RFC 7118 §4.1
                    raise WebSocketError(f"{self._where} accepted the WebSocket but not the 'sip' "
                                         "subprotocol (RFC 7118 §4.1)")
                done = True
            if done:
                self._ready.extend(self._messages(events[i + 1:]))
                return True
        if protocol.handshake_exc is not None:
            if isinstance(protocol, ServerProtocol):
                raise WebSocketError(f"bad WebSocket handshake from {self._where}: {_why(protocol.handshake_exc)}")
            raise WebSocketError(f"WebSocket handshake with {self._where} failed: {_why(protocol.handshake_exc)}")
        if protocol.state is State.CLOSED:
            raise WebSocketError(f"{self._where} closed during the WebSocket handshake")
        return False

    # -- messages (RFC 7118 §5) ----------------------------------------------------------------
    def feed(self, data: bytes) -> list[bytes]:
        """The whole messages completed by ``data`` (each one SIP message, or CRLFs: a
        keep-alive). Control frames are handled (a ping gets its pong in :meth:`outgoing`).
        Raises :class:`WebSocketError` for a protocol violation or a message over the cap
        (the close frame saying so is in :meth:`outgoing`)."""
        ready, self._ready = self._ready, []
        self._protocol.receive_data(data)
        events = self._protocol.events_received()
        if len(events) > MAX_EVENTS:
            self._protocol.fail(1008, "too many frames")
            raise WebSocketError(f"{self._where} sent more than {MAX_EVENTS} frames at once")
        ready.extend(self._messages(events))
        exc = self._protocol.parser_exc
        if exc is not None:
            raise WebSocketError(f"WebSocket protocol error from {self._where}: {_why(exc)}")
        return ready

    def end_of_stream(self) -> None:
        """The peer closed the TCP connection (EOF)."""
        self._protocol.receive_eof()

    def _messages(self, events: list[Request | Response | Frame]) -> list[bytes]:
        out = []
        for event in events:
            if not isinstance(event, Frame):
                continue
            if event.opcode is Opcode.PONG:
                self.pongs += 1
            elif event.opcode in (Opcode.TEXT, Opcode.BINARY, Opcode.CONT):
                self._parts.append(bytes(event.data))
                if event.fin:
                    out.append(b"".join(self._parts))
                    self._parts = []
        return out

    def message(self, data: bytes) -> bytes:
        """The frame(s) of one SIP message to send: text when ``data`` is UTF-8, else binary
        (RFC 7118 §5.1). Raises :class:`WebSocketError` when the WebSocket is not open."""
        if not self.is_open:
            raise WebSocketError(f"the WebSocket to {self._where} is {'closed' if self.is_closed else 'not open'}")
        try:
            data.decode("utf-8")
        except UnicodeDecodeError:
            self._protocol.send_binary(data)
        else:
            self._protocol.send_text(data)
        return self.outgoing()

    def ping(self) -> bytes:
        """A ping frame (a keep-alive the peer must answer, RFC 6455 §5.5.2); ``b""`` when not open."""
        if not self.is_open:
            return b""
        self._protocol.send_ping(b"")
        return self.outgoing()

    def close(self, code: int = 1000, reason: str = "") -> bytes:
        """A close frame (RFC 6455 §5.5.1), once; ``b""`` when closing already."""
        if not self.is_open:
            return b""
        self._protocol.send_close(code, reason)
        return self.outgoing()

    def outgoing(self) -> bytes:
        """Bytes to write now (handshake, frames, pongs, close frames)."""
        return b"".join(self._protocol.data_to_send())

    @property
    def close_note(self) -> str:
        """How the WebSocket ended, when a close frame was received (``"close 1000"``), else ``""``."""
        received = self._protocol.close_rcvd
        if received is None:
            return ""
        return f"WebSocket close {received.code}{f' ({received.reason})' if received.reason else ''}"


def _why(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__


def _client_failure(where: str, response: Response, exc: BaseException) -> str:
    if isinstance(exc, InvalidStatus) or response.status_code != 101:
        reason = response.reason_phrase or ""
        return (f"{where} refused the WebSocket upgrade with HTTP {response.status_code}"
                f"{f' {reason}' if reason else ''}")
    return f"WebSocket handshake with {where} failed: {_why(exc)}"

