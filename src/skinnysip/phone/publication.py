"""The SIP phone's own presence, published (RFC 3903, as the event publication agent): PUBLISH
of a PIDF document (RFC 3863) for the phone's AOR to its presence server, kept alive by
refreshes that carry the entity-tag the server gave (``SIP-If-Match``, no body), modified
in place, and removed (``Expires: 0``) when the phone closes — what baresip's ``presence``
module does with ``pubint``.

A refresh the server no longer knows (412 Conditional Request Failed, §6) is published again
from scratch; one that fails otherwise is an :class:`~skinnysip.phone.api.ErrorEvent` and is
tried again after :data:`RETRY_INTERVAL` s. Every wait has a deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from typing import TYPE_CHECKING

from skinnysip.net.sip_endpoint import USER_AGENT, SIPTransportError
from skinnysip.phone.api import ErrorEvent, PhoneError
from skinnysip.sip.message import Response, SIPParseError
from skinnysip.sip.request import new_call_id, new_request

if TYPE_CHECKING:
    from skinnysip.phone.sip_phone import SIPPhone

#: Seconds a publication is asked for (RFC 3903 §4 leaves it to the EPA; baresip asks 600)
EXPIRES = 600
#: Seconds before a failed refresh is tried again
RETRY_INTERVAL = 30.0


class PresencePublication:
    """One publication of ``presence`` for the phone's AOR (RFC 3903 §4).

    ``etag``: the server's ``SIP-ETag`` for it (None: nothing published); ``body``: the PIDF
    last published; ``state``: ``"init"``, ``"published"``, ``"failed"`` (``reason`` says why)
    or ``"removed"``; ``expires``: the seconds the server granted."""

    EVENT = "presence"
    CONTENT_TYPE = "application/pidf+xml"

    def __init__(self, phone: SIPPhone, expires: int = EXPIRES) -> None:
        self.phone = phone
        self.expires = expires
        self.etag: str | None = None
        self.body = b""
        self.state = "init"
        self.reason = ""
        self._call_id = new_call_id()
        self._tag = secrets.token_hex(6)
        self._cseq = 0
        self._lock = asyncio.Lock()  # one PUBLISH at a time: each carries the last entity-tag

    async def publish(self, body: bytes) -> None:
        """Publish ``body`` (a PIDF document): a new publication, or a modification of ours
        (``SIP-If-Match``, §4.4). :class:`PhoneError` when the server refuses or does not
        answer."""
        async with self._lock:
            self.body = body
            response = await self._send(self.expires, body)
            if response.status_code == 412 and self.etag is not None:  # §6: it forgot ours: anew
                self.etag = None
                response = await self._send(self.expires, body)
            self._accepted(response)

    async def refresh(self) -> None:
        """Refresh the publication before it expires: ``SIP-If-Match`` without a body
        (§4.3); a server that forgot it (412) gets the body again. :class:`PhoneError` on
        a refusal."""
        async with self._lock:
            if self.etag is None:
                raise PhoneError("nothing published to refresh")
            response = await self._send(self.expires, None)
            if response.status_code == 412:
                self.etag = None
                response = await self._send(self.expires, self.body)
            self._accepted(response)

    async def remove(self, timeout: float = 3.0) -> None:
        """Remove the publication (``Expires: 0`` with its entity-tag, §4.5), bounded by
        ``timeout`` seconds; nothing when nothing is published."""
        if self.etag is None:
            return
        with contextlib.suppress(TimeoutError, PhoneError, SIPTransportError, SIPParseError, ValueError):
            async with asyncio.timeout(timeout), self._lock:
                await self._send(0, None)
        self.etag = None
        self.state = "removed"

    async def run(self) -> None:
        """Refresh at 80 % of the granted time (at least every 5 s apart), until cancelled;
        a failure is reported and tried again after :data:`RETRY_INTERVAL` s."""
        while True:
            await asyncio.sleep(max(5.0, self.expires * 0.8) if self.state == "published" else RETRY_INTERVAL)
            try:
                if self.etag is None:
                    await self.publish(self.body)
                else:
                    await self.refresh()
            except PhoneError as exc:
                self.phone.emit(ErrorEvent(f"PUBLISH {self.EVENT}: {exc.reason}"))

    async def _send(self, expires: int, body: bytes | None) -> Response:
        phone = self.phone
        aor = str(phone.aor)
        try:
            flow = await phone._flow_for(aor)
            self._cseq += 1
            headers = [("Event", self.EVENT), ("Expires", str(expires))]
            if self.etag is not None:
                headers.append(("SIP-If-Match", self.etag))
            request = new_request("PUBLISH", aor, from_=phone.identity(self._tag), to=phone.identity(), via=phone.endpoint.via(flow), call_id=self._call_id,
                                  cseq=self._cseq, route_set=phone._route_set(), user_agent=USER_AGENT,
                                  headers=headers, body=body or b"",
                                  content_type=self.CONTENT_TYPE if body is not None else None)
            outcome = await phone.endpoint.transact(request, flow, timeout=phone.account.timeout,
                                                    credentials=phone.credentials)
        except (SIPTransportError, SIPParseError, ValueError) as exc:
            self._failed(f"PUBLISH {self.EVENT}: {getattr(exc, 'reason', None) or exc}")
            raise PhoneError(self.reason) from None
        self._cseq = max(self._cseq, outcome.request.cseq[0])
        if outcome.response is None:
            self._failed(f"PUBLISH {self.EVENT}: {outcome.error}")
            raise PhoneError(self.reason)
        response = outcome.response
        if response.status_code == 423 and expires:  # §4.1 via RFC 3261 §10.2.8: ask Min-Expires
            minimum = (response.headers.get("Min-Expires") or "").strip()
            if minimum.isdigit() and expires < int(minimum) <= 86400:
                self.expires = int(minimum)
                return await self._send(self.expires, body)
        return response

    def _accepted(self, response: Response) -> None:
        if not 200 <= response.status_code < 300:
            self._failed(f"PUBLISH {self.EVENT} refused: {response.summary}")
            raise PhoneError(self.reason)
        etag = (response.headers.get("SIP-ETag") or "").strip()
        if not etag:  # §6: a 2xx to PUBLISH carries SIP-ETag; without one there is nothing to refresh
            self._failed(f"PUBLISH {self.EVENT}: the {response.summary} has no SIP-ETag")
            raise PhoneError(self.reason)
        self.etag = etag
        value = (response.headers.get("Expires") or "").strip()
        if value.isdigit() and 0 < int(value) <= self.expires:
            self.expires = int(value)
        self.state, self.reason = "published", ""

    def _failed(self, reason: str) -> None:
        self.state, self.reason = "failed", reason
