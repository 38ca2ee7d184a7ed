"""A responder for testers (``skinnysip sip listen``): a UAS on the SIP core, like ``sipp -sn uas``.

:class:`Responder` listens on one transport and answers:

- OPTIONS → 200 with Allow/Accept/Supported (RFC 3261 §11.2);
- INVITE → the chosen ``answer``: ``200`` (an SDP answer, RFC 3264 §6: the offerer's first
  codec we know under its payload type, its telephone-event, the reverse of its direction;
  and an RTP echo on the port it names: every packet received is sent back to where it came
  from; an offerless INVITE gets our offer in the 200; an offer with no audio we can answer
  gets 488), any code 300-699 (a rejection), or ``ring`` (180 Ringing until the caller
  sends CANCEL → 200 to the CANCEL and 487 to the INVITE, §9.2);
- BYE in a known dialog → 200 (the dialog and its RTP echo end); re-INVITE → 200 answering
  its offer the same way (hold: ``sendonly`` is answered ``recvonly``, §8.4), the SDP version
  one up, or our last SDP when it has none; INFO/UPDATE/MESSAGE/NOTIFY in a dialog → 200,
  OPTIONS → 200 with the capabilities; REFER, SUBSCRIBE, PRACK → 405 with ``Allow`` (it
  claims no extension but ``timer``, which it answers without a session timer);
- MESSAGE outside a dialog → 200 (RFC 3428 §7);
- anything else per the UAS core (405 with Allow, 481 for no dialog, …).

Bounded: at most ``max_dialogs`` calls at once (more get 486 Busy Here), a dialog idle for
``dialog_timeout`` seconds is dropped (its echo closed), and every RTP echo forwards at most
``echo_limit`` packets.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from skinnysip.net.rtp import bind_even_port
from skinnysip.net.sip_endpoint import USER_AGENT, SIPEndpoint
from skinnysip.net.sip_transport import Transport
from skinnysip.net.trace import TraceRecord
from skinnysip.sdp import SDPParseError, SessionDescription, audio_answer, audio_offer, versioned
from skinnysip.sip.dialog import Dialog, DialogID, dialog_id
from skinnysip.sip.request import new_tag
from skinnysip.sip.server_transaction import InviteServerTransaction
from skinnysip.sip.transactions import AckReceived, CancelReceived, LayerEvent, RequestReceived, TimedOut
from skinnysip.sip.uas import SESSION_ACCEPT, UASCore, is_session_body

__all__ = ["ListenConfig", "Responder"]

_IN_DIALOG_OK = ("INFO", "UPDATE", "MESSAGE", "NOTIFY")
#: what the responder answers (its ``Allow``): no REFER, SUBSCRIBE or PRACK — those get 405
ALLOW = ("INVITE", "ACK", "CANCEL", "BYE", "OPTIONS", *_IN_DIALOG_OK)


@dataclass
class ListenConfig:
    """What to listen on and how to answer (Python units: seconds).

    ``answer``: ``"200"``, ``"ring"``, or a status code 300-699 as text. ``tls_cert``/
    ``tls_key``: PEM files for ``transport="tls"``. ``ring_timeout``: a ringing call not
    cancelled within it is answered 480 (seconds).
    """

    host: str = "127.0.0.1"
    port: int = 5060
    transport: Transport = "udp"
    answer: str = "200"
    tls_cert: str | None = None
    tls_key: str | None = None
    max_dialogs: int = 100
    dialog_timeout: float = 300.0
    ring_timeout: float = 120.0
    echo_limit: int = 100000


class _Echo(asyncio.DatagramProtocol):
    """RTP echo: every datagram back to its sender (symmetric RTP, RFC 4961), bounded."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.packets = 0
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        if self.transport is not None and self.packets < self.limit:
            self.packets += 1
            self.transport.sendto(data, addr)


@dataclass
class _Call:
    dialog: Dialog | None
    invite: InviteServerTransaction
    to_tag: str
    echo: _Echo | None = None
    last_activity: float = field(default_factory=time.monotonic)
    media: tuple[str, int] = ("", 0)  # the echo's (IP, port), what our SDP names
    local_sdp: SessionDescription | None = None  # our last SDP: its o= version goes up on each change (RFC 3264 §8)

    @property
    def sdp(self) -> bytes:
        """Our last SDP as sent (empty before the first)."""
        return self.local_sdp.to_bytes() if self.local_sdp is not None else b""


