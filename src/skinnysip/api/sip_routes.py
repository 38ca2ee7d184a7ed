"""HTTP routes for the SIP probes: ``POST /api/sip/{options,register,invite,digest-auth,traceroute,request,usrloc}``
(transport ``udp`` by default, ``tcp`` or ``tls``) and ``POST /api/sips/{…}`` (always TLS,
``sips:`` URIs, port 5061, 15 s timeout by default).

A route validates the JSON body (strict types, bounded values, no unknown field; a bad field →
400 ``{"success": false, "error": "<field>: <what is wrong>"}``; the OpenAPI schema states the
same patterns and ranges), checks ``host`` against the server's target policy (403, see
:mod:`skinnysip.api.guard`), calls the operation in
:mod:`skinnysip.probes.sip` and returns its result's ``to_api()`` unchanged, so
``skinnysip sip … --json`` prints the same body. An unreachable or silent server is a
200 with ``success: false``. Times in the API are milliseconds.
"""

from __future__ import annotations

import functools
import re
import ssl
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, TypeVar, cast, get_args, get_origin

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, create_model, field_validator, model_validator
from pydantic.alias_generators import to_camel

from skinnysip.addresses import IP_LITERAL_SCHEMA, IPV4_PATTERN, IPV6_PATTERN, check_host, ip_literal
from skinnysip.api.guard import check_target, client_files_allowed
from skinnysip.models import api_model
from skinnysip.net import tls
from skinnysip.probes import sip as probes
from skinnysip.probes.sip import check_party, check_uri, check_user
from skinnysip.sip.request import MAX_REQUEST_BODY, check_header_field, check_method, check_one_request
from skinnysip.sip.syntax import MEDIA_TYPE_PATTERN, is_media_type

if TYPE_CHECKING:
    from skinnysip.sip.identity import IdentitySigner

router = APIRouter(tags=["sip"])

# The constraints the validators enforce, stated in the OpenAPI schema (JSON Schema patterns use
# Python/ECMA regex syntax), so a request valid by the spec is not refused.
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
#: an RFC 1123 host name that is not all digits and dots (those would be IPv4 forms)
HOST_NAME_PATTERN = rf"^(?=.{{1,253}}$)(?=[0-9.]*[A-Za-z-]){_LABEL}(?:\.{_LABEL})*\.?$"
HOST_SCHEMA: dict[str, Any] = {"anyOf": [
    {"type": "string", "format": "ipv4"},
    {"type": "string", "format": "ipv6"},
    {"type": "string", "pattern": HOST_NAME_PATTERN, "maxLength": 253},
]}
USER_SCHEMA: dict[str, Any] = {"pattern": r"^[A-Za-z0-9._~+\-!*'()&=$,]{1,128}$"}
_PORT = r"(?:[1-9][0-9]{0,3}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5])"
#: port numbers 1-65535 without leading zeros
PORT_PATTERN = _PORT
_HOST_IN_URI = rf"(?:{HOST_NAME_PATTERN[1:-1]}|{IPV4_PATTERN}|\[{IPV6_PATTERN}\])"
_URI_PARAM = r";[A-Za-z0-9\-_.]{1,32}(?:=[A-Za-z0-9\-_.]{1,64})?"
#: the sip:/sips: URIs (RFC 3261 §19.1: user@host[:port];params) and global tel: numbers
#: (RFC 3966) the probes take; the URI parser accepts more (headers, passwords, escapes)
URI_SCHEMA: dict[str, Any] = {"pattern": (
    rf"^(?:(?i:sips?):(?:[A-Za-z0-9._~+\-!*'()&=$,]{{1,128}}@)?{_HOST_IN_URI}(?::{_PORT})?(?:{_URI_PARAM}){{0,8}}"
    r"|(?i:tel):\+[0-9]{1,32})$"), "maxLength": 1024}
PARTY_SCHEMA: dict[str, Any] = {"anyOf": [
    {"type": "string", **USER_SCHEMA}, {"type": "string", **URI_SCHEMA}]}
