"""Sans-IO dialogs for both roles (RFC 3261 §12).

A :class:`Dialog` is created by the UAC from a 18x (early) or 2xx (confirmed) response
with a To tag (§12.1.2, :meth:`Dialog.uac`), or by the UAS when it sends such a response
(§12.1.1, :meth:`Dialog.uas`). It holds the dialog ID (Call-ID, local tag, remote tag),
the local and remote URIs, the remote target, the route set (Record-Route reversed for the
UAC, in order for the UAS), the local and remote CSeq numbers and the state (early,
confirmed, terminated). It builds in-dialog requests (§12.2.1.1, loose and strict routing),
the ACK for a 2xx (§13.2.2.4) and BYE (§15.1.1); it checks incoming in-dialog requests
(CSeq order: a lower number is answered 500, §12.2.2) and refreshes the remote target on
re-INVITE/UPDATE and their 2xx (§12.2, RFC 3311).

Several early dialogs from one INVITE (forking, §13.2.2.4) are simply several Dialog
objects with different remote tags; :func:`dialog_id` gives the key to tell them apart.
"""

from __future__ import annotations

import enum
import os
from collections.abc import Iterable
from dataclasses import dataclass, field

from skinnysip.sip.message import Request, Response, SIPParseError
from skinnysip.sip.request import apply_route_set, new_call_id, new_tag
from skinnysip.sip.uri import NameAddr

__all__ = ["Dialog", "DialogID", "DialogState", "dialog_id", "new_call_id", "new_tag"]

#: Methods that refresh the remote target (RFC 3261 §12.2, RFC 3311 §5.2, RFC 6665 §4.4.1).
TARGET_REFRESH = frozenset({"INVITE", "UPDATE", "SUBSCRIBE", "NOTIFY", "REFER"})


@dataclass(frozen=True)
class DialogID:
    """Call-ID, local tag, remote tag (RFC 3261 §12)."""

    call_id: str
    local_tag: str
    remote_tag: str


def dialog_id(message: Request | Response, *, local_is_from: bool) -> DialogID | None:
    """The dialog ID a message belongs to, seen from our side: ``local_is_from`` is true
    for responses to our requests and for requests we sent (our tag is in From); false for
    requests we receive (our tag is in To). None if a tag or the Call-ID is missing or
    malformed."""
    try:
        from_tag, to_tag = message.from_tag, message.to_tag
    except SIPParseError:
        return None
    call_id = message.call_id
    if not call_id or not from_tag or not to_tag:
        return None
    if local_is_from:
        return DialogID(call_id, from_tag, to_tag)
    return DialogID(call_id, to_tag, from_tag)


class DialogState(enum.Enum):
    """Dialog states (RFC 3261 §12)."""

    EARLY = "early"
    CONFIRMED = "confirmed"
    TERMINATED = "terminated"


def _contact_uri(message: Request | Response) -> str | None:
    contacts = message.headers.values("Contact")
    if not contacts:
        return None
    return str(NameAddr.parse(contacts[0]).uri)


def _checked_routes(values: Iterable[str]) -> list[str]:
    routes = list(values)
    for route in routes:
        NameAddr.parse(route)  # validate now, not when a request is built
    return routes


