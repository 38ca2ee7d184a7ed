"""The UAS core's checks on a new request (RFC 3261 §8.2), sans-IO.

:class:`UASCore` answers what any user agent server must refuse before its application
sees a request, in the order of §8.2: 405 with ``Allow`` for a method it does not handle
(§8.2.1), 416 for a Request-URI scheme it does not know (§8.2.2.1), 482 for a merged
request (same From tag, Call-ID and CSeq as a request that arrived by another path,
§8.2.2.2), 420 with ``Unsupported`` for an unknown ``Require`` option (§8.2.2.3), 415 with
``Accept``/``Accept-Encoding`` for a body it cannot read (§8.2.3); and 481 for an in-dialog
request (To tag) that matches no dialog (§12.2.2). OPTIONS gets 200 with ``Allow``,
``Accept`` and ``Supported`` (§11.2).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable

from skinnysip.sip.message import Request, Response, SIPParseError
from skinnysip.sip.request import build_response, new_tag

__all__ = ["DEFAULT_ACCEPT", "DEFAULT_ALLOW", "SESSION_ACCEPT", "UASCore", "is_session_body"]

DEFAULT_ALLOW = ("INVITE", "ACK", "CANCEL", "BYE", "OPTIONS", "INFO", "UPDATE", "MESSAGE", "NOTIFY", "REFER")
#: body types read by default (RFC 3261 §20.1): SDP, text, INFO digits, REFER progress
DEFAULT_ACCEPT = ("application/sdp", "text/plain", "application/dtmf-relay", "message/sipfrag")
#: the ``Accept`` of a 415 to an INVITE or UPDATE whose body is no session description
SESSION_ACCEPT = ("Accept", "application/sdp")


def is_session_body(request: Request) -> bool:
    """Whether the body of an INVITE, re-INVITE or UPDATE is one a UA takes as its session
    description: none, ``application/sdp`` (parameters aside), or a body without
    ``Content-Type`` (read as SDP, the field's absence being the sender's error, RFC 3261
    §20.15). Any other type — ``text/plain``, which :data:`DEFAULT_ACCEPT` lets through for
    MESSAGE — is to be refused 415 with :data:`SESSION_ACCEPT` (RFC 3261 §8.2.3), not read
    as malformed SDP."""
    return not request.body or request.media_type in ("", "application/sdp")


class UASCore:
    """§8.2 checks for one user agent. ``allow``: methods handled; ``supported``: option
    tags understood (``Require`` values outside it are refused; ``timer``, RFC 4028, is
    among the defaults so that the phone can take such INVITEs: a user of this core that
    accepts them without doing session timers answers without ``Session-Expires``, which
    RFC 4028 §7.2 reads as "no session timer"); ``accept``: body types
    read; ``schemes``: Request-URI schemes accepted; ``server``: the ``Server`` value of
    the responses made here. The merged-request memory keeps ``merge_memory`` entries."""

    def __init__(
        self,
        *,
        allow: Iterable[str] = DEFAULT_ALLOW,
        supported: Iterable[str] = ("replaces", "norefersub", "timer"),
        accept: Iterable[str] = DEFAULT_ACCEPT,
        schemes: Iterable[str] = ("sip", "sips", "tel"),
        server: str | None = None,
        merge_memory: int = 4096,
    ) -> None:
        self.allow = tuple(m.upper() for m in allow)
        self.supported = tuple(supported)
        self.accept = tuple(a.lower() for a in accept)
        self.schemes = tuple(s.lower() for s in schemes)
        self.server = server
        self._seen: OrderedDict[tuple[str, str, int, str], str] = OrderedDict()
        self._memory = merge_memory

    def _response(self, request: Request, code: int, headers: list[tuple[str, str]] | None = None) -> Response:
        return build_response(request, code, to_tag=new_tag(), server=self.server, headers=headers or [])

    def check(self, request: Request, *, in_dialog_known: bool | None = None, branch: str | None = None) -> Response | None:
        """The response refusing ``request``, or None if it may go to the application.
        ``in_dialog_known``: for a request with a To tag, whether a dialog matches (False
        → 481; None: not checked). ``branch``: its top Via branch (for §8.2.2.2).
        ACK and CANCEL are never refused here."""
        if request.method in ("ACK", "CANCEL"):
            return None
        if request.method.upper() not in self.allow:
            return self._response(request, 405, [("Allow", ", ".join(self.allow))])
        scheme = request.uri.split(":", 1)[0].lower()
        if scheme not in self.schemes:
            return self._response(request, 416)
        try:
            to_tag = request.to_tag
            from_tag = request.from_tag or ""
            number = request.cseq[0]
        except SIPParseError:
            return self._response(request, 400)
        if to_tag is None and branch:
            key = (from_tag, request.call_id or "", number, request.method)
            first = self._seen.get(key)
            if first is not None and first != branch:
                return self._response(request, 482)
            self._seen[key] = branch
            while len(self._seen) > self._memory:
                self._seen.popitem(last=False)
        required = [v.strip() for v in request.headers.values("Require") if v.strip()]
        unknown = [tag for tag in required if tag not in self.supported]
        if unknown:
            return self._response(request, 420, [("Unsupported", ", ".join(unknown))])
        if request.body:
            ctype = request.media_type
            encoding = (request.headers.get("Content-Encoding") or "identity").strip().lower()
            if ctype not in self.accept or encoding not in ("identity", ""):
                return self._response(request, 415, [("Accept", ", ".join(self.accept)),
                                                     ("Accept-Encoding", "identity")])
        if to_tag is not None and in_dialog_known is False:
            return self._response(request, 481)
        return None

    def options(self, request: Request, *, to_tag: str | None = None,
                body_types: Iterable[str] | None = None) -> Response:
        """200 to OPTIONS with ``Allow``, ``Accept`` and ``Supported`` (RFC 3261 §11.2)."""
        return build_response(
            request, 200, to_tag=to_tag or new_tag(), server=self.server,
            headers=[("Allow", ", ".join(self.allow)),
                     ("Accept", ", ".join(body_types or self.accept)),
                     ("Supported", ", ".join(self.supported))],
        )