#: the same for a field that may be null (absent): its own anyOf replaces pydantic's nullable one
OPTIONAL_PARTY_SCHEMA: dict[str, Any] = {"anyOf": [*PARTY_SCHEMA["anyOf"], {"type": "null"}]}
DOMAIN_SCHEMA: dict[str, Any] = {"pattern": rf"^{_HOST_IN_URI}(?::{_PORT})?$"}


def ws_path_field() -> Any:
    """The ``wsPath`` field of probes and phones: a WebSocket resource (RFC 6455 §3: a path
    and query, printable, no space, no fragment), ``/`` by default."""
    return Field("/", max_length=256, pattern=r'^/[!"$-~]*$',
                 description="The resource a ws/wss handshake asks for (Asterisk: /ws).")


def _int_field(annotation: Any) -> bool:
    if annotation is int:
        return True
    args = get_args(annotation)
    return bool(args) and int in args and bool not in args and float not in args


def _int_list_field(annotation: Any) -> bool:
    """A list of ints (items possibly ``Annotated``), or that or None."""
    for arg in (annotation, *get_args(annotation)):
        if get_origin(arg) is list:
            items = get_args(arg)
            item = items[0] if items else None
            if get_origin(item) is Annotated:
                item = get_args(item)[0]
            return item is int
    return False


def _integral(value: Any) -> Any:
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**63:
        return int(value)
    return value


def integral_floats(model: type[BaseModel], data: Any) -> Any:
    """``data`` with integral floats (``5.0``) as ints in ``model``'s int fields and the items
    of its int-list fields: JSON Schema's ``integer`` admits a number with a zero fraction,
    pydantic's strict int does not. Strings stay refused (``"5"`` is not a number)."""
    if not isinstance(data, dict):
        return data
    out = dict(data)
    for name, field in model.model_fields.items():
        one, many = _int_field(field.annotation), _int_list_field(field.annotation)
        if not (one or many):
            continue
        for key in {name, field.alias or name, to_camel(name)}:
            value = out.get(key)
            if one and key in out:
                out[key] = _integral(value)
            elif many and isinstance(value, list):
                out[key] = [_integral(v) for v in value]
    return out


#: how the documented URI form reads in an error
URI_FORM = "a sip:/sips: URI of the documented form (sip:user@host[:port];param=value) or tel:+digits"


def spec_match(schema: dict[str, Any], value: str, what: str) -> str:
    """``value`` if it matches the ``pattern`` (or one ``anyOf`` branch's) of ``schema``: the
    server enforces exactly what the OpenAPI document says; ``ValueError`` naming ``what``."""
    patterns = [branch["pattern"] for branch in schema.get("anyOf", [schema]) if "pattern" in branch]
    if not any(re.fullmatch(p, value) for p in patterns):
        raise ValueError(f"not {what}")
    return value


def _NOT_BOTH(a: str, b: str) -> dict[str, Any]:  # noqa: N802 (reads as a schema keyword)
    """JSON Schema: not both ``a`` and ``b`` given (as strings; null counts as absent)."""
    return {"not": {"required": [a, b], "properties": {a: {"type": "string"}, b: {"type": "string"}}}}


CA_FILE_LIMIT = 4 << 20  # bytes of a CA bundle


def check_ca_file(value: str | None) -> str | None:
    """A ``caFile`` field: a PEM bundle on the server's disk (at most 4 MiB) that loads as
    the CAs of a verifying TLS client context; ``ValueError`` naming what is wrong."""
    if value is None:
        return None
    if not client_files_allowed():  # before touching the disk: no file oracle for clients
        raise ValueError("not accepted by a server listening beyond loopback (it names a file on the server)")
    path = Path(value)
    if not path.is_file() or path.stat().st_size > CA_FILE_LIMIT:
        raise ValueError("no such file (a PEM bundle of at most 4 MiB)")
    try:
        tls.client_context(True, value)
    except (OSError, ssl.SSLError) as exc:
        raise ValueError(f"cannot load it: {exc}") from exc
    return value

#: PEM text (what the identity fields take: never a path on the server's disk)
PEM_PATTERN = r"^\s*-----BEGIN [A-Z0-9 ]+-----"