@dataclass
class Dialog:
    """One dialog, UAC or UAS side (RFC 3261 §12.1).

    ``local``/``remote``: the From/To header field values as this side writes them in its
    requests (with the tags); ``remote_target``: the URI of the peer's Contact;
    ``route_set``: Route values in the order our requests carry them; ``local_cseq``: the
    number of our last request in the dialog (None until we send one as UAS: starts random,
    §12.1.1); ``remote_cseq``: the number of the peer's last request (None: none yet);
    ``invite``: the INVITE that created it (UAC: for the ACK's credentials).
    """

    call_id: str
    local_tag: str
    remote_tag: str
    local: str
    remote: str
    remote_target: str
    route_set: list[str] = field(default_factory=list)
    local_cseq: int | None = 1
    remote_cseq: int | None = None
    state: DialogState = DialogState.CONFIRMED
    role: str = "uac"
    secure: bool = False
    invite: Request | None = None

    # -- creation ---------------------------------------------------------------------------
    @classmethod
    def uac(cls, request: Request, response: Response) -> Dialog:
        """The UAC's dialog from a 101-199 or 2xx ``response`` with a To tag to ``request``
        (RFC 3261 §12.1.2): route set = Record-Route reversed, remote target = Contact
        (the request URI if a 2xx lacks it), state early for 1xx, confirmed for 2xx.
        Raises :class:`SIPParseError` if the response has no To tag, the request no From
        tag, or a Contact/Record-Route is malformed; ``ValueError`` for other codes."""
        code = response.status_code
        if not (101 <= code < 300):
            raise ValueError("a dialog is created by a 101-199 or 2xx response")
        to_tag = response.to_tag
        from_tag = request.from_tag
        if not to_tag:
            raise SIPParseError(f"{code} response has no To tag")
        if not from_tag:
            raise SIPParseError(f"{request.method} has no From tag")
        target = _contact_uri(response) or request.uri
        return cls(
            call_id=request.call_id or "",
            local_tag=from_tag,
            remote_tag=to_tag,
            local=request.headers.get("From") or "",
            remote=response.headers.get("To") or "",
            remote_target=target,
            route_set=_checked_routes(reversed(response.headers.values("Record-Route"))),
            local_cseq=request.cseq[0],
            remote_cseq=None,
            state=DialogState.CONFIRMED if code >= 200 else DialogState.EARLY,
            role="uac",
            secure=request.uri.lower().startswith("sips:"),
            invite=request if request.method == "INVITE" else None,
        )

    @classmethod
    def from_2xx(cls, invite: Request, response: Response) -> Dialog:
        """The UAC dialog from a 2xx to ``invite`` (:meth:`uac`, limited to 2xx)."""
        if not (200 <= response.status_code < 300):
            raise ValueError("a dialog is created by a 2xx response")
        return cls.uac(invite, response)

    @classmethod
    def uas(cls, request: Request, local_tag: str, *, early: bool = False) -> Dialog:
        """The UAS's dialog for a dialog-creating ``request`` it answers with a To tag
        ``local_tag`` (RFC 3261 §12.1.1): route set = Record-Route in order, remote target
        = the request's Contact, remote CSeq = the request's, local CSeq unset (random at
        the first request we send). Raises :class:`SIPParseError` if the request lacks a
        From tag or Contact, or a Record-Route is malformed."""
        from_tag = request.from_tag
        if not from_tag:
            raise SIPParseError(f"{request.method} has no From tag")
        target = _contact_uri(request)
        if target is None:
            raise SIPParseError(f"{request.method} has no Contact")
        to = NameAddr.parse(request.headers.get("To") or "")
        if to.tag is None:
            to = NameAddr(to.display_name, to.uri, {**to.params, "tag": local_tag})
        return cls(
            call_id=request.call_id or "",
            local_tag=local_tag,
            remote_tag=from_tag,
            local=str(to),
            remote=request.headers.get("From") or "",
            remote_target=target,
            route_set=_checked_routes(request.headers.values("Record-Route")),
            local_cseq=None,
            remote_cseq=request.cseq[0],
            state=DialogState.EARLY if early else DialogState.CONFIRMED,
            role="uas",
            secure=request.uri.lower().startswith("sips:"),
        )

    @property
    def id(self) -> DialogID:
        """(Call-ID, local tag, remote tag)."""
        return DialogID(self.call_id, self.local_tag, self.remote_tag)

    # -- state ----------------------------------------------------------------------------
    def confirm(self, response: Response | None = None) -> None:
        """Early → confirmed. For the UAC, the 2xx ``response`` recomputes the route set
        and remote target (§12.1.2 / §13.2.2.4: the 2xx's values win)."""
        if response is not None and self.role == "uac":
            self.route_set = _checked_routes(reversed(response.headers.values("Record-Route")))
            target = _contact_uri(response)
            if target:
                self.remote_target = target
        if self.state is not DialogState.TERMINATED:
            self.state = DialogState.CONFIRMED

    def terminate(self) -> None:
        self.state = DialogState.TERMINATED

    def receive_request(self, request: Request) -> int | None:
        """Check an in-dialog request from the peer (RFC 3261 §12.2.2). Returns None when
        it is in order, else the status code to answer (500 for a CSeq lower than the last
        one). The ACK and CANCEL are not counted. A target-refresh request with a Contact
        updates the remote target."""
        if request.method in ("ACK", "CANCEL"):
            return None
        number = request.cseq[0]
        if self.remote_cseq is not None and number < self.remote_cseq:
            return 500
        self.remote_cseq = number
        if request.method in TARGET_REFRESH:
            target = _contact_uri(request)
            if target:
                self.remote_target = target
        return None

    def receive_response(self, request: Request, response: Response) -> None:
        """A response to our in-dialog ``request``: a 2xx to a target-refresh request
        updates the remote target (§12.2.1.2)."""
        if 200 <= response.status_code < 300 and request.method in TARGET_REFRESH:
            target = _contact_uri(response)
            if target:
                self.remote_target = target

    # -- requests ---------------------------------------------------------------------------
    def next_cseq(self) -> int:
        """Advance and return the local CSeq number (random start for a UAS, §12.1.1)."""
        if self.local_cseq is None:
            self.local_cseq = int.from_bytes(os.urandom(4), "big") % (2**31 - 1) + 1
        else:
            self.local_cseq += 1
        return self.local_cseq

    def request(self, method: str, via: str, *, cseq: int | None = None,
                headers: Iterable[tuple[str, str]] = (), body: bytes = b"",
                content_type: str | None = None, contact: NameAddr | None = None) -> Request:
        """An in-dialog request (RFC 3261 §12.2.1.1): Request-URI and Route from the remote
        target and route set (loose or strict routing), From/To from the dialog with the
        tags, the dialog's Call-ID, CSeq = ``cseq`` or the next local number. ``via``: the
        Via value with a new branch. Raises :class:`SIPParseError` for a malformed route."""
        uri, routes = apply_route_set(self.remote_target, self.route_set)
        number = cseq if cseq is not None else self.next_cseq()
        request = Request(method, uri)
        h = request.headers
        h.add("Via", via)
        for route in routes:
            h.add("Route", route)
        h.add("Max-Forwards", "70")
        h.add("From", self.local)
        h.add("To", self.remote)
        h.add("Call-ID", self.call_id)
        h.add("CSeq", f"{number} {method}")
        if contact is not None:
            h.add("Contact", str(contact))
        for name, value in headers:
            h.add(name, value)
        if body:
            request.body = body
            if content_type:
                h.add("Content-Type", content_type)
        return request

    def ack(self, via: str, invite: Request | None = None) -> Request:
        """The ACK for a 2xx (RFC 3261 §13.2.2.4): the INVITE's CSeq number, method ACK,
        a new ``via`` (the ACK for a 2xx is transaction-less), the INVITE's
        Authorization/Proxy-Authorization (§22.1), no body."""
        invite = invite or self.invite
        number = invite.cseq[0] if invite is not None else (self.local_cseq or 1)
        request = self.request("ACK", via, cseq=number)
        if invite is not None:
            for name in ("Authorization", "Proxy-Authorization"):
                for value in invite.headers.get_all(name):
                    request.headers.add(name, value)
        return request

    def bye(self, via: str, user_agent: str | None = None) -> Request:
        """A BYE in this dialog (RFC 3261 §15.1.1) with the next local CSeq."""
        return self.request("BYE", via, headers=[("User-Agent", user_agent)] if user_agent else ())