class Responder:
    """The ``sip listen`` UAS. ``on_record`` gets every message sent or received, as it
    happens (a :class:`~skinnysip.net.trace.TraceRecord`)."""

    def __init__(self, config: ListenConfig, on_record: Callable[[TraceRecord], None] | None = None) -> None:
        self.config = config
        # it claims no extension it does not do (no Replaces, REFER or 100rel); ``timer`` stays
        # so that an INVITE requiring it is answered, without Session-Expires: no session timer
        # (RFC 4028 §9)
        self.endpoint = SIPEndpoint(tls_cert=config.tls_cert, tls_key=config.tls_key,
                                    uas=UASCore(allow=ALLOW, supported=("timer",), server=USER_AGENT))
        self.endpoint.trace.listener = on_record
        self.calls: dict[str, _Call] = {}  # by Call-ID
        self.local: tuple[str, int] | None = None
        self._sweeper: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> tuple[str, int]:
        """Listen; returns the bound (IP, port). Raises ``SIPTransportError`` (port busy…)."""
        self.local = await self.endpoint.listen(self.config.transport, self.config.host, self.config.port)
        self.endpoint.add_handler(self.handle)
        self._sweeper = asyncio.get_running_loop().create_task(self._sweep())
        return self.local

    async def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
        for call in list(self.calls.values()):
            self._end(call)
        for task in list(self._tasks):
            task.cancel()
        await self.endpoint.close()

    async def __aenter__(self) -> Responder:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- events ----------------------------------------------------------------------------
    def handle(self, event: LayerEvent) -> bool:
        """The endpoint handler: True when the event was answered here."""
        if isinstance(event, CancelReceived):
            self.endpoint.respond(event.transaction, 200)
            call = self.calls.get(event.request.call_id or "")
            if not event.invite.final:
                self.endpoint.respond(event.invite, 487, to_tag=call.to_tag if call else new_tag())
            if call is not None and call.invite is event.invite:
                self._end(call)
            return True
        if isinstance(event, AckReceived):
            call = self.calls.get(event.request.call_id or "")
            if call is not None:
                call.last_activity = time.monotonic()
            return True
        if isinstance(event, TimedOut) and isinstance(event.transaction, InviteServerTransaction):
            call = self.calls.get(event.transaction.request.call_id or "")
            if call is not None and event.timer == "L":
                self._end(call)  # no ACK for our 2xx (§13.3.1.4)
            return True
        if not isinstance(event, RequestReceived):
            return False
        request, tx = event.request, event.transaction
        call = self.calls.get(request.call_id or "")
        in_dialog = request.to_tag is not None
        if in_dialog:
            known = call is not None and call.dialog is not None and dialog_id(
                request, local_is_from=False) == call.dialog.id
            if not known or call is None or call.dialog is None:
                return False  # the endpoint answers 481
            code = call.dialog.receive_request(request)
            call.last_activity = time.monotonic()
            if code is not None:
                self.endpoint.respond(tx, code)
            elif request.method == "BYE":
                self.endpoint.respond(tx, 200)
                self._end(call)
            elif request.method == "INVITE":
                self._reinvite(call, event)
            elif request.method in _IN_DIALOG_OK:
                self.endpoint.respond(tx, 200)
            elif request.method == "OPTIONS":  # an in-dialog ping: our capabilities, in the dialog
                self.endpoint.send_response(tx, self.endpoint.uas.options(request))
            else:
                self.endpoint.respond(tx, 405, headers=[("Allow", ", ".join(ALLOW))])
            return True
        if request.method == "MESSAGE":
            self.endpoint.respond(tx, 200, to_tag=new_tag())
            return True
        if request.method != "INVITE" or not isinstance(tx, InviteServerTransaction):
            return False  # OPTIONS and the rest: the endpoint's defaults
        if len(self.calls) >= self.config.max_dialogs:
            self.endpoint.respond(tx, 486, headers=[("Retry-After", "5")], to_tag=new_tag())
            return True
        task = asyncio.get_running_loop().create_task(self._invite(event))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return True

    async def _invite(self, event: RequestReceived) -> None:
        request = event.request
        tx = event.transaction
        assert isinstance(tx, InviteServerTransaction)
        to_tag = new_tag()
        call = _Call(None, tx, to_tag)
        call_id = request.call_id or ""
        self.calls[call_id] = call
        answer = self.config.answer
        try:
            if answer == "ring":
                self.endpoint.respond(tx, 180, to_tag=to_tag, contact=self.endpoint.contact(event.flow))
                await asyncio.sleep(self.config.ring_timeout)
                if not tx.final:
                    self.endpoint.respond(tx, 480, to_tag=to_tag)
                self._end(call)
                return
            code = int(answer)
            if code >= 300:
                self.endpoint.respond(tx, code, to_tag=to_tag)
                self._end(call)
                return
            if not is_session_body(request):  # RFC 3261 §8.2.3
                self.endpoint.respond(tx, 415, to_tag=to_tag, headers=[SESSION_ACCEPT])
                self._end(call)
                return
            try:
                offer = SessionDescription.parse(request.body) if request.body else None
            except SDPParseError:
                self.endpoint.respond(tx, 488, to_tag=to_tag)
                self._end(call)
                return
            local_ip = self.endpoint.local_address(event.flow)[0]
            echo, port = await bind_even_port(local_ip, lambda: _Echo(self.config.echo_limit))
            call.echo, call.media = echo, (local_ip, port)
            if offer is None:  # offerless INVITE: our offer goes in the 200 (RFC 3264 §5)
                call.local_sdp = audio_offer(local_ip, port, (0, 8, 101))
            elif not self._answer(call, offer):
                self.endpoint.respond(tx, 488, to_tag=to_tag)
                self._end(call)
                return
            contact = self.endpoint.contact(event.flow)
            self.endpoint.respond(tx, 200, to_tag=to_tag, body=call.sdp, content_type="application/sdp",
                                  contact=contact)
            call.dialog = Dialog.uas(request, to_tag)
        except Exception:  # noqa: BLE001 - a bad request must not stop the responder
            with contextlib.suppress(Exception):
                if not tx.final:
                    self.endpoint.respond(tx, 500, to_tag=to_tag)
            self._end(call)

    def _answer(self, call: _Call, offer: SessionDescription) -> bool:
        """Answer ``offer`` from the echo's address into ``call.local_sdp`` (RFC 3264 §6; any codec
        we know: the echo returns every payload as it came); False when its audio cannot be
        answered (none, or refused: no common codec, SRTP, the other IP family)."""
        try:
            session_id = call.local_sdp.origin.session_id if call.local_sdp is not None else None
            answer, session = audio_answer(offer, *call.media, session_id=session_id)
        except ValueError:  # no audio stream
            return False
        if session.rejected:
            return False
        call.local_sdp = versioned(answer, call.local_sdp)  # an unchanged answer keeps its version
        return True

    def _reinvite(self, call: _Call, event: RequestReceived) -> None:
        """A re-INVITE (RFC 3261 §14.2): its offer answered anew (488 and the session as it
        was when it cannot be), or our last SDP as the offer when it has none."""
        request, tx = event.request, event.transaction
        if not is_session_body(request):  # RFC 3261 §8.2.3; the session stays as it was
            self.endpoint.respond(tx, 415, headers=[SESSION_ACCEPT])
            return
        if request.body:
            try:
                offer = SessionDescription.parse(request.body)
            except SDPParseError:
                self.endpoint.respond(tx, 488)
                return
            if not self._answer(call, offer):  # call.local_sdp stays as it was
                self.endpoint.respond(tx, 488)
                return
        self.endpoint.respond(tx, 200, body=call.sdp, content_type="application/sdp",
                              contact=self.endpoint.contact(event.flow))

    def _end(self, call: _Call) -> None:
        if call.echo is not None and call.echo.transport is not None:
            call.echo.transport.close()
        call_id = call.invite.request.call_id or ""
        if self.calls.get(call_id) is call:
            del self.calls[call_id]

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(min(5.0, self.config.dialog_timeout))
            limit = time.monotonic() - self.config.dialog_timeout
            for call in list(self.calls.values()):
                if call.last_activity < limit:
                    self._end(call)

    def dialog_ids(self) -> list[DialogID]:
        """The dialogs up now."""
        return [c.dialog.id for c in self.calls.values() if c.dialog is not None]