class IdentitySigning(BaseModel):
    """``identitySigning``: what INVITEs are signed with (STIR/SHAKEN, RFC 8224 §5, RFC 8588)
    — a phone's (``POST /api/phones``) or the INVITE probe's."""

    model_config = ConfigDict(strict=True, extra="forbid")

    key: str = Field(max_length=16384, pattern=PEM_PATTERN, description="The EC P-256 private key, PEM text "
                     "(ES256); never returned.")
    x5u: str = Field(max_length=1000, pattern=r"^[Hh][Tt][Tt][Pp][Ss]?://[!#-;=?-~]+$",
                     description="The http(s) URL of the key's certificate (the PASSporT's x5u, the Identity's "
                     "info): printable ASCII without blanks, quotes, < or > (it goes between the info "
                     "parameter's angle brackets).")
    attest: Literal["A", "B", "C"] = Field("A", description="SHAKEN attestation: A (full), B (partial), C "
                                           "(gateway).")

    def signer(self) -> IdentitySigner:
        """The signer; ``ValueError`` (a 400) for a key that is not EC P-256 PEM."""
        from skinnysip.sip.identity import IdentityError, IdentitySigner

        try:
            return IdentitySigner.from_pem(self.key.encode("utf-8", "replace"), self.x5u, self.attest)
        except IdentityError as exc:
            raise ValueError(f"identitySigning: {exc.reason}") from None


#: a header name (a token) that is none of MANAGED_HEADERS, nor their compact forms, in any case
_ADDABLE_NAME = (r"^(?!(?i:via|v|from|f|to|t|call-id|i|cseq|max-forwards|contact|m|content-length|l|content-type|c"
                 r"|authorization|proxy-authorization|expires)$)[A-Za-z0-9\-.!%*_+`'~]+$")


class HeaderFieldBody(BaseModel):
    """A header field to add to the probe's requests."""

    model_config = ConfigDict(strict=True, extra="forbid", str_max_length=1024)

    name: str = Field(max_length=64, json_schema_extra={"pattern": _ADDABLE_NAME},
                      description="A header name (a token) skinnysip does not write itself: not Via, From, To, "
                      "Call-ID, CSeq, Max-Forwards, Contact, Content-Length, Content-Type, Authorization, "
                      "Proxy-Authorization or Expires (compact forms too).")
    value: str = Field(max_length=1024, pattern=r"^[^\r\n\x00]*$", description="Its value, one line.")

    @model_validator(mode="after")
    def _allowed(self) -> HeaderFieldBody:
        check_header_field(self.name, self.value)  # ValueError naming what is wrong: a 400
        return self


#: what every probe body's schema adds to its fields: from/fromUri and to/toUri not both
_BODY_SCHEMA: dict[str, Any] = {"allOf": [_NOT_BOTH("from", "fromUri"), _NOT_BOTH("to", "toUri")]}


