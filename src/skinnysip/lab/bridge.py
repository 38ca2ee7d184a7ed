"""The lab's SCCP ⇄ SIP bridge: SCCP stations of the lab call manager call SIP users and are
called by them, signalling only — the media flows station ⇄ SIP phone directly.

:class:`SCCPBridge` is the :class:`~skinnysip.lab.callmanager.CallBridge` of a
:class:`~skinnysip.lab.callmanager.LabCallManager` and a SIP user agent on the core
(:class:`~skinnysip.net.sip_endpoint.SIPEndpoint`, :class:`~skinnysip.sip.dialog.Dialog`, RFC 3264
offer/answer of :mod:`skinnysip.sdp`), listening on UDP:

* **SCCP → SIP**: the CM hands over a number that is none of its own; the station's receive
  channel is opened first (OpenReceiveChannel/Ack, reference §3.18), then the bridge sends an
  INVITE to the lab proxy (From: the station's line number @ the lab domain; Request-URI
  ``sip:<number>@<domain>``) whose SDP offer names the station's RTP address and its codec
  (G.711 µ-law → PCMU 0, A-law → PCMA 8; RFC 3551). 180/183 give the station RingOut and the
  alerting tone; the 2xx is ACKed (RFC 3261 §13.2.2.4) and the station gets Connected and
  StartMediaTransmission to the answer's RTP address; a failure gives busy (486, 600) or
  reorder. The station hanging up sends CANCEL (once a provisional came, §9.1) or BYE.
* **SIP → SCCP**: an INVITE to a line number (``2001``) rings that line's device (404: no such
  line, 480: its device is not registered, 486: busy, 488: no G.711 codec offered that the
  station can do); 180 while it rings; when the station answers, its receive channel is opened
  and the 200's SDP answer names the station's RTP address, and the station sends to the
  offer's address. CANCEL or BYE from the SIP side puts the station on-hook; the station
  refusing gives 603 (480 when its device went away).
* mid-call: a re-INVITE from the SIP side is answered with the station's address and moves
  or stops (hold) the station's transmission; the station's Hold sends a re-INVITE with
  ``sendonly`` (the lab proxy then plays music on hold to the SIP party), its Resume (a reopened
  receive channel) one with ``sendrecv`` and its new address; its keypad digits go as SIP INFO
  ``application/dtmf-relay``.

Every call keeps its SIP exchange on record (:meth:`SCCPBridge.calls`; bounded). Python units:
seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections import deque
from typing import Any

from skinnysip.lab.callmanager import CallLeg, LabCallManager
from skinnysip.lab.tasks import TaskOwner
from skinnysip.net.sip_endpoint import USER_AGENT, ClientHandle, SIPEndpoint, SIPTransportError
from skinnysip.net.trace import to_wire_messages
from skinnysip.rtp.dtmf import dtmf_relay_body
from skinnysip.rtp.g711 import PT_PCMA, PT_PCMU
from skinnysip.sccp import enums
from skinnysip.sdp import (
    AudioSession,
    SDPParseError,
    SessionDescription,
    audio_answer,
    audio_offer_for,
    negotiate,
    versioned,
)
from skinnysip.sip.dialog import Dialog, dialog_id
from skinnysip.sip.message import Request, Response, SIPParseError
from skinnysip.sip.request import build_cancel, new_call_id, new_request, new_tag, warning_field
from skinnysip.sip.server_transaction import InviteServerTransaction, ServerTransaction
from skinnysip.sip.transaction import Flow
from skinnysip.sip.transactions import (
    AckReceived,
    CancelReceived,
    LayerEvent,
    RequestReceived,
    ResponseReceived,
    SuccessRetransmission,
    TimedOut,
)
from skinnysip.sip.uas import SESSION_ACCEPT, is_session_body
from skinnysip.sip.uri import NameAddr, SipURI

__all__ = ["SCCPBridge", "MAX_BRIDGED_CALLS", "RING_SECONDS"]

log = logging.getLogger(__name__)

ALLOW = "INVITE, ACK, CANCEL, BYE, OPTIONS, INFO"
#: bridged calls at once (more INVITEs get 486 / the station reorder tone)
MAX_BRIDGED_CALLS = 64
#: how long an INVITE may ring unanswered (seconds), then it is cancelled
RING_SECONDS = 120.0
#: how long the station may take to open its receive channel (seconds)
MEDIA_SECONDS = 10.0
#: finished calls kept for :meth:`SCCPBridge.calls`, and SIP messages kept per call
MAX_KEPT_CALLS = 200
MAX_CALL_MESSAGES = 500
#: seconds a request in a dialog (BYE, CANCEL, re-INVITE) may take
REQUEST_SECONDS = 32.0
#: the duration a keypad digit is given in its INFO (ms; SCCP's KeypadButton has none)
DTMF_MS = 160

#: SCCP media payload (reference §4.5) ⇄ RTP payload type (RFC 3551)
_PAYLOAD_TYPES = {enums.MEDIA_PAYLOAD_G711_ULAW_64K: PT_PCMU, enums.MEDIA_PAYLOAD_G711_ALAW_64K: PT_PCMA}
_COMPRESSION = {pt: ct for ct, pt in _PAYLOAD_TYPES.items()}


class _BridgedCall:
    """One bridged call: the station's leg and the SIP dialog."""

    def __init__(self, outgoing: bool, number: str, call_id: str) -> None:
        self.outgoing = outgoing  # True: SCCP → SIP (we sent the INVITE)
        self.number = number  # the number dialled (out) or the line called (in)
        self.call_id = call_id
        self.leg: CallLeg | None = None
        self.remote = ""  # the SIP party's URI
        self.state = "calling"  # calling, early, answered, confirmed, ending (our BYE), ended
        self.reason = ""
        self.invite: Request | None = None
        self.invite_tx: InviteServerTransaction | None = None
        self.handle: ClientHandle | None = None
        self.flow: Flow | None = None
        self.dialog: Dialog | None = None
        self.ack: Request | None = None
        self.to_tag = new_tag()
        self.offer: SessionDescription | None = None  # ours (out) / theirs (in)
        self.audio: AudioSession | None = None
        self.station: tuple[str, int] | None = None  # the station RTP address the SIP side knows
        self.session_id = random.getrandbits(48)
        self.local_sdp: SessionDescription | None = None  # the SDP we sent last (offer or answer)
        self.provisional = False  # a provisional response came (CANCEL allowed, §9.1)
        self.hung_up = False  # the station ended it
        self.held = False  # the station holds it (our last offer was sendonly)
        self.messages: list[dict[str, Any]] | None = None


