"""Sans-IO UAC dialog state: what a 2xx to an INVITE establishes, and the in-dialog
requests built from it (RFC 3261 §12.1.2, §12.2.1.1, §13.2.2.4).

Only what a client needs to end a call it placed: the ACK for a 2xx (a new transaction-less
request with a new branch, sent to the remote target through the route set) and the BYE.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field

from skinnysip.sip.message import Headers, Request, Response, SIPParseError
from skinnysip.sip.uri import NameAddr, SipURI

__all__ = ["Dialog", "new_call_id", "new_tag"]


def new_tag() -> str:
    """A From/To tag: 64 random bits, hex (RFC 3261 §19.3 asks for at least 32)."""
    return secrets.token_hex(8)


def new_call_id() -> str:
    """A Call-ID: 128 random bits, hex, no host part (RFC 3261 §8.1.1.4 allows that, and a
    host part would reveal the local address for no gain)."""
    return secrets.token_hex(16)

# URI parameters that may not appear in a Request-URI (RFC 3261 §19.1.1, Table 1).
_NOT_IN_REQUEST_URI = ("method",)


@dataclass
class Dialog:
    """A dialog as seen by the UAC (RFC 3261 §12.1.2).

    ``local`` is the From header field value we sent (with our tag), ``remote`` the To
    value of the 2xx (with the remote tag), ``remote_target`` the URI of the 2xx's Contact,
    ``route_set`` the 2xx's Record-Route values in reverse order, ``local_cseq`` the CSeq
    number of the INVITE (the next request uses +1), ``invite`` the INVITE that created it.
    """

    call_id: str
    local: str
    remote: str
    local_tag: str
    remote_tag: str
    remote_target: str
    route_set: list[str] = field(default_factory=list)
    local_cseq: int = 1
    invite: Request | None = None

    @classmethod
    def from_2xx(cls, invite: Request, response: Response) -> Dialog:
        """Build the UAC dialog from the INVITE and its 2xx (RFC 3261 §12.1.2).

        A 2xx without Contact (a protocol violation) falls back to the INVITE's
        Request-URI as remote target. Raises :class:`SIPParseError` if the response has no
        To tag or the INVITE lacks From/Call-ID/CSeq, or a Contact/Record-Route is malformed.
        """
        if not (200 <= response.status_code < 300):
            raise ValueError("a dialog is created by a 2xx response")
        to_tag = response.to_tag
        from_tag = invite.from_tag
        if not to_tag:
            raise SIPParseError("2xx response has no To tag")
        if not from_tag:
            raise SIPParseError("INVITE has no From tag")
        contacts = response.headers.values("Contact")
        if contacts:
            target = str(NameAddr.parse(contacts[0]).uri)
        else:
            target = invite.uri
        routes = list(reversed(response.headers.values("Record-Route")))
        for route in routes:
            NameAddr.parse(route)  # validate now, not when the BYE is built
        return cls(
            call_id=invite.call_id or "",
            local=invite.headers.get("From") or "",
            remote=response.headers.get("To") or "",
            local_tag=from_tag,
            remote_tag=to_tag,
            remote_target=target,
            route_set=routes,
            local_cseq=invite.cseq[0],
            invite=invite,
        )

    def _request_uri_and_routes(self) -> tuple[str, list[str]]:
        """RFC 3261 §12.2.1.1: loose routing (first route has ``lr``) keeps the remote
        target as Request-URI; strict routing puts the first route there instead and the
        remote target at the end of the Route set."""
        if not self.route_set:
            return self.remote_target, []
        first = NameAddr.parse(self.route_set[0])
        uri = first.uri
        if isinstance(uri, SipURI) and "lr" in uri.params:
            return self.remote_target, list(self.route_set)
        if isinstance(uri, SipURI):
            for name in _NOT_IN_REQUEST_URI:
                uri.params.pop(name, None)
        return str(uri), [*self.route_set[1:], f"<{self.remote_target}>"]

    def _base(self, method: str, via: str, cseq: int) -> Request:
        uri, routes = self._request_uri_and_routes()
        headers = Headers()
        headers.add("Via", via)
        for route in routes:
            headers.add("Route", route)
        headers.add("Max-Forwards", "70")
        headers.add("From", self.local)
        headers.add("To", self.remote)
        headers.add("Call-ID", self.call_id)
        headers.add("CSeq", f"{cseq} {method}")
        return Request(method, uri, headers)

    def ack(self, via: str) -> Request:
        """The ACK for the 2xx (RFC 3261 §13.2.2.4): CSeq number of the INVITE, method ACK,
        a new ``via`` (new branch: the ACK for a 2xx is its own transaction-less request),
        the INVITE's Authorization/Proxy-Authorization header fields (§22.1), no body."""
        request = self._base("ACK", via, self.local_cseq)
        if self.invite is not None:
            for name in ("Authorization", "Proxy-Authorization"):
                for value in self.invite.headers.get_all(name):
                    request.headers.add(name, value)
        return request

    def bye(self, via: str, user_agent: str | None = None) -> Request:
        """A BYE in this dialog (RFC 3261 §15.1.1): local CSeq + 1 (the dialog's counter
        advances), ``via`` with a new branch."""
        self.local_cseq += 1
        request = self._base("BYE", via, self.local_cseq)
        if user_agent:
            request.headers.add("User-Agent", user_agent)
        return request