class _Body(BaseModel):
    """Fields common to every SIP probe request (camelCase in JSON)."""

    model_config = ConfigDict(
        strict=True, extra="forbid", alias_generator=to_camel, populate_by_name=True, str_max_length=1024,
        json_schema_extra=_BODY_SCHEMA,
    )

    host: str = Field(description="Server: host name, IPv4 or IPv6 address (brackets allowed).",
                      examples=["127.0.0.1"], json_schema_extra=HOST_SCHEMA)
    uri: str | None = Field(None, description="Request-URI (default depends on the operation).",
                            json_schema_extra=URI_SCHEMA)
    from_: str | None = Field(None, alias="from", description="From: user part or full URI.",
                              json_schema_extra=OPTIONAL_PARTY_SCHEMA)
    to: str | None = Field(None, description="To: user part or full URI.", json_schema_extra=OPTIONAL_PARTY_SCHEMA)
    from_uri: str | None = Field(None, description="From as a full URI (same as `from`; give one of them).",
                                 json_schema_extra=URI_SCHEMA)
    to_uri: str | None = Field(None, description="To as a full URI (same as `to`; give one of them).",
                               json_schema_extra=URI_SCHEMA)
    username: str | None = Field(None, description="User / Digest username (default `probe`).",
                                 json_schema_extra=USER_SCHEMA)
    password: str | None = Field(None, max_length=256, description="Digest password; never returned.")
    domain: str | None = Field(None, description="SIP domain for built URIs, host[:port] (default: host).",
                               json_schema_extra=DOMAIN_SCHEMA)
    t1: float | None = Field(None, ge=50, le=10000, description="RFC 3261 T1 in ms (UDP retransmission base; default 500).")
    tls_verify: bool = Field(True, description="Verify the server certificate (TLS).")
    ca_file: str | None = Field(None, description="PEM bundle on the server's disk to verify TLS servers with "
                                "(default: the system's CA store); refused by a server listening beyond loopback.")
    local_ip: str | None = Field(None, max_length=64, description="Send from this IPv4/IPv6 address of the "
                                 "server's host (SIPp -i; default: the one its routing table picks).",
                                 examples=["127.0.0.1"], json_schema_extra=IP_LITERAL_SCHEMA)
    local_port: int = Field(0, ge=0, le=65535, description="Send from this local port (sipsak -l; 0: any).")
    headers: list[HeaderFieldBody] = Field(default_factory=list, max_length=32, description="Header fields added to "
                                           "each request, after the probe's own (sipsak -j); a User-Agent replaces "
                                           "ours.")
    method: str | None = Field(
        None, max_length=32,
        description="Optional; if given it must be the route's own method (each route sends one method; "
                    "case does not matter).",
    )

    @model_validator(mode="before")
    @classmethod
    def _integral_floats(cls, data: Any) -> Any:
        return integral_floats(cls, data)

    @field_validator("host")
    @classmethod
    def _host(cls, v: str) -> str:
        return check_host(v)

    @field_validator("ca_file")
    @classmethod
    def _ca_file(cls, v: str | None) -> str | None:
        return check_ca_file(v)

    @field_validator("local_ip")
    @classmethod
    def _local_ip(cls, v: str | None) -> str | None:
        return None if v is None else ip_literal(v)

    @field_validator("uri")
    @classmethod
    def _uri(cls, v: str | None) -> str | None:
        return None if v is None else spec_match(URI_SCHEMA, check_uri(v), URI_FORM)

    @field_validator("from_", "to")
    @classmethod
    def _party(cls, v: str | None) -> str | None:
        return None if v is None else spec_match(PARTY_SCHEMA, check_party(v), "a user part or " + URI_FORM)

    @field_validator("from_uri", "to_uri")
    @classmethod
    def _full_uri(cls, v: str | None) -> str | None:
        return None if v is None else spec_match(URI_SCHEMA, check_uri(v), URI_FORM)

    @field_validator("username")
    @classmethod
    def _user(cls, v: str | None) -> str | None:
        return None if v is None else check_user(v)

    @field_validator("domain")
    @classmethod
    def _domain(cls, v: str | None) -> str | None:
        if v is None:
            return None
        host, port = v, None
        if v.startswith("["):
            host, _, rest = v[1:].partition("]")
            host = f"[{host}]"
            port = rest[1:] if rest.startswith(":") else (None if not rest else "x")
        elif v.count(":") == 1:
            host, port = v.split(":")
        if port is not None and not (port.isdigit() and 1 <= int(port) <= 65535):
            raise ValueError("bad port in domain")
        check_host(host)
        return spec_match(DOMAIN_SCHEMA, v, "host[:port] of the documented form")

    @model_validator(mode="after")
    def _one_of_each(self) -> _Body:
        if self.from_ is not None and self.from_uri is not None:
            raise ValueError("give `from` or `fromUri`, not both")
        if self.to is not None and self.to_uri is not None:
            raise ValueError("give `to` or `toUri`, not both")
        return self

    def _probe(self, **kw: Any) -> probes.ProbeRequest:
        return probes.ProbeRequest(
            host=self.host,
            uri=self.uri,
            from_uri=self.from_uri or self.from_,
            to_uri=self.to_uri or self.to,
            username=self.username,
            password=self.password,
            domain=self.domain,
            t1=(self.t1 or 500) / 1000,
            tls_verify=self.tls_verify,
            ca_file=self.ca_file,
            source_ip=self.local_ip,
            source_port=self.local_port,
            headers=[(h.name, h.value) for h in self.headers],
            **kw,
        )