def _payload_type(leg: CallLeg) -> int:
    return _PAYLOAD_TYPES.get(leg.compression_type, PT_PCMU)


def _user(value: str | None) -> tuple[str, str]:
    """(user, display name) of a From header field value ('' when absent)."""
    try:
        addr = NameAddr.parse(value or "")
    except SIPParseError:
        return "", ""
    user = addr.uri.user if isinstance(addr.uri, SipURI) else ""
    return user or "", addr.display_name or ""


class SCCPBridge(TaskOwner):
    """The SCCP ⇄ SIP bridge (see the module docstring).

    ``callmanager``: the lab CM (this bridge becomes its ``bridge``). ``proxy``: the lab proxy's
    (IP literal, port) — our INVITEs go there over UDP, from our own listening address, which
    the proxy trusts (no challenge). ``domain``: the lab's SIP domain. ``host``: the IP
    literal to listen on (a free UDP port).
    """

    def __init__(self, *, callmanager: LabCallManager, proxy: tuple[str, int], domain: str,
                 host: str = "127.0.0.1") -> None:
        self.cm = callmanager
        self.proxy = proxy
        self.domain = domain
        self.host = host
        self.endpoint = SIPEndpoint()
        self.address: tuple[str, int] | None = None
        self.flow: Flow | None = None
        self._calls: dict[str, _BridgedCall] = {}  # live calls by Call-ID
        self._finished: deque[_BridgedCall] = deque(maxlen=MAX_KEPT_CALLS)
        self._tasks: set[asyncio.Task[Any]] = set()
        self._remove_handler: Any = None
        callmanager.bridge = self

    # -- life ------------------------------------------------------------------------------
    async def start(self) -> tuple[str, int]:
        """Listen on UDP (``host``, a free port) and open the flow to the proxy; returns our
        (IP, port). ``OSError`` when the socket cannot be bound."""
        self.endpoint.start()
        self._remove_handler = self.endpoint.add_handler(self._on_event)
        try:
            self.address = await self.endpoint.listen("udp", self.host, 0)
            targets = await self.endpoint.resolve(self.proxy[0], port=self.proxy[1], transport="udp")
            self.flow = await self.endpoint.flow_to(targets[0])
        except SIPTransportError as exc:
            await self.endpoint.close()
            raise OSError(exc.reason) from exc
        return self.address

    async def close(self) -> None:
        """End every bridged call (both sides), stop listening (idempotent)."""
        for call in list(self._calls.values()):
            if call.leg is not None and call.leg.state != "ended":
                call.leg.bridge_done = True
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(self.cm.end_call(call.leg), 5)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._end_sip(call, 503), 5)
        if self.cm.bridge is self:
            self.cm.bridge = None
        for task in list(self._tasks):
            task.cancel()
        if self._remove_handler is not None:
            self._remove_handler()
        await self.endpoint.close()

    # -- record ----------------------------------------------------------------------------
    def calls(self) -> list[dict[str, Any]]:
        """The last :data:`MAX_KEPT_CALLS` finished calls and the live ones, oldest first:
        ``{"callId", "from", "to", "service": "bridge", "direction": "sccp-to-sip" |
        "sip-to-sccp", "device", "state", "reason", "messages": [WireMessage.to_api()…]}``."""
        out = []
        for call in (*self._finished, *self._calls.values()):
            messages = call.messages if call.messages is not None else self._messages(call)
            leg = call.leg
            local = f"sip:{leg.number}@{self.domain}" if leg is not None else ""
            out.append({"callId": call.call_id, "from": local if call.outgoing else call.remote,
                        "to": call.remote if call.outgoing else local, "service": "bridge",
                        "direction": "sccp-to-sip" if call.outgoing else "sip-to-sccp",
                        "device": leg.device_name if leg is not None else "", "state": call.state,
                        "reason": call.reason, "messages": messages})
        return out

    def _messages(self, call: _BridgedCall) -> list[dict[str, Any]]:
        records = (r for r in self.endpoint.trace if r.call_id == call.call_id)
        return [m.to_api() for m in to_wire_messages(records)[:MAX_CALL_MESSAGES]]

    def _finish(self, call: _BridgedCall, reason: str) -> None:
        if call.state == "ended":
            return
        call.state, call.reason = "ended", call.reason or reason
        call.messages = self._messages(call)
        if self._calls.pop(call.call_id, None) is not None:
            self._finished.append(call)

    def _by_leg(self, leg: CallLeg) -> _BridgedCall | None:
        return next((c for c in self._calls.values() if c.leg is leg), None)

    # -- the CM's hooks (CallBridge) -------------------------------------------------------
    async def place(self, leg: CallLeg, number: str) -> None:
        """The station of ``leg`` dialled ``number``: the INVITE goes once its receive channel
        is open (:meth:`media_ready`)."""
        if len(self._calls) >= MAX_BRIDGED_CALLS or self.flow is None:
            await self.cm.bridge_failed(leg, 503)
            return
        call = _BridgedCall(True, number, new_call_id())
        call.leg = leg
        call.remote = f"sip:{number}@{self.domain}"
        self._calls[call.call_id] = call
        if leg.rtp_addr is not None:
            self._spawn(self._invite(call))
        else:
            self._spawn(self._media_watchdog(call))

    async def _media_watchdog(self, call: _BridgedCall) -> None:
        await asyncio.sleep(MEDIA_SECONDS)
        if call.state == "calling" and call.invite is None and call.leg is not None:
            self._finish(call, "the station opened no receive channel")
            await self.cm.bridge_failed(call.leg, 500)

    async def media_ready(self, leg: CallLeg) -> None:
        """The station's RTP address is known (or changed)."""
        call = self._by_leg(leg)
        if call is None or leg.rtp_addr is None:
            return
        if call.outgoing and call.invite is None:
            self._spawn(self._invite(call))
        elif not call.outgoing and call.state in ("calling", "early"):
            await self._answer(call)
        elif call.state == "confirmed":
            if leg.rtp_addr != call.station or call.held:
                call.held = False
                self._spawn(self._reinvite(call))
            elif call.audio is not None:
                await self.cm.bridge_media(leg, self._send_to(call.audio))

    async def ended(self, leg: CallLeg) -> None:
        """The station ended or refused its side: end the SIP side."""
        call = self._by_leg(leg)
        if call is None:
            return
        call.hung_up = True
        refusal = 480 if leg.session.closing else 603
        await self._end_sip(call, refusal)

    async def held(self, leg: CallLeg) -> None:
        """The station holds the call: a re-INVITE with ``sendonly`` (RFC 3264 §8.4) — the lab
        proxy then plays its music on hold to the SIP party."""
        call = self._by_leg(leg)
        if call is not None and call.state == "confirmed" and not call.held:
            call.held = True
            self._spawn(self._reinvite(call, "sendonly"))

    async def dtmf(self, leg: CallLeg, digit: str) -> None:
        """A keypad digit of the station during the call: SIP INFO ``application/dtmf-relay``
        (the station's RTP carries no RFC 4733 events here)."""
        call = self._by_leg(leg)
        if call is None or call.state != "confirmed" or call.dialog is None or call.flow is None:
            return
        request = call.dialog.request("INFO", self.endpoint.via(call.flow), body=dtmf_relay_body(digit, DTMF_MS),
                                      content_type="application/dtmf-relay", headers=[("User-Agent", USER_AGENT)])
        self._spawn(self.endpoint.transact(request, call.flow, timeout=REQUEST_SECONDS))

    async def _end_sip(self, call: _BridgedCall, refusal: int) -> None:
        """End the SIP side: BYE in a dialog, CANCEL for our ringing INVITE (after a
        provisional, §9.1; else when one comes), ``refusal`` for an INVITE we have not answered."""
        flow = call.flow
        if call.state in ("answered", "confirmed") and call.dialog is not None and flow is not None:
            request = call.dialog.bye(self.endpoint.via(flow), USER_AGENT)
            call.state = "ending"
            await self.endpoint.transact(request, flow, timeout=REQUEST_SECONDS)
            self._finish(call, "BYE sent")
        elif call.outgoing and call.invite is not None and flow is not None:
            if call.provisional:
                await self._cancel(call)
            # else: the INVITE loop cancels on the first provisional, or BYEs a 2xx
        elif not call.outgoing and call.invite_tx is not None and not call.invite_tx.final:
            with contextlib.suppress(ValueError, SIPParseError):
                self.endpoint.respond(call.invite_tx, refusal, to_tag=call.to_tag)
            self._finish(call, f"refused {refusal}")
        else:
            self._finish(call, "ended by the station")

    async def _cancel(self, call: _BridgedCall) -> None:
        if call.invite is None or call.flow is None:
            return
        with contextlib.suppress(SIPParseError, SIPTransportError):
            await self.endpoint.transact(build_cancel(call.invite), call.flow, timeout=REQUEST_SECONDS)

    # -- SCCP → SIP -----------------------------------------------------------------------
    def _sdp(self, call: _BridgedCall, direction: str = "sendrecv") -> SessionDescription:
        """Our offer: the station's RTP address (the last one while it holds) and codec (no
        telephone-event: the station's digits go as SIP INFO)."""
        leg = call.leg
        assert leg is not None
        address = leg.rtp_addr or call.station
        assert address is not None
        call.station = address
        offer = audio_offer_for(address[0], address[1], codecs=(_payload_type(leg),), telephone_event=None,
                                session_id=call.session_id, version=1, direction=direction)
        offer = versioned(offer, call.local_sdp)  # after our first SDP: its version, + 1 if changed (RFC 3264 §8)
        call.offer = call.local_sdp = offer
        return offer

    async def _invite(self, call: _BridgedCall) -> None:
        leg, flow = call.leg, self.flow
        assert leg is not None and flow is not None
        if leg.state == "ended" or call.invite is not None:
            return
        call.flow = flow
        offer = self._sdp(call)
        local = NameAddr(None, SipURI("sip", leg.number, None, self.domain, None), {"tag": new_tag()})
        request = new_request(
            "INVITE", call.remote, from_=local, to=NameAddr(None, SipURI.parse(call.remote)),
            via=self.endpoint.via(flow), call_id=call.call_id, contact=self.endpoint.contact(flow, leg.number),
            user_agent=USER_AGENT, headers=[("Allow", ALLOW)], body=offer.to_bytes(), content_type="application/sdp")
        call.invite = request
        try:
            handle = self.endpoint.send_request(request, flow)
        except SIPTransportError as exc:
            self._finish(call, exc.reason)
            await self.cm.bridge_failed(leg, 503)
            return
        assert handle is not None
        call.handle = handle
        deadline = handle.started + RING_SECONDS
        while True:
            event = await handle.next_event(deadline)
            if event is None:  # rang too long: CANCEL, the 487 ends it
                if call.provisional:
                    await self._cancel(call)
                self._finish(call, "no answer")
                await self.cm.bridge_failed(leg, 408)
                return
            if isinstance(event, ResponseReceived):
                response = event.response
                code = response.status_code
                if code < 200:
                    if code > 100:
                        call.provisional = True
                        if call.hung_up:
                            await self._cancel(call)
                        elif code in (180, 183):
                            call.state = "early"
                            await self.cm.bridge_alerting(leg)
                    continue
                if code < 300:
                    await self._answered(call, request, response, handle)
                    return
                self._finish(call, response.summary)
                if not call.hung_up:
                    await self.cm.bridge_failed(leg, code)
                return
            self._finish(call, getattr(event, "reason", "") or "timeout")
            if not call.hung_up:
                await self.cm.bridge_failed(leg, 408 if isinstance(event, TimedOut) else 503)
            return

    async def _answered(self, call: _BridgedCall, request: Request, response: Response, handle: ClientHandle) -> None:
        """A 2xx to our INVITE: ACK it (and its retransmissions, RFC 6026), connect the station
        to the answer's RTP address; BYE at once if the station hung up meanwhile."""
        leg, flow = call.leg, call.flow
        assert leg is not None and flow is not None
        try:
            dialog = Dialog.from_2xx(request, response)
        except SIPParseError as exc:
            self._finish(call, f"unusable {response.summary}: {exc.reason}")
            await self.cm.bridge_failed(leg, 502)
            return
        if call.dialog is not None:  # a second 2xx (another fork): ACK and BYE it
            self.endpoint.send_stateless(dialog.ack(self.endpoint.via(flow), request), flow)
            self.endpoint.send_request(dialog.bye(self.endpoint.via(flow), USER_AGENT), flow)
            return
        call.dialog = dialog
        call.ack = dialog.ack(self.endpoint.via(flow), request)
        self.endpoint.send_stateless(call.ack, flow)

        def again(event: Any) -> None:
            if isinstance(event, ResponseReceived) and 200 <= event.response.status_code < 300:
                if event.response.to_tag == dialog.remote_tag and call.ack is not None:
                    with contextlib.suppress(SIPTransportError):
                        self.endpoint.send_stateless(call.ack, flow, "re-ACK")
                else:
                    self._spawn(self._answered(call, request, event.response, handle))

        handle.set_listener(again)
        call.state = "confirmed"
        if call.hung_up:
            await self._end_sip(call, 487)
            return
        try:
            assert call.offer is not None
            call.audio = negotiate(call.offer, SessionDescription.parse(response.body))
            compression = _COMPRESSION[call.audio.payload_type]
        except (SDPParseError, ValueError, KeyError) as exc:
            await self._end_sip(call, 488)
            await self.cm.bridge_failed(leg, 488)
            call.reason = f"bad SDP answer: {exc}"
            return
        await self.cm.bridge_answered(leg, self._send_to(call.audio), compression)

    @staticmethod
    def _send_to(audio: AudioSession) -> tuple[str, int] | None:
        """Where the station sends: the far end's address, unless the direction says we do not
        send (the far end holds us: RFC 3264 §8.4)."""
        return audio.remote if audio.direction in ("sendrecv", "sendonly") else None

    async def _reinvite(self, call: _BridgedCall, direction: str = "sendrecv") -> None:
        """A new offer in a re-INVITE (RFC 3264 §8): the station's new RTP address after its
        receive channel was reopened (its Resume), or ``sendonly`` when it holds; with
        ``sendrecv`` the station is pointed at the answer's address."""
        leg, flow, dialog = call.leg, call.flow, call.dialog
        if leg is None or flow is None or dialog is None or (leg.rtp_addr or call.station) is None:
            return
        offer = self._sdp(call, direction)
        request = dialog.request("INVITE", self.endpoint.via(flow), body=offer.to_bytes(),
                                 content_type="application/sdp", contact=self.endpoint.contact(flow, leg.number),
                                 headers=[("User-Agent", USER_AGENT)])
        try:
            handle = self.endpoint.send_request(request, flow)
        except SIPTransportError:
            return
        assert handle is not None
        deadline = handle.started + REQUEST_SECONDS
        while (event := await handle.next_event(deadline)) is not None:
            if not isinstance(event, ResponseReceived):
                return
            if event.response.status_code < 200:
                continue
            if event.response.status_code < 300:
                self.endpoint.send_stateless(dialog.ack(self.endpoint.via(flow), request), flow)
                with contextlib.suppress(SDPParseError, ValueError):
                    call.audio = negotiate(offer, SessionDescription.parse(event.response.body))
                    if direction == "sendrecv":
                        await self.cm.bridge_media(leg, self._send_to(call.audio))
            return

    # -- SIP → SCCP -----------------------------------------------------------------------
    def _on_event(self, event: LayerEvent) -> bool:
        if isinstance(event, CancelReceived):
            call = next((c for c in self._calls.values() if c.invite_tx is event.invite), None)
            if call is None:
                return False
            self.endpoint.respond(event.transaction, 200)
            if not event.invite.final:
                self.endpoint.respond(event.invite, 487, to_tag=call.to_tag)
            self._finish(call, "cancelled by the caller")
            if call.leg is not None:
                self._spawn(self.cm.bridge_ended(call.leg))
            return True
        if isinstance(event, AckReceived):
            call = self._in_dialog(event.request)
            if call is not None and call.state == "answered":
                call.state = "confirmed"
            return call is not None
        if isinstance(event, SuccessRetransmission):
            call = self._calls.get(event.response.call_id or "")
            if call is not None and call.ack is not None:
                with contextlib.suppress(SIPTransportError):
                    self.endpoint.send_stateless(call.ack, event.flow, "re-ACK")
                return True
            return False
        if isinstance(event, TimedOut) and isinstance(event.transaction, InviteServerTransaction):
            call = next((c for c in self._calls.values() if c.invite_tx is event.transaction), None)
            if call is not None and call.state == "answered" and event.timer in ("L", "H"):
                call.reason = "no ACK for our 200 (RFC 3261 §13.3.1.4)"
                self._spawn(self._no_ack(call))
            return call is not None
        if not isinstance(event, RequestReceived):
            return False
        request = event.request
        if request.to_tag is None:
            if request.method != "INVITE":
                return False  # OPTIONS and the rest: the endpoint's UAS core
            self._spawn(self._incoming(event))
            return True
        call = self._in_dialog(request)
        if call is None or call.dialog is None:
            return False  # 481
        refusal = call.dialog.receive_request(request)
        if refusal is not None:
            self.endpoint.respond(event.transaction, refusal)
            return True
        self._spawn(self._dialog_request(call, event.transaction, request))
        return True

    def _in_dialog(self, request: Request) -> _BridgedCall | None:
        did = dialog_id(request, local_is_from=False)
        return next((c for c in self._calls.values() if c.dialog is not None and c.dialog.id == did), None)

    async def _no_ack(self, call: _BridgedCall) -> None:
        await self._end_sip(call, 408)
        if call.leg is not None:
            await self.cm.bridge_ended(call.leg)

    async def _incoming(self, event: RequestReceived) -> None:
        request, tx = event.request, event.transaction
        assert isinstance(tx, InviteServerTransaction)
        call = _BridgedCall(False, "", request.call_id or new_call_id())
        call.invite, call.invite_tx, call.flow = request, tx, event.flow
        if not is_session_body(request):  # RFC 3261 §8.2.3
            self.endpoint.respond(tx, 415, to_tag=call.to_tag, headers=[SESSION_ACCEPT])
            return
        try:
            call.number = SipURI.parse(request.uri).user or ""
            call.offer = SessionDescription.parse(request.body) if request.body else None
        except (SIPParseError, SDPParseError):
            self.endpoint.respond(tx, 400, to_tag=call.to_tag)
            return
        if call.offer is None:  # an offerless INVITE would need our offer in the 200: not done here
            self.endpoint.respond(tx, 488, to_tag=call.to_tag)
            return
        if len(self._calls) >= MAX_BRIDGED_CALLS or call.call_id in self._calls:
            self.endpoint.respond(tx, 486, to_tag=call.to_tag)
            return
        audio = next((m for m in call.offer.media if m.media == "audio" and m.port), None)
        rtpmaps = audio.rtpmaps() if audio is not None else {}
        offered = [_COMPRESSION[pt] for pt in (audio.payload_types if audio is not None else [])
                   if pt in _COMPRESSION and (pt not in rtpmaps or rtpmaps[pt].encoding.upper() in ("PCMU", "PCMA"))]
        calling, name = _user(request.headers.get("From"))
        call.remote = str(NameAddr.parse(request.headers.get("From") or "").uri) if calling else ""
        self._calls[call.call_id] = call
        result = await self.cm.bridge_ring(call.number, calling, name, offered)
        if isinstance(result, int):
            if not tx.final:
                self.endpoint.respond(tx, result, to_tag=call.to_tag)
            self._finish(call, f"refused {result}")
            return
        call.leg = result
        if call.state == "ended" or tx.final:  # cancelled while we rang the station
            result.bridge_done = True
            await self.cm.end_call(result)
            return
        call.dialog = Dialog.uas(request, call.to_tag, early=True)
        call.state = "early"
        self._respond(call, 180)

    def _respond(self, call: _BridgedCall, code: int, body: bytes = b"",
                 warning: tuple[str, str] | None = None) -> None:
        assert call.invite_tx is not None and call.flow is not None
        contact = self.endpoint.contact(call.flow, call.number or None)
        with contextlib.suppress(ValueError, SIPParseError, SIPTransportError):
            self.endpoint.respond(call.invite_tx, code, to_tag=call.to_tag, body=body, contact=contact,
                                  content_type="application/sdp" if body else None,
                                  headers=[("Allow", ALLOW), *([warning] if warning else [])])

    async def _answer(self, call: _BridgedCall) -> None:
        """The station answered and its receive channel is open: 200 with its address, and the
        station sends to the offer's address."""
        leg = call.leg
        assert leg is not None and leg.rtp_addr is not None and call.offer is not None
        try:
            answer, audio = audio_answer(call.offer, leg.rtp_addr[0], leg.rtp_addr[1],
                                         codecs=(_payload_type(leg),), session_id=call.session_id)
        except ValueError:
            answer, audio = None, None
        if answer is None or audio is None or audio.rejected:
            refusal = (audio.refusal if audio else None) or "no common codec"
            self._respond(call, 488, warning=warning_field(refusal, audio.refusal_code if audio else None))
            self._finish(call, f"488 {refusal}")
            leg.bridge_done = True
            await self.cm.end_call(leg)
            return
        call.audio, call.station, call.local_sdp = audio, leg.rtp_addr, answer
        self._respond(call, 200, answer.to_bytes())
        if call.dialog is not None:
            call.dialog.confirm()
        call.state = "answered"
        await self.cm.bridge_media(leg, self._send_to(audio))

    async def _dialog_request(self, call: _BridgedCall, tx: ServerTransaction, request: Request) -> None:
        if request.method == "BYE":
            self.endpoint.respond(tx, 200)
            self._finish(call, "BYE received")
            if call.leg is not None:
                await self.cm.bridge_ended(call.leg)
        elif request.method in ("INVITE", "UPDATE") and request.body:
            await self._remote_offer(call, tx, request)
        elif request.method in ("INVITE", "UPDATE", "INFO", "OPTIONS"):
            self.endpoint.respond(tx, 200)
        else:
            self.endpoint.respond(tx, 405, headers=[("Allow", ALLOW)])

    async def _remote_offer(self, call: _BridgedCall, tx: ServerTransaction, request: Request) -> None:
        """The SIP side's new offer (hold, resume, a new address; RFC 3264 §8): answered with
        the station's address; the station's transmission follows the answer."""
        if not is_session_body(request):  # RFC 3261 §8.2.3; the session stays as it was
            self.endpoint.respond(tx, 415, headers=[SESSION_ACCEPT])
            return
        leg = call.leg
        if leg is None or leg.rtp_addr is None:
            self.endpoint.respond(tx, 488)
            return
        try:
            offer = SessionDescription.parse(request.body)
            answer, audio = audio_answer(offer, leg.rtp_addr[0], leg.rtp_addr[1], codecs=(_payload_type(leg),),
                                         session_id=call.session_id)
        except (SDPParseError, ValueError):
            self.endpoint.respond(tx, 488)
            return
        if audio.rejected:
            self.endpoint.respond(tx, 488)
            return
        answer = versioned(answer, call.local_sdp)  # unchanged (a keep-alive re-INVITE): the same version
        call.local_sdp = answer
        call.audio = audio
        contact = self.endpoint.contact(tx.flow, leg.number) if tx.flow is not None else None
        self.endpoint.respond(tx, 200, body=answer.to_bytes(), content_type="application/sdp", contact=contact)
        await self.cm.bridge_media(leg, self._send_to(audio))
