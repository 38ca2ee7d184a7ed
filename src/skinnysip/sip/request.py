"""One builder for every SIP request and response the core sends (sans-IO).

- :func:`new_request`: an out-of-dialog request (RFC 3261 §8.1.1): Request-URI, To, From
  (with a tag), Call-ID, CSeq, Max-Forwards, Via (with a fresh branch), Contact, and the
  optional pre-existing route set (§8.1.2) applied with loose/strict routing rules.
- :func:`apply_route_set`: the Request-URI and Route header fields for a route set and a
  remote target (§12.2.1.1, §16.12.1.2): loose routing keeps the target as Request-URI;
  a strict router becomes the Request-URI and the target goes last in Route.
- :func:`build_ack_for_failure`: the ACK for a non-2xx final response (§17.1.1.3);
  the ACK for a 2xx is built by :class:`skinnysip.sip.dialog.Dialog` (§13.2.2.4).
- :func:`build_cancel`: CANCEL of a pending request (§9.1).
- :func:`build_response`: a response to a request (§8.2.6): Via (all, in order), From,
  Call-ID, CSeq copied, To copied with a tag added when the request had none (except 100),
  Record-Route copied into 2xx/18x to dialog-creating requests (§12.1.1).

From, To, Contact and Route are built from :class:`~skinnysip.sip.uri.NameAddr` values,
never by pasting strings. Raises :class:`~skinnysip.sip.message.SIPParseError` when a
request handed in lacks a header field the construction needs.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping

from skinnysip.sip.message import Headers, Request, Response, SIPParseError, canonical_name
from skinnysip.sip.syntax import (
    COMMON_METHODS,
    TOKEN_RE,
    is_media_type,
    quote_string,
    split_comma,
    uint_or_none,
)
from skinnysip.sip.uri import NameAddr, SipURI

__all__ = [
    "BRANCH_COOKIE",
    "DIALOG_CREATING",
    "REASON_PHRASES",
    "apply_route_set",
    "event_package",
    "warning_field",
    "build_ack_for_failure",
    "build_cancel",
    "build_response",
    "min_expires_retry",
    "new_branch",
    "new_call_id",
    "new_request",
    "new_tag",
    "reason_phrase",
    "resend_request",
]

#: RFC 3261 §8.1.1.7: the branch of every RFC 3261 transaction starts with this.
BRANCH_COOKIE = "z9hG4bK"

#: Methods that can create a dialog (RFC 3261 §12.1; RFC 6665 SUBSCRIBE/NOTIFY; REFER §4 of RFC 3515).
DIALOG_CREATING = frozenset({"INVITE", "SUBSCRIBE", "REFER", "NOTIFY"})

#: Default reason phrases (RFC 3261 §21, RFC 3262, RFC 3265, RFC 4028, RFC 6026).
REASON_PHRASES: dict[int, str] = {
    100: "Trying", 180: "Ringing", 181: "Call Is Being Forwarded", 182: "Queued",
    183: "Session Progress", 199: "Early Dialog Terminated",
    200: "OK", 202: "Accepted", 204: "No Notification",
    300: "Multiple Choices", 301: "Moved Permanently", 302: "Moved Temporarily",
    305: "Use Proxy", 380: "Alternative Service",
    400: "Bad Request", 401: "Unauthorized", 402: "Payment Required", 403: "Forbidden",
    404: "Not Found", 405: "Method Not Allowed", 406: "Not Acceptable",
    407: "Proxy Authentication Required", 408: "Request Timeout", 410: "Gone",
    412: "Conditional Request Failed",  # RFC 3903 §11.2.1
    413: "Request Entity Too Large", 414: "Request-URI Too Long", 415: "Unsupported Media Type",
    416: "Unsupported URI Scheme", 420: "Bad Extension", 421: "Extension Required",
    422: "Session Interval Too Small", 423: "Interval Too Brief", 428: "Use Identity Header",
    430: "Flow Failed", 436: "Bad Identity Info", 437: "Unsupported Credential",
    438: "Invalid Identity Header",  # 428, 436-438: RFC 8224 §13.2
    439: "First Hop Lacks Outbound Support",
    480: "Temporarily Unavailable", 481: "Call/Transaction Does Not Exist", 482: "Loop Detected",
    483: "Too Many Hops", 484: "Address Incomplete", 485: "Ambiguous", 486: "Busy Here",
    487: "Request Terminated", 488: "Not Acceptable Here", 489: "Bad Event", 491: "Request Pending",
    493: "Undecipherable",
    500: "Server Internal Error", 501: "Not Implemented", 502: "Bad Gateway",
    503: "Service Unavailable", 504: "Server Time-out", 505: "Version Not Supported",
    513: "Message Too Large",
    600: "Busy Everywhere", 603: "Decline", 604: "Does Not Exist Anywhere", 606: "Not Acceptable",
}


#: header fields skinnysip writes itself in the requests it builds: fields added to them (a
#: probe's or a load run's ``headers``) may not name these
MANAGED_HEADERS = frozenset({"Via", "From", "To", "Call-ID", "CSeq", "Max-Forwards", "Contact", "Content-Length",
                             "Content-Type", "Authorization", "Proxy-Authorization", "Expires"})
#: the longest value of an added header field (characters)
MAX_HEADER_VALUE = 1024


def check_header_field(name: str, value: str, hints: Mapping[str, str] | None = None) -> None:
    """``ValueError`` naming what is wrong with a header field ``name: value`` to add to a
    request we build: a name that is no token (RFC 3261 §25.1) or one of
    :data:`MANAGED_HEADERS` (compact forms too; ``hints`` adds a word on what to use instead,
    by canonical name), a value with CR, LF or NUL or longer than :data:`MAX_HEADER_VALUE`."""
    if not TOKEN_RE.fullmatch(name):
        raise ValueError(f"headers: {name[:40]!r} is not a header name ('Name: value')")
    canonical = canonical_name(name)
    if canonical in MANAGED_HEADERS:
        hint = (hints or {}).get(canonical)
        raise ValueError(f"headers: {canonical} is written by skinnysip itself" + (f" ({hint})" if hint else ""))
    if any(c in value for c in "\r\n\0") or len(value) > MAX_HEADER_VALUE:
        raise ValueError(f"headers: the value of {canonical} must be one line of at most {MAX_HEADER_VALUE} "
                         "characters")


#: methods a one-request probe or load scenario does not send, and why (each needs more than
#: one transaction, or would leave state behind)
NOT_ONE_SHOT = {
    "INVITE": "an INVITE makes a call: use the invite probe or the call scenario (they ACK, CANCEL and BYE "
              "what they start)",
    "ACK": "an ACK belongs to an INVITE transaction (RFC 3261 §17.1.1.3)",
    "CANCEL": "a CANCEL belongs to a pending request (RFC 3261 §9.1)",
    "REGISTER": "a REGISTER would leave a binding to a socket that closes: use the register or auth probe or "
                "the register scenario (they remove the bindings they make)",
}


def check_method(method: str) -> str:
    """``method`` if it can be sent as one request on its own (the ``request`` probe, the
    ``request`` load scenario): a token (RFC 3261 §25.1; methods are case-sensitive, §7.1) that
    is not in :data:`NOT_ONE_SHOT`. Raises ``ValueError``."""
    if not TOKEN_RE.fullmatch(method):
        raise ValueError(f"method: {method[:40]!r} is not a SIP method (a token)")
    refused = NOT_ONE_SHOT.get(method.upper())
    if refused is not None:
        raise ValueError(f"method: {refused}")
    return method


#: the largest body of a request sent on its own (the ``request`` probe and load scenario), octets
MAX_REQUEST_BODY = 65536


def check_one_request(method: str, body: bytes = b"", content_type: str | None = None) -> None:
    """``ValueError`` naming the field (``method: …``, ``body: …``, ``content_type: …``) unless
    a request of ``method`` can be sent on its own (:func:`check_method`) with ``body`` (at most
    :data:`MAX_REQUEST_BODY` octets) of ``content_type`` (a media type, RFC 3261 §20.15, and
    only with a body; None: ``text/plain`` when there is one)."""
    check_method(method)
    if len(body) > MAX_REQUEST_BODY:
        raise ValueError(f"body: at most {MAX_REQUEST_BODY} octets ({len(body)} given)")
    if content_type is not None:
        if not body:
            raise ValueError("content_type: a Content-Type needs a body")
        if not is_media_type(content_type):
            raise ValueError(f"content_type: {content_type[:60]!r} is not a media type (type/subtype;param=value)")


def reason_phrase(code: int) -> str:
    """The usual reason phrase for ``code`` (RFC 3261 §21), else one for its class."""
    return REASON_PHRASES.get(code) or REASON_PHRASES.get(code - code % 100, "Unknown")


def new_branch() -> str:
    """A fresh branch: the magic cookie ``z9hG4bK`` (RFC 3261 §8.1.1.7) + 96 random bits."""
    return BRANCH_COOKIE + os.urandom(12).hex()


def new_tag() -> str:
    """A From/To tag: 64 random bits, hex (RFC 3261 §19.3 asks for at least 32)."""
    return os.urandom(8).hex()


def new_call_id() -> str:
    """A Call-ID: 128 random bits, hex, no host part (RFC 3261 §8.1.1.4 allows that, and a
    host part would reveal the local address for no gain)."""
    return os.urandom(16).hex()


# URI parameters that may not appear in a Request-URI (RFC 3261 §19.1.1, Table 1).
_NOT_IN_REQUEST_URI = ("method", "maddr", "ttl", "lr")


def _as_name_addr(value: NameAddr | str) -> NameAddr:
    return value if isinstance(value, NameAddr) else NameAddr.parse(value)


def apply_route_set(remote_target: str, route_set: Iterable[NameAddr | str]) -> tuple[str, list[str]]:
    """(Request-URI, Route values) for a request to ``remote_target`` through ``route_set``
    (RFC 3261 §12.2.1.1 for dialogs, §8.1.2 for a pre-existing route set).

    Empty route set: the target is the Request-URI, no Route. First route with ``lr``
    (loose router): Request-URI = target, Route = the whole set. Otherwise (strict router,
    RFC 2543): Request-URI = the first route's URI without the parameters not allowed in a
    Request-URI, Route = the rest of the set followed by the target.
    Raises :class:`SIPParseError` for a malformed route.
    """
    routes = [_as_name_addr(r) for r in route_set]
    if not routes:
        return remote_target, []
    first = routes[0].uri
    if isinstance(first, SipURI) and "lr" in first.params:
        return remote_target, [str(r) for r in routes]
    if isinstance(first, SipURI):
        first = SipURI(first.scheme, first.user, first.password, first.host, first.port,
                       {k: v for k, v in first.params.items() if k not in _NOT_IN_REQUEST_URI}, {})
    return str(first), [*(str(r) for r in routes[1:]), str(NameAddr(None, parse_target(remote_target)))]


def parse_target(text: str) -> SipURI | str:
    """A remote target text → :class:`SipURI` (sip/sips/tel), else the text itself."""
    try:
        return SipURI.parse(text)
    except SIPParseError:
        return text


def new_request(
    method: str,
    request_uri: str,
    *,
    from_: NameAddr | str,
    to: NameAddr | str,
    via: str,
    call_id: str | None = None,
    cseq: int = 1,
    contact: NameAddr | str | None = None,
    route_set: Iterable[NameAddr | str] = (),
    max_forwards: int = 70,
    user_agent: str | None = None,
    headers: Iterable[tuple[str, str]] = (),
    body: bytes = b"",
    content_type: str | None = None,
) -> Request:
    """An out-of-dialog request (RFC 3261 §8.1.1).

    ``from_`` must carry a ``tag`` (one is added if missing, §8.1.1.3); ``to`` must not
    (§8.1.1.2: it is removed). ``from_``, ``to`` and ``contact`` may also be given as the
    field values already written (a load generator's, formatted once per user): then they
    go out as they are, ``from_`` with its tag. ``via`` is the full Via value with a fresh branch (the
    transport names its own address; see :func:`new_branch`). ``call_id``: a new one when
    None. ``route_set``: a pre-existing route set (outbound proxy, §8.1.2), applied with
    :func:`apply_route_set`. ``headers`` are extra fields appended in order. The
    Content-Length is computed when serialised.
    """
    if isinstance(from_, NameAddr) and from_.tag is None:
        from_ = NameAddr(from_.display_name, from_.uri, {**from_.params, "tag": new_tag()})
    if isinstance(to, NameAddr) and to.tag is not None:
        to = NameAddr(to.display_name, to.uri, {k: v for k, v in to.params.items() if k != "tag"})
    uri, routes = apply_route_set(request_uri, route_set)
    # the fields as Headers keeps them — (lower-case key, canonical name, value) — written
    # out here rather than added one by one: every load attempt builds one
    cseq_value = f"{cseq} {method}"
    items = [("via", "Via", via), *(("route", "Route", route) for route in routes),
             ("max-forwards", "Max-Forwards", str(max_forwards)), ("from", "From", str(from_)), ("to", "To", str(to)),
             ("call-id", "Call-ID", call_id or new_call_id()), ("cseq", "CSeq", cseq_value)]
    if contact is not None:
        items.append(("contact", "Contact", str(contact)))
    if user_agent:
        items.append(("user-agent", "User-Agent", user_agent))
    h = Headers._from_parsed(items)
    for name, value in headers:
        h.add(name, value)
    if body and content_type:
        h.add("Content-Type", content_type)
    return _with_cseq(Request(method, uri, h, body), cseq_value, cseq, method)


def _with_cseq(request: Request, value: str, number: int, method: str) -> Request:
    """``request`` with its parsed CSeq (``value`` = ``number method``, the first CSeq field)
    known in advance, when it is one :func:`~skinnysip.sip.headers.parse_cseq` would accept
    unchecked (a 32-bit number, a method of RFC 3261 and its extensions): the transaction
    and the matching of responses then read it without parsing the text back."""
    if 0 <= number <= 0xFFFFFFFF and method in COMMON_METHODS:
        request.__dict__["_cseq"] = (request.headers._items, value, (number, method))
    return request


def _required(message: Request | Response, name: str) -> str:
    value = message.headers.get(name)
    if value is None:
        raise SIPParseError(f"{'request' if isinstance(message, Request) else 'response'} has no {name} header field")
    return value


def _top_via_value(request: Request) -> str:
    vias = request.headers.values("Via")
    if not vias:
        raise SIPParseError("request has no Via header field")
    return vias[0]


def _same_transaction(request: Request, method: str, to: str) -> Headers:
    """Header fields of an ACK or CANCEL that belongs to ``request``'s transaction: its top
    Via (same branch), Route set, From, Call-ID and CSeq number, with ``to``."""
    number, _method = request.cseq
    headers = Headers()
    headers.add("Via", _top_via_value(request))
    for route in request.headers.get_all("Route"):
        headers.add("Route", route)
    headers.add("Max-Forwards", "70")
    headers.add("From", _required(request, "From"))
    headers.add("To", to)
    headers.add("Call-ID", _required(request, "Call-ID"))
    headers.add("CSeq", f"{number} {method}")
    return headers


def resend_request(request: Request, via: str, *, uri: str | None = None, next_cseq: bool = True) -> Request:
    """``request`` again as a new transaction: a new top Via (``via``, with a new branch),
    CSeq + 1 unless ``next_cseq`` is False, no ``Authorization``/``Proxy-Authorization``
    (a caller adds fresh credentials), and ``uri`` as Request-URI if given (a redirect,
    RFC 3261 §8.1.3.4). The rest — Call-ID, From tag, To, Contact, body — stays, as a
    retry after a challenge (§22.2), a 3xx, a 422 (RFC 4028 §7.3) or an unregister needs."""
    cseq: str | None = None
    if next_cseq:
        number, method = request.cseq
        cseq = f"{number + 1} {method}"
    # the fields rewritten by position, found with C-level list searches (a digest retry of
    # every load attempt comes here): the top Via value replaced (the rest of its field
    # kept), every CSeq as one field at the first one's place, the credentials left out
    old = request.headers._items
    keys = [item[0] for item in old]
    if "authorization" in keys or "proxy-authorization" in keys:
        items = [item for item in old if item[0] != "authorization" and item[0] != "proxy-authorization"]
        keys = [item[0] for item in items]
    else:
        items = list(old)
    if "via" in keys:
        at = keys.index("via")
        key, name, top = items[at]
        rest = split_comma(top)[1:] if "," in top else []
        items[at] = (key, name, ", ".join([via, *rest]) if rest else via)
    else:
        items.append(("via", "Via", via))
    if cseq is not None:
        at = keys.index("cseq")  # there is one: request.cseq read it
        if keys.count("cseq") > 1:
            items = [item for i, item in enumerate(items) if i <= at or item[0] != "cseq"]
        items[at] = ("cseq", "CSeq", cseq)
    retry = Request(request.method, request.uri if uri is None else uri, Headers._from_parsed(items), request.body)
    return retry if cseq is None else _with_cseq(retry, cseq, number + 1, method)


def min_expires_retry(response: Response, expires: int) -> int | None:
    """The expiry (seconds) to send a REGISTER again with after a 423 (Interval Too Brief)
    answered one asking for ``expires``: the response's Min-Expires (RFC 3261 §10.2.8,
    §20.23: 0 … 2**32-1 seconds) when it is larger than ``expires``. None when ``response``
    is not a 423 or names no usable longer interval (missing, malformed, not larger): then a
    retry cannot succeed."""
    if response.status_code != 423:
        return None
    longer = uint_or_none(response.headers.get("Min-Expires"))
    return longer if longer is not None and longer > expires else None


def our_binding(response: Response, request: Request, instance_id: str | None = None) -> NameAddr | None:
    """Our Contact among those a REGISTER's 2xx lists (RFC 3261 §10.2.4: the registrar
    returns every binding of the AOR): the one with our ``+sip.instance`` ``instance_id``
    (RFC 5626 §4.1), else the one with ``request``'s Contact URI user, host and port. None
    when it is not there, or the Contact values do not parse."""
    ours = NameAddr.parse(request.headers.get("Contact") or "<sip:x@invalid>").uri
    try:
        contacts = [NameAddr.parse(v) for v in response.headers.values("Contact") if v.strip() != "*"]
    except SIPParseError:
        return None
    if instance_id is not None:
        for c in contacts:
            if c.instance == instance_id:
                return c
    for c in contacts:
        if isinstance(c.uri, SipURI) and isinstance(ours, SipURI) and (c.uri.host, c.uri.port, c.uri.user) == (
                ours.host, ours.port, ours.user):
            return c
    return None


def granted_expires(response: Response, request: Request, instance_id: str | None = None) -> int | None:
    """The expiry (seconds) a REGISTER's 2xx grants our binding: our Contact's ``expires``
    parameter (:func:`our_binding`), else the ``Expires`` header field (RFC 3261 §10.2.4);
    None when neither holds a number 0 … 10⁹-1."""
    ours = our_binding(response, request, instance_id)
    value = uint_or_none(ours.params.get("expires"), 10**9 - 1) if ours is not None else None
    return value if value is not None else uint_or_none(response.headers.get("Expires"), 10**9 - 1)


def build_ack_for_failure(request: Request, response: Response) -> Request:
    """The ACK for a non-2xx final ``response`` to INVITE ``request`` (RFC 3261 §17.1.1.3).

    Same Request-URI, Call-ID, From and CSeq number as the INVITE; To from the response
    (with its tag); one Via equal to the INVITE's top Via (same branch: the ACK belongs to
    the INVITE transaction); the INVITE's Route header fields. No body.
    Raises :class:`SIPParseError` if the INVITE lacks Via, From, Call-ID or CSeq.
    """
    headers = _same_transaction(request, "ACK", response.headers.get("To") or _required(request, "To"))
    return Request("ACK", request.uri, headers)


def build_cancel(request: Request, *, reasons: Iterable[str] = ()) -> Request:
    """A CANCEL for ``request`` (RFC 3261 §9.1).

    Same Request-URI, Call-ID, To (as in the request), From and CSeq number, method CANCEL;
    one Via equal to the request's top Via (same branch, so the server matches it to the
    pending transaction); the request's Route header fields; no Require/Proxy-Require, no
    body; a Reason field line for each of ``reasons`` (RFC 3326 reason-values, e.g.
    :meth:`skinnysip.sip.reason.Reason.header_value`). The CANCEL is a non-INVITE client
    transaction of its own.
    Raises :class:`SIPParseError` if the request lacks Via, From, To, Call-ID or CSeq.
    """
    headers = _same_transaction(request, "CANCEL", _required(request, "To"))
    for reason in reasons:
        headers.add("Reason", reason)
    user_agent = request.headers.get("User-Agent")
    if user_agent:
        headers.add("User-Agent", user_agent)
    return Request("CANCEL", request.uri, headers)


def event_package(request: Request) -> str:
    """The package name of a request's ``Event`` header field, lower case (RFC 6665 §8.2.1:
    ``Event: dialog;id=7`` → ``"dialog"``; "" when absent)."""
    return (request.headers.get("Event") or "").split(";")[0].strip().lower()


def warning_field(text: str, code: int | None = None) -> tuple[str, str]:
    """A ``Warning: <code> skinnysip "<text>"`` header field (RFC 3261 §20.43: ``code`` one of
    its three-digit warn-codes, e.g. 302 incompatible transport protocol, 305 incompatible
    media format; None or out of range: 399 miscellaneous; the agent a pseudonym, the text a
    quoted-string)."""
    warn = code if code is not None and 300 <= code <= 399 else 399
    return ("Warning", f"{warn} skinnysip {quote_string(text)}")


def build_response(
    request: Request,
    status_code: int,
    reason: str | None = None,
    *,
    to_tag: str | None = None,
    contact: NameAddr | None = None,
    headers: Iterable[tuple[str, str]] = (),
    body: bytes = b"",
    content_type: str | None = None,
    server: str | None = None,
) -> Response:
    """A response to ``request`` (RFC 3261 §8.2.6.2).

    Copies every Via (in order, with the ``received``/``rport`` the transport added), From,
    Call-ID and CSeq; copies To and adds ``to_tag`` when the request's To has no tag
    (a 100 Trying never gets one, §8.2.6.1). Record-Route is copied into 18x/2xx responses
    to dialog-creating requests (§12.1.1). ``contact`` is added as given (dialog-creating
    2xx/18x need it, §12.1.1). Raises :class:`SIPParseError` if the request lacks Via, From,
    To, Call-ID or CSeq, or its To is malformed.
    """
    if not 100 <= status_code <= 699:
        raise ValueError(f"status code {status_code} outside 100-699")
    h = Headers()
    vias = request.headers.get_all("Via")
    if not vias:
        raise SIPParseError("request has no Via header field")
    for via in vias:
        h.add("Via", via)
    if status_code in (180, 181, 182, 183) or 200 <= status_code < 300:
        if request.method in DIALOG_CREATING:
            for rr in request.headers.get_all("Record-Route"):
                h.add("Record-Route", rr)
    h.add("From", _required(request, "From"))
    to_text = _required(request, "To")
    if status_code != 100 and to_tag:
        to = NameAddr.parse(to_text)
        if to.tag is None:
            to_text = str(NameAddr(to.display_name, to.uri, {**to.params, "tag": to_tag}))
    h.add("To", to_text)
    h.add("Call-ID", _required(request, "Call-ID"))
    h.add("CSeq", _required(request, "CSeq"))
    if status_code == 100:
        timestamp = request.headers.get("Timestamp")
        if timestamp:
            h.add("Timestamp", timestamp)  # §8.2.6.1
    if contact is not None:
        h.add("Contact", str(contact))
    if server:
        h.add("Server", server)
    for name, value in headers:
        h.add(name, value)
    if body and content_type:
        h.add("Content-Type", content_type)
    return Response(status_code, reason or reason_phrase(status_code), h, body)