class SIPBody(_Body):
    """``/api/sip/*``: SIP over UDP (default), TCP, TLS or WebSocket (RFC 7118) with ``sip:`` URIs."""

    port: int | None = Field(None, ge=1, le=65535, description="Server port (default: DNS SRV per RFC 3263 for a host name, else 5060; 5061 for tls, 80 for ws, 443 for wss).")
    transport: Literal["udp", "tcp", "tls", "ws", "wss"] = Field(
        "udp", description="udp, tcp, tls, or ws/wss: SIP over WebSocket (RFC 7118).")
    ws_path: str = ws_path_field()
    timeout: float = Field(10000, ge=100, le=120000, description="ms to wait for each final response.")

    def to_probe(self) -> probes.ProbeRequest:
        return self._probe(port=self.port, transport=self.transport, scheme="sip", timeout=self.timeout / 1000,
                           ws_path=self.ws_path)


class SIPSBody(_Body):
    """``/api/sips/*``: SIP over TLS with ``sips:`` URIs (RFC 3261 §26.2.2)."""

    port: int = Field(5061, ge=1, le=65535, description="Server port.")
    timeout: float = Field(15000, ge=100, le=120000, description="ms to wait for each final response.")

    def to_probe(self) -> probes.ProbeRequest:
        return self._probe(port=self.port, transport="tls", scheme="sips", timeout=self.timeout / 1000)


class _DigestFields(BaseModel):
    username: str = Field(description="Digest username.", json_schema_extra=USER_SCHEMA)
    password: str = Field(max_length=256, description="Digest password (may be empty); never returned.")
    expires: int = Field(60, ge=0, le=3600, description="Expires of the test registration, s (removed afterwards).")
    digest_checks: bool = Field(False, description="After the login, also try whether the server takes the nonce "
                                "again under the next nc (credential reuse, RFC 3261 §22.3) and whether it takes "
                                "the login's Authorization replayed (RFC 7616 §3.4: nc is there to detect replays): "
                                "two more REGISTERs.")
    enumeration_check: bool = Field(False, description="Also log in as a user that cannot exist and as username with "
                                    "a wrong password (Expires: 0, no binding made) and compare the answers: "
                                    "different ones tell anyone which users exist. The wrong password counts towards "
                                    "any lock-out policy.")


    def to_probe(self) -> probes.ProbeRequest:
        req: probes.ProbeRequest = super().to_probe()  # type: ignore[misc]  # the body class after the mixin
        req.expires = self.expires
        req.digest_checks = self.digest_checks
        req.enumeration_check = self.enumeration_check
        return req


# The mixin comes first so its required username/password override the optional ones.
class SIPDigestBody(_DigestFields, SIPBody):  # type: ignore[misc]
    """``/api/sip/digest-auth``."""


class SIPSDigestBody(_DigestFields, SIPSBody):  # type: ignore[misc]
    """``/api/sips/digest-auth``."""


class _SigningFields(BaseModel):
    identity_signing: IdentitySigning | None = Field(
        None, description="Sign the INVITE (STIR/SHAKEN, RFC 8224 §5, RFC 8588): a Date and an Identity whose "
        "PASSporT names the From's number as orig and the Request-URI's as dest.")

    @model_validator(mode="after")
    def _usable_key(self) -> _SigningFields:
        if self.identity_signing is not None:
            self.identity_signing.signer()
        return self

    def _signed(self, req: probes.ProbeRequest) -> probes.ProbeRequest:
        req.identity = self.identity_signing.signer() if self.identity_signing is not None else None
        return req


class SIPInviteProbeBody(_SigningFields, SIPBody):  # type: ignore[misc]
    """``/api/sip/invite``."""

    def to_probe(self) -> probes.ProbeRequest:
        return self._signed(super().to_probe())


class SIPSInviteProbeBody(_SigningFields, SIPSBody):  # type: ignore[misc]
    """``/api/sips/invite``."""

    def to_probe(self) -> probes.ProbeRequest:
        return self._signed(super().to_probe())


class _TraceFields(BaseModel):
    max_hops: int = Field(20, ge=1, le=probes.MAX_TRACE_HOPS, description="Steps at most: OPTIONS with "
                          "Max-Forwards 0 … maxHops-1, until an answer other than 483 Too Many Hops.")


class SIPTraceBody(_TraceFields, SIPBody):  # type: ignore[misc]
    """``/api/sip/traceroute``."""


class SIPSTraceBody(_TraceFields, SIPSBody):  # type: ignore[misc]
    """``/api/sips/traceroute``."""


class _RequestFields(BaseModel):
    method: str = Field(max_length=32, json_schema_extra={"pattern": r"^(?!(?i:INVITE|ACK|CANCEL|REGISTER)$)"
                                                                     r"[A-Za-z0-9\-.!%*_+`'~]+$"},
                        description="The method to send (case-sensitive, RFC 3261 §7.1): MESSAGE, NOTIFY, INFO, "
                        "PUBLISH, SUBSCRIBE, an extension…; not INVITE (the invite route), ACK, CANCEL or REGISTER (the "
                        "register and digest-auth routes).")
    body: str | None = Field(None, min_length=1, max_length=MAX_REQUEST_BODY, description="The body (sent as UTF-8).")
    content_type: str | None = Field(None, max_length=256, json_schema_extra={"pattern": rf"^{MEDIA_TYPE_PATTERN}$"},
                                     description="Its Content-Type (default text/plain).")

    @field_validator("method")
    @classmethod
    def _method(cls, v: str) -> str:
        return check_method(v)

    @field_validator("content_type")
    @classmethod
    def _content_type(cls, v: str | None) -> str | None:
        if v is not None and not is_media_type(v):
            raise ValueError("not a media type (type/subtype;param=value)")
        return v

    @model_validator(mode="after")
    def _one_request(self) -> _RequestFields:
        check_one_request(self.method, (self.body or "").encode(), self.content_type)  # its size; a type needs it
        return self

    def operation(self) -> Callable[[probes.ProbeRequest], Awaitable[probes.SIPProbeResult]]:
        return functools.partial(probes.request, method=self.method, body=(self.body or "").encode(),
                                 content_type=self.content_type)


#: the request routes' body schema: _Body's rules, and a contentType (not null) only beside a body (a string)
_REQUEST_SCHEMA: dict[str, Any] = {"allOf": [*_BODY_SCHEMA["allOf"], {"anyOf": [
    {"not": {"required": ["contentType"]}}, {"properties": {"contentType": {"type": "null"}}},
    {"required": ["body"], "properties": {"body": {"type": "string"}}}]}]}


class SIPRequestBody(_RequestFields, SIPBody):  # type: ignore[misc]
    """``/api/sip/request``."""

    model_config = ConfigDict(json_schema_extra=_REQUEST_SCHEMA)


class SIPSRequestBody(_RequestFields, SIPSBody):  # type: ignore[misc]
    """``/api/sips/request``."""

    model_config = ConfigDict(json_schema_extra=_REQUEST_SCHEMA)


class _UsrlocFields(BaseModel):
    username: str = Field(description="The user to register (the AOR is username@domain, or `from`) and Digest "
                          "username.", json_schema_extra=USER_SCHEMA)
    password: str = Field(max_length=256, description="Digest password (may be empty); never returned.")
    expires: int = Field(60, ge=1, le=3600, description="Expires of the test binding, s (removed afterwards).")
    method: Literal["MESSAGE", "OPTIONS"] = Field("MESSAGE", description="What is sent to the AOR through the "
                                                  "server once registered, and answered by us when it comes back.")

    def to_probe(self) -> probes.ProbeRequest:
        req: probes.ProbeRequest = super().to_probe()  # type: ignore[misc]  # the body class after the mixin
        req.expires = self.expires
        return req

    def operation(self) -> Callable[[probes.ProbeRequest], Awaitable[probes.SIPProbeResult]]:
        return functools.partial(probes.usrloc, method=self.method)


class SIPUsrlocBody(_UsrlocFields, SIPBody):  # type: ignore[misc]
    """``/api/sip/usrloc``."""


class SIPSUsrlocBody(_UsrlocFields, SIPSBody):  # type: ignore[misc]
    """``/api/sips/usrloc``."""


def for_method(body: type[_B], method: str) -> type[_B]:
    """``body`` whose optional ``method`` may only be ``method`` (any case), as the spec says."""
    return create_model(  # type: ignore[no-any-return,call-overload]
        f"{body.__name__}{method.title()}", __base__=body,
        method=(str | None, Field(None, max_length=32, json_schema_extra={"pattern": f"^(?i:{method})$"},
                                  description=f"Optional; if given, {method} (the method this route sends).")),
    )


_B = TypeVar("_B", bound=BaseModel)
SIPOptionsBody, SIPRegisterBody = (for_method(SIPBody, m) for m in ("OPTIONS", "REGISTER"))
SIPSOptionsBody, SIPSRegisterBody = (for_method(SIPSBody, m) for m in ("OPTIONS", "REGISTER"))
SIPInviteBody = for_method(SIPInviteProbeBody, "INVITE")
SIPSInviteBody = for_method(SIPSInviteProbeBody, "INVITE")
SIPDigestRouteBody = for_method(SIPDigestBody, "REGISTER")
SIPSDigestRouteBody = for_method(SIPSDigestBody, "REGISTER")
SIPTraceRouteBody = for_method(SIPTraceBody, "OPTIONS")
SIPSTraceRouteBody = for_method(SIPSTraceBody, "OPTIONS")

_ROUTE_OF_METHOD = {"OPTIONS": "options", "REGISTER": "register", "INVITE": "invite"}


async def _answer(operation: Callable[[probes.ProbeRequest], Awaitable[probes.SIPProbeResult]],
                  body: SIPBody | SIPSBody, method: str | None) -> JSONResponse:
    # The reference's SIPS options route declared a `method` field and ignored it (always
    # OPTIONS). Here a `method` that is not the route's own is refused, naming the route to use
    # (``method`` None: the request route, which sends the body's method).
    if method is not None and body.method is not None and body.method.upper() != method:
        wanted = _ROUTE_OF_METHOD.get(body.method.upper())
        hint = f"; use the /{wanted} route" if wanted else ""
        return JSONResponse(
            {"success": False, "error": f"method: this route sends {method}, not {body.method!r}{hint}"},
            status_code=400,
        )
    await check_target(body.host)
    result = await operation(body.to_probe())
    return JSONResponse(result.to_api())


_DESCRIPTIONS = {
    "options": "OPTIONS (RFC 3261 §11): status, Allow, Supported, Accept, Server.",
    "register": "REGISTER with Expires: 0: does the registrar require authentication? Offered algorithms and qop.",
    "invite": "INVITE with an SDP offer; follows 1xx; CANCEL on timeout; ACK (+BYE for 2xx): no dialog left open.",
    "digest-auth": "Digest login by REGISTER (RFC 7616: MD5, SHA-256, SHA-512-256, -sess); binding removed after.",
    "request": "One request of any other method (MESSAGE, NOTIFY, INFO, PUBLISH…) with added header fields and a "
               "body; Digest when challenged and credentials are given; the final answer.",
    "traceroute": "OPTIONS with Max-Forwards 0, 1, 2… (sipsak -T): each element on the path answers 483 Too Many "
                  "Hops in turn (RFC 3261 §16.3), until the destination answers; one hop a step.",
    "usrloc": "Is a registered user reachable? (sipsak -U): REGISTER username (Digest), send a MESSAGE or OPTIONS to "
              "its AOR through the server, answer it when the server delivers it to the binding (RFC 3261 §10.3, "
              "§16.5), remove the binding.",
}


@router.post("/api/sip/options", response_model=api_model(probes.OptionsResult), description=_DESCRIPTIONS["options"])
async def sip_options(body: SIPOptionsBody) -> JSONResponse:  # type: ignore[valid-type]
    return await _answer(probes.options, body, "OPTIONS")


@router.post("/api/sip/register", response_model=api_model(probes.RegisterResult), description=_DESCRIPTIONS["register"])
async def sip_register(body: SIPRegisterBody) -> JSONResponse:  # type: ignore[valid-type]
    return await _answer(probes.register, body, "REGISTER")


@router.post("/api/sip/invite", response_model=api_model(probes.InviteResult), description=_DESCRIPTIONS["invite"])
async def sip_invite(body: SIPInviteBody) -> JSONResponse:  # type: ignore[valid-type]
    return await _answer(probes.invite, body, "INVITE")


@router.post("/api/sip/digest-auth", response_model=api_model(probes.DigestAuthResult), description=_DESCRIPTIONS["digest-auth"])
async def sip_digest_auth(body: SIPDigestRouteBody) -> JSONResponse:  # type: ignore[valid-type]
    return await _answer(probes.digest_auth, body, "REGISTER")


@router.post("/api/sips/options", response_model=api_model(probes.OptionsResult), description=_DESCRIPTIONS["options"])
async def sips_options(body: SIPSOptionsBody) -> JSONResponse:  # type: ignore[valid-type]
    return await _answer(probes.options, body, "OPTIONS")


@router.post("/api/sips/register", response_model=api_model(probes.RegisterResult), description=_DESCRIPTIONS["register"])
async def sips_register(body: SIPSRegisterBody) -> JSONResponse:  # type: ignore[valid-type]
    return await _answer(probes.register, body, "REGISTER")


@router.post("/api/sips/invite", response_model=api_model(probes.InviteResult), description=_DESCRIPTIONS["invite"])
async def sips_invite(body: SIPSInviteBody) -> JSONResponse:  # type: ignore[valid-type]
    return await _answer(probes.invite, body, "INVITE")


@router.post("/api/sips/digest-auth", response_model=api_model(probes.DigestAuthResult), description=_DESCRIPTIONS["digest-auth"])
async def sips_digest_auth(body: SIPSDigestRouteBody) -> JSONResponse:  # type: ignore[valid-type]
    return await _answer(probes.digest_auth, body, "REGISTER")


@router.post("/api/sip/traceroute", response_model=api_model(probes.TracerouteResult),
             description=_DESCRIPTIONS["traceroute"])
async def sip_traceroute(body: SIPTraceRouteBody) -> JSONResponse:  # type: ignore[valid-type]
    return await _answer(functools.partial(probes.traceroute, max_hops=cast(_TraceFields, body).max_hops), body,
                         "OPTIONS")


@router.post("/api/sips/traceroute", response_model=api_model(probes.TracerouteResult),
             description=_DESCRIPTIONS["traceroute"])
async def sips_traceroute(body: SIPSTraceRouteBody) -> JSONResponse:  # type: ignore[valid-type]
    return await _answer(functools.partial(probes.traceroute, max_hops=cast(_TraceFields, body).max_hops), body,
                         "OPTIONS")


@router.post("/api/sip/request", response_model=api_model(probes.RequestResult), description=_DESCRIPTIONS["request"])
async def sip_request(body: SIPRequestBody) -> JSONResponse:
    return await _answer(body.operation(), body, None)


@router.post("/api/sips/request", response_model=api_model(probes.RequestResult), description=_DESCRIPTIONS["request"])
async def sips_request(body: SIPSRequestBody) -> JSONResponse:
    return await _answer(body.operation(), body, None)


@router.post("/api/sip/usrloc", response_model=api_model(probes.UsrlocResult), description=_DESCRIPTIONS["usrloc"])
async def sip_usrloc(body: SIPUsrlocBody) -> JSONResponse:
    return await _answer(body.operation(), body, None)


@router.post("/api/sips/usrloc", response_model=api_model(probes.UsrlocResult), description=_DESCRIPTIONS["usrloc"])
async def sips_usrloc(body: SIPSUsrlocBody) -> JSONResponse:
    return await _answer(body.operation(), body, None)
