"""HTTP routes for live phones: a phone made from an account over the API stays up (registered,
placing and taking calls) until it is deleted, idle too long, or the server stops.

Routes (JSON camelCase; times of day are seconds since the epoch, durations milliseconds):

- ``POST /api/phones`` ``{"protocol": "sip", "aor", "password", "authUser", "registrar",
  "outboundProxy", "proxyRealm", "transport", "wsPath", "wsInvalidHost", "keepaliveInterval", "outbound", "gruu", "instanceId", "tlsVerify", "caFile", "expires", "register", "autoAnswer",
  "ringTimeout", "stunServer", "mwi", "source", "dtmf", "codecs", "srtp", "srtpSuites", "timeout",
  "identitySigning": {"key", "x5u", "attest"}, "identityCertificate", "identityFetch", "identityCa",
  "identityRequired"}`` (STIR/SHAKEN: PEM texts; a call's ``identity`` says what verifying its
  caller found) → 201, the phone (``id``, ``registration``…); the phone
  is started (and registered, when ``register``) before the answer — or, when that takes
  longer than :data:`ANSWER_WAIT`, the answer comes with ``state: "starting"`` and the start
  goes on (``state`` becomes ``open``, or ``failed`` with its ``reason``).
- ``GET /api/phones``, ``GET /api/phones/{id}``, ``DELETE /api/phones/{id}`` (hang up,
  unregister, close), ``POST /api/phones/{id}/register``, ``POST /api/phones/{id}/unregister``.
- ``POST /api/phones/{id}/calls`` ``{"target"}`` → 201, the call's summary;
  ``GET /api/phones/{id}/calls``; ``GET /api/phones/{id}/calls/{cid}`` (summary, media report
  and the call's ``exchange``); ``POST …/calls/{cid}/answer|reject|hangup|hold|resume|mute|unmute|transfer|dtmf``
  (bodies ``{"code"}``, ``{"target"}``, ``{"digits", "duration"}``).
- ``POST /api/phones/{id}/messages`` ``{"target", "text"}``.
- WebSocket ``/api/phones/{id}/events``: every phone event from the moment of connection, as
  :func:`skinnysip.phone.api.event_to_dict` JSON; a slow socket loses its oldest events
  (then ``{"event": "overflow", "dropped": n}`` comes first); the socket is closed (1000)
  when the phone goes. An unknown phone is closed with code 4404. Every second each call with
  media also gets ``{"event": "media", "call", "state", "media": <its media report>}`` (the
  live quality figures: packets, loss, jitter, RTT, MOS), so a page needs no polling.
- WebSocket ``/api/phones/{id}/calls/{cid}/audio``: listen and speak. The server first sends
  ``{"event": "audio", "format": "s16le", "rate": 8000, "channels": 1}``, then binary
  messages of the call's decoded received audio (16-bit little-endian PCM, 8000 Hz mono, one
  ``ptime`` frame each, as played out of the jitter buffer) and about once a second
  ``{"event": "audioStats", "framesSent", "framesDropped", "micSamples", "micDropped",
  "micUnderruns"}``. Binary messages from the client (same format, at most
  :data:`MIC_MESSAGE_BYTES` each) become what the call sends, through a
  :class:`~skinnysip.net.media.PushSource` (a small jitter buffer) in place of the account's
  source until the socket closes or the client sends ``{"mic": false}``. Both ways are bounded
  (:data:`AUDIO_TAP_FRAMES` frames to the client, :data:`MIC_BUFFER` s from it): the oldest
  audio is dropped and counted rather than queued. When the call ends the server sends
  ``{"event": "audioEnd", "reason"}`` and closes (1000); an unknown phone or call: 4404.

No request waits on the network longer than :data:`ANSWER_WAIT` seconds (10): an action that
has not finished by then (a REGISTER to a silent registrar waits for Timer F, 64·T1 = 32 s, RFC
3261 §17.1.2.2; a transfer for the target to answer; a MESSAGE for its final response) answers
202 with ``success: false, pending: true`` and the state so far, and goes on; its outcome comes
as ``{"event": "actionDone", "action", "call", "success", "reason"}`` on the event socket and
in the phone's state. A second ``register`` while one is still going on joins it (a UA sends
no new REGISTER before the last one's final response, §10.2).

Errors: bad input → 400 ``{"success": false, "error": "<field>: …"}`` (the app's validation
handler); unknown phone or call → 404; an action the phone refuses (:class:`PhoneError`, wrong
call state, too many phones or calls, server unreachable) → 409. The password is never returned.

Bounds (read from ``app.state`` at each use): ``phone_limit`` phones per server (default 16),
``phone_idle_timeout`` seconds (default 1800) after which a phone with no API use, no call
and no event socket is closed. :func:`lifespan` closes every phone when the server stops.
Protocols: ``sip``; ``sccp`` answers 400 until :mod:`skinnysip.phone.sccp_phone` exists and
is wired here (see :data:`PROTOCOLS`).
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import json
import re
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Annotated, Any, Literal, TypeVar

import numpy as np
from fastapi import APIRouter, Body, FastAPI, HTTPException, Query, Request, WebSocket
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import AfterValidator, ConfigDict, Field, ValidationError, field_validator, model_validator
from starlette.websockets import WebSocketDisconnect

from skinnysip.addresses import IP_LITERAL_SCHEMA, check_host, ip_literal
from skinnysip.api.guard import check_target
from skinnysip.api.sip_routes import (
    DOMAIN_SCHEMA,
    PEM_PATTERN,
    URI_FORM,
    URI_SCHEMA,
    USER_SCHEMA,
    IdentitySigning,
    check_ca_file,
    integral_floats,
    spec_match,
    ws_path_field,
)
from skinnysip.models import ResultModel
from skinnysip.net.media import AudioTap, MediaStream, PushSource
from skinnysip.net.sip_transport import SIPTransportError
from skinnysip.pcap import PcapError, exchange_to_pcapng
from skinnysip.phone.api import (
    Call,
    CallState,
    IncomingCall,
    Phone,
    PhoneError,
    RegistrationState,
    camel_keys,
    event_to_dict,
    message_counts,
)
from skinnysip.phone.identity import IdentityService
from skinnysip.phone.sccp_phone import SCCPAccount, SCCPCall, SCCPPhone
from skinnysip.phone.sip_phone import RING_TIMEOUT, SIPAccount, SIPCall, SIPPhone, check_instance_id
from skinnysip.probes.sip import check_uri, check_user
from skinnysip.result import WireMessage
from skinnysip.rtp.codecs import payload_types
from skinnysip.sccp.station import validate_device_name
from skinnysip.sdp import SRTPMode, check_srtp_suites
from skinnysip.sip.message import SIPParseError
from skinnysip.sip.uri import SipURI, parse_hostport

__all__ = ["PROTOCOLS", "PhoneManager", "lifespan", "router"]

router = APIRouter(tags=["phones"])
T = TypeVar("T")

DEFAULT_PHONE_LIMIT = 16
DEFAULT_IDLE_TIMEOUT = 1800.0  # s
SOCKET_QUEUE = 256  # events kept per WebSocket for a slow reader
SOCKETS_PER_PHONE = 8
CALLS_KEPT = 50  # ended calls kept per phone for GET (the live ones are always there)
CLOSE_TIMEOUT = 30.0  # s for one phone to hang up, unregister and close
ANSWER_WAIT = 10.0  # s an API request waits for the network before answering 202 (the action goes on)
MEDIA_INTERVAL = 1.0  # s between the "media" events of an event socket
AUDIO_RATE = 8000  # Hz of the audio sockets' PCM (the rate inside every MediaStream)
AUDIO_TAP_FRAMES = 15  # frames (ptime each, 300 ms at 20 ms) kept for a slow audio socket
AUDIO_SOCKETS_PER_CALL = 4
MIC_BUFFER = 0.5  # s of microphone audio kept ahead of the call's sending
MIC_PRIME = 0.06  # s buffered before the microphone audio starts (and after it ran dry)
MIC_MESSAGE_BYTES = 8000  # one client message: at most 0.5 s of 8000 Hz s16le

_TONE_RE = re.compile(r"tone:(\d{2,4}(?:\.\d{1,3})?)")
_SCHEME_RE = re.compile(r"(?i)(sips?|tel):")


# -- request bodies ------------------------------------------------------------------------------
class _Body(ResultModel):
    model_config = ConfigDict(strict=True, extra="forbid", str_max_length=1024)

    @model_validator(mode="before")
    @classmethod
    def _integral_floats(cls, data: Any) -> Any:
        return integral_floats(cls, data)  # 5.0 is a JSON Schema integer


_SIP_USER = r"[A-Za-z0-9._~+\-!*'()&=$,]{1,128}"
#: sip:/sips: user@host[:port] (the AOR's shape the validator needs: a user and a host)
AOR_PATTERN = rf"^(?i:sips?):{_SIP_USER}@{DOMAIN_SCHEMA['pattern'][1:-1]}$"
USER_AT_HOST_PATTERN = rf"^{_SIP_USER}@{DOMAIN_SCHEMA['pattern'][1:-1]}$"
TARGET_SCHEMA: dict[str, Any] = {"anyOf": [{"type": "string", **USER_SCHEMA}, {"type": "string", **URI_SCHEMA},
                                           {"type": "string", "pattern": USER_AT_HOST_PATTERN}]}
#: what :func:`_check_source` accepts: tone:<20-3900 Hz>, silence, echo, rtp-echo
SOURCE_PATTERN = (r"^(?:silence|echo|rtp-echo|tone:(?:(?:[2-9][0-9]|[1-9][0-9]{2}|[12][0-9]{3}|3[0-8][0-9]{2})"
                  r"(?:\.[0-9]{1,3})?|3900(?:\.0{1,3})?))$")



SOURCE_DESCRIPTION = ('What the phone sends: "tone:<Hz>" (20-3900), "silence", "echo" (what it hears) or '
                      '"rtp-echo" (each RTP payload back as it came).')


def _check_target(value: str) -> str:
    """A dial string: a sip:/sips:/tel: URI, ``user@host[:port]`` or a user at the phone's domain."""
    spec_match(TARGET_SCHEMA, value, "a user, user@host[:port] or " + URI_FORM)
    if _SCHEME_RE.match(value):
        return check_uri(value)
    if "@" in value:
        check_uri("sip:" + value)
        return value
    return check_user(value)


def _check_server(value: str | None) -> str | None:
    if value is None:
        return None
    spec_match(DOMAIN_SCHEMA, value, "host[:port] of the documented form")
    try:
        parse_hostport(value.strip())
    except SIPParseError as exc:
        raise ValueError(f"not host[:port]: {exc.reason}") from exc
    return value.strip()


def _check_source(v: str) -> str:
    tone = _TONE_RE.fullmatch(v)
    if v in ("silence", "echo", "rtp-echo") or (tone and 20 <= float(tone.group(1)) <= 3900):
        return v
    raise ValueError('"tone:<Hz>" with 20-3900 Hz, "silence", "echo" or "rtp-echo"')


def _check_rtp_ports(value: list[int] | None) -> list[int] | None:
    if value is not None:
        from skinnysip.net.media import check_port_range

        check_port_range((value[0], value[1]))  # ValueError: "RTP ports …: …"
    return value


def _port_pair(value: list[int] | None) -> tuple[int, int] | None:
    return (value[0], value[1]) if value else None


#: ``rtpPorts`` of both phone kinds: [first, last], each 1-65535, checked as a range
RTPPorts = Annotated[
    list[Annotated[int, Field(ge=1, le=65535)]] | None,
    Field(min_length=2, max_length=2, description="[first, last]: the range each call's RTP/RTCP port pair is "
          "taken from (an even RTP port and the next; default: any free pair). first <= last, and the range must "
          "hold an even port and its successor (else a 400).", examples=[[16384, 16483]]),
    AfterValidator(_check_rtp_ports),
]


class _LocalIP(ResultModel):
    local_ip: str | None = Field(None, max_length=64, description="The server host's IPv4/IPv6 address the phone "
                                 "connects and listens from, signalling and media (pjsua --bound-addr, SIPp -i; "
                                 "default: the one its routing table picks for the server).", examples=["127.0.0.1"],
                                 json_schema_extra=IP_LITERAL_SCHEMA)

    @field_validator("local_ip")
    @classmethod
    def _local_ip(cls, v: str | None) -> str | None:
        return None if v is None else ip_literal(v)


class SIPPhoneBody(_LocalIP, _Body):
    """``POST /api/phones`` with ``protocol`` ``sip``: the account (:class:`SIPAccount`)."""

    protocol: Literal["sip"] = "sip"
    aor: str = Field(description="Address of record, sip:alice@example.com.", examples=["sip:alice@127.0.0.1"],
                     json_schema_extra={"pattern": AOR_PATTERN})
    password: str | None = Field(None, max_length=256, description="Digest password; never returned.")
    auth_user: str | None = Field(None, description="Digest username (default: the AOR's user).",
                                  json_schema_extra=USER_SCHEMA)
    registrar: str | None = Field(None, max_length=300, description="host[:port] (default: the AOR's host).",
                                  json_schema_extra=DOMAIN_SCHEMA)
    outbound_proxy: str | None = Field(None, max_length=300, description="host[:port] every request goes through.",
                                       json_schema_extra=DOMAIN_SCHEMA)
    proxy_realm: str | None = Field(None, min_length=1, max_length=200, pattern=r"^[\x20-\x7e]+$",
                                    description="The realm of the phone's own proxy or PBX: its credentials are "
                                    "reused across calls and messages, so a new INVITE, MESSAGE, SUBSCRIBE or PUBLISH "
                                    "draws no 401/407 first (RFC 3261 §22.3).")
    transport: Literal["udp", "tcp", "tls", "ws", "wss"] = Field(
        "udp", description="udp, tcp, tls, or ws/wss: SIP over WebSocket (RFC 7118), as a browser phone talks to a "
        "WebRTC gateway (default port 80/443).")
    ws_path: str = ws_path_field()
    keepalive_interval: float = Field(25000, ge=100, le=3600000, description="ms between keep-alives to the "
                                      "registrar/proxy (a ping on a WebSocket, which must be answered within 10 s).")
    ws_invalid_host: bool = Field(False, description="Over ws/wss, a random ….invalid host in Via and Contact, as "
                                  "browser phones give: the server must reach the phone by its connection.")
    outbound: bool = Field(False, description="SIP outbound (RFC 5626): register with +sip.instance and reg-id; when "
                           "the registrar agrees, keep-alives every Flow-Timer that must be answered (CRLF pong, STUN "
                           "over UDP) and a failed flow registered again at once.")
    gruu: bool = Field(False, description="Ask the registrar for GRUUs (RFC 5627); the public one is the phone's "
                       "Contact in calls.")
    instance_id: str | None = Field(None, max_length=200, pattern=r"^[Uu][Rr][Nn]:[!#-+\--:=?-~]*$",
                                    description="The +sip.instance URN, printable ASCII without blanks, quotes, "
                                    "<, >, ; or , (default: a new urn:uuid: per phone).")
    tls_verify: bool = Field(True, description="Verify the server certificate (TLS).")
    ca_file: str | None = Field(None, description="PEM bundle on the server's disk to verify TLS servers with.")
    expires: int = Field(600, ge=10, le=86400, description="Registration expiry asked for, s.")
    do_register: bool = Field(True, alias="register",
                              description="Register (and keep the registration fresh); false: calls only.")
    auto_answer: float | None = Field(None, ge=0, le=3600000,
                                      description="Answer incoming calls after this many ms (absent: never).")
    ring_timeout: int = Field(int(RING_TIMEOUT * 1000), ge=1000, le=3600000,
                              description="ms an incoming call rings unanswered before it is refused 480 (an "
                              "INVITE's own Expires ends it sooner, 487).")
    ice: bool = Field(False, description="Be an ICE lite agent (RFC 8445 §2.5): ICE credentials and host "
                      "candidates in the phone's SDP, the far end's connectivity checks answered, media where it "
                      "nominates.")
    mwi: bool = Field(False, description="Subscribe to the mailbox's message-waiting state (SUBSCRIBE "
                      "message-summary, RFC 3842, refreshed); its NOTIFYs are messageWaiting events.")
    stun_server: str | None = Field(None, max_length=300, description="host[:port] of a STUN server outside "
                                    "the phone's NAT: each call's SDP gives the address it sees the RTP socket "
                                    "at (RFC 8489; port 3478 by default).", json_schema_extra=DOMAIN_SCHEMA)
    source: str = Field("tone:440", description=SOURCE_DESCRIPTION,
                        json_schema_extra={"pattern": SOURCE_PATTERN})
    dtmf: Literal["rfc4733", "info"] = "rfc4733"
    codecs: list[Literal["PCMU", "PCMA", "G722", "opus"]] | None = Field(
        None, min_length=1, max_length=4, description="Audio codecs offered and accepted, in order of preference "
        "(default: every one available on the server, wideband first); one the server lacks is a 400.")
    srtp: SRTPMode = Field(
        "off", description="SRTP with SDES keys (RFC 4568): optional (RTP/AVP with a=crypto, plain RTP if the far "
        "end keys none) or mandatory (RTP/SAVP; the call fails without SRTP); dtls: DTLS-SRTP (RFC 5764, "
        "UDP/TLS/RTP/SAVP with a=fingerprint; the call fails without it); off: plain RTP, SRTP offers refused. "
        "Every mode but off answers DTLS-SRTP offers.")
    srtp_suites: list[Literal["AES_CM_128_HMAC_SHA1_80", "AES_CM_128_HMAC_SHA1_32", "AEAD_AES_128_GCM",
                              "AEAD_AES_256_GCM"]] | None = Field(
        None, min_length=1, max_length=4, json_schema_extra={"uniqueItems": True},
        description="SDES suites offered, in order, and the only ones accepted (each once; AES-GCM: RFC 7714); "
        "default: offer the two AES_CM ones, accept any of the four.")
    timeout: int = Field(32000, ge=1000, le=120000, description="ms to wait for each final response (and, up "
                         "to 10 s, for a TCP/TLS connection); an API request itself waits at most ANSWER_WAIT (10 s).")
    rtp_ports: RTPPorts = None
    identity_signing: IdentitySigning | None = Field(
        None, description="STIR/SHAKEN (RFC 8224, RFC 8588): sign each INVITE's Identity (ES256) with this key, "
        "its certificate's URL and the SHAKEN attestation. The key is never returned.")
    identity_certificate: str | None = Field(
        None, max_length=65536, pattern=PEM_PATTERN, description="A certificate (PEM text) that verifies the "
        "Identity of every INVITE the phone gets (no fetch).")
    identity_fetch: bool = Field(False, description="Verify the Identity of INVITEs with the certificate its "
                                 "x5u/info URL names, fetched over http(s) (3 s, 64 KiB, through the server's target "
                                 "policy).")
    identity_ca: str | None = Field(None, max_length=65536, pattern=PEM_PATTERN, description="Trust anchors "
                                    "(PEM text) the Identity's certificate must chain to.")
    identity_required: bool = Field(False, description="Refuse INVITEs whose Identity does not verify: 428 "
                                    "without one, else RFC 8224's 436/437/438 or 403 Stale Date.")

    @model_validator(mode="after")
    def _identity(self) -> SIPPhoneBody:
        IdentityService.for_account(self.account())  # ValueError naming the field: a 400
        return self

    @field_validator("srtp_suites")
    @classmethod
    def _srtp_suites(cls, v: list[str] | None) -> list[str] | None:
        if v is not None:
            check_srtp_suites(v)
        return v

    @field_validator("aor")
    @classmethod
    def _aor(cls, v: str) -> str:
        check_uri(v)
        spec_match({"pattern": AOR_PATTERN}, v, "sip:user@host[:port] (the documented form)")
        uri = SipURI.parse(v)
        if uri.scheme not in ("sip", "sips") or not uri.host or not uri.user:
            raise ValueError("a sip: or sips: URI with a user and a host is needed")
        return v

    @field_validator("auth_user")
    @classmethod
    def _auth_user(cls, v: str | None) -> str | None:
        return None if v is None else check_user(v)

    @field_validator("registrar", "outbound_proxy", "stun_server")
    @classmethod
    def _server(cls, v: str | None) -> str | None:
        return _check_server(v)

    @field_validator("ca_file")
    @classmethod
    def _ca_file(cls, v: str | None) -> str | None:
        return check_ca_file(v)

    @field_validator("source")
    @classmethod
    def _source(cls, v: str) -> str:
        return _check_source(v)

    @field_validator("instance_id")
    @classmethod
    def _instance_id(cls, v: str | None) -> str | None:
        try:
            return None if v is None else check_instance_id(v)
        except ValueError as exc:
            raise ValueError(str(exc).removeprefix("instance_id: ")) from None

    def account(self) -> SIPAccount:
        return SIPAccount(aor=self.aor, password=self.password, auth_user=self.auth_user, registrar=self.registrar,
                          outbound_proxy=self.outbound_proxy, proxy_realm=self.proxy_realm,
                          transport=self.transport, ws_path=self.ws_path,
                          ws_invalid_host=self.ws_invalid_host, keepalive_interval=self.keepalive_interval / 1000,
                          outbound=self.outbound, gruu=self.gruu, instance_id=self.instance_id,
                          tls_verify=self.tls_verify,
                          ca_file=self.ca_file, expires=self.expires, register=self.do_register,
                          auto_answer=None if self.auto_answer is None else self.auto_answer / 1000,
                          ring_timeout=self.ring_timeout / 1000,
                          stun_server=self.stun_server, ice=self.ice, mwi=self.mwi,
                          source=self.source, dtmf=self.dtmf, codecs=tuple(self.codecs) if self.codecs else None,
                          srtp=self.srtp, srtp_suites=tuple(self.srtp_suites) if self.srtp_suites else None,
                          timeout=self.timeout / 1000,
                          rtp_ports=_port_pair(self.rtp_ports), listen_host=self.local_ip,
                          identity_key=self.identity_signing.key if self.identity_signing else None,
                          identity_x5u=self.identity_signing.x5u if self.identity_signing else None,
                          identity_attest=self.identity_signing.attest if self.identity_signing else "A",
                          identity_certificate=self.identity_certificate, identity_fetch=self.identity_fetch,
                          identity_ca=self.identity_ca, identity_required=self.identity_required)

    @field_validator("codecs")
    @classmethod
    def _codecs(cls, v: list[str] | None) -> list[str] | None:
        if v is not None:
            try:
                payload_types(v)
            except ValueError as exc:
                raise ValueError(str(exc).removeprefix("codecs: ")) from None
        return v

    def public(self) -> dict[str, Any]:
        """The account as shown back: everything but the password."""
        shown = self.model_dump(mode="json", by_alias=True, exclude={"password": True,
                                                                      "identity_signing": {"key"}})
        shown["hasPassword"] = self.password is not None
        return shown


class SCCPPhoneBody(_LocalIP, _Body):
    """``POST /api/phones`` with ``protocol`` ``sccp``: a station (:class:`SCCPAccount`)."""

    protocol: Literal["sccp"] = "sccp"
    host: str = Field(description="Call manager: host name, IPv4 or IPv6 address.", examples=["127.0.0.1"])
    port: int | None = Field(None, ge=1, le=65535, description="Call manager port (default 2000, 2443 with tls).")
    tls: bool = Field(False, description="SCCP over TLS.")
    tls_verify: bool = Field(True, description="Verify the call manager's certificate (TLS).")
    device_name: str = Field("SEP001122334455", description="SEP + 12 hex digits.")
    device_type: int = Field(7, ge=0, le=65535, description="Device type (7 = 7960).")
    protocol_version: int = Field(11, ge=0, le=255, description="Register protocol version.")
    auto_answer: float | None = Field(None, ge=0, le=3600000,
                                      description="Answer incoming calls after this many ms (absent: never).")
    source: str = Field("tone:440", description=SOURCE_DESCRIPTION,
                        json_schema_extra={"pattern": SOURCE_PATTERN})
    timeout: int = Field(10000, ge=1000, le=120000, description="ms to wait for each call manager answer.")
    rtp_ports: RTPPorts = None

    @field_validator("host")
    @classmethod
    def _host(cls, v: str) -> str:
        return check_host(v)

    @field_validator("device_name")
    @classmethod
    def _device(cls, v: str) -> str:
        return validate_device_name(v)

    @field_validator("source")
    @classmethod
    def _source(cls, v: str) -> str:
        return _check_source(v)

    def account(self) -> SCCPAccount:
        return SCCPAccount(host=self.host, port=self.port, tls=self.tls, tls_verify=self.tls_verify,
                           device_name=self.device_name, device_type=self.device_type,
                           protocol_version=self.protocol_version, local_ip=self.local_ip,
                           auto_answer=None if self.auto_answer is None else self.auto_answer / 1000,
                           source=self.source, timeout=self.timeout / 1000,
                           rtp_ports=_port_pair(self.rtp_ports))

    def public(self) -> dict[str, Any]:
        return self.model_dump(mode="json", by_alias=True)


class TargetBody(_Body):
    target: str = Field(max_length=512, description="sip:/sips:/tel: URI, user@host[:port] or a user at the phone's domain.",
                        json_schema_extra=TARGET_SCHEMA)

    @field_validator("target")
    @classmethod
    def _target(cls, v: str) -> str:
        return _check_target(v)


class MessageBody(TargetBody):
    text: str = Field(min_length=1, max_length=1000, description="text/plain body of the MESSAGE.")


class WatchBody(TargetBody):
    event: Literal["presence", "dialog"] = Field("presence", description="presence: the target's presence "
                                                 "(RFC 3856, PIDF); dialog: its calls, as a busy lamp (RFC 4235).")


class PresenceBody(_Body):
    basic: Literal["open", "closed"] = Field("open", description="open: willing to communicate (RFC 3863).")
    note: str | None = Field(None, max_length=200, pattern=r"^[^\x00-\x08\x0B\x0C\x0E-\x1F\uFFFE\uFFFF]*$",
                             description="Free text for watchers (PIDF <note>): no control characters.")
    activity: str | None = Field(None, pattern=r"^[a-z][a-z-]{0,39}$",
                                 description="An RPID activity (RFC 4480): away, busy, on-the-phone, meal…")


class RejectBody(_Body):
    code: int = Field(486, ge=300, le=699, description="Final response: 486 Busy Here, 603 Decline…")


class DTMFBody(_Body):
    digits: str = Field(pattern=r"^[0-9A-Da-d*#]{1,32}$", description="0-9 * # A-D, at most 32.")
    duration: int = Field(100, ge=40, le=2000, description="ms per digit.")


# -- response bodies ------------------------------------------------------------------------------
class Registration(ResultModel):
    state: str
    reason: str = ""
    expires: int | None = None
    outbound: bool = Field(False, description="The registrar agreed to SIP outbound on the phone's flow (RFC 5626).")
    flow_timer: int | None = Field(None, description="The registrar's Flow-Timer, s (RFC 5626 §4.4).")
    gruu: str | None = Field(None, description="The public GRUU the registrar gave (RFC 5627).")
    temp_gruu: str | None = Field(None, description="The temporary GRUU the registrar gave (RFC 5627).")
    service_route: list[str] = Field([], description="The registrar's Service-Route: the Route values of the "
                                     "phone's requests outside a dialog, in order (RFC 3608).")
    server_authenticated: bool | None = Field(
        None, description="The registrar's Authentication-Info rspauth proved that it knows the password (true) "
        "or did not match (false); null when it sent none (RFC 2617 §3.2.3).")


class MessageWaitingView(ResultModel):
    """The phone's message-waiting state (RFC 3842): its subscription and the last summary."""

    subscription: str = Field("off", description="off (not subscribed), init, pending, active, terminated or "
                              "failed: the SUBSCRIBE message-summary's state (RFC 6665).")
    reason: str = Field("", description="Why the subscription failed or ended.")
    waiting: bool | None = Field(None, description="Messages-Waiting of the last NOTIFY (null: none heard yet).")
    account: str | None = Field(None, description="Message-Account of the last NOTIFY.")
    counts: dict[str, dict[str, int]] = Field(default_factory=dict, description="Per message class "
                                              "(voice-message…): new, old, newUrgent, oldUrgent.")
    updated: float | None = Field(None, description="When the last summary came (wall-clock seconds).")


class WatchView(ResultModel):
    """One watched resource: its subscription (RFC 6665) and what the last NOTIFY said."""

    uri: str
    event: str = Field(description="presence (RFC 3856) or dialog (RFC 4235).")
    state: str = Field(description="init, pending, active, terminated or failed: the subscription's state.")
    reason: str = Field("", description="Why the subscription failed or ended.")
    basic: str | None = Field(None, description="presence: open, closed, or null (not told yet).")
    notes: list[str] = Field(default_factory=list, description="presence: the PIDF notes.")
    activities: list[str] = Field(default_factory=list, description="presence: RPID activities (RFC 4480).")
    lamp: str | None = Field(None, description="dialog: idle, calling, ringing or busy.")
    dialogs: list[dict[str, Any]] = Field(default_factory=list, description="dialog: the dialogs not terminated "
                                          "(id, state, direction, callId, remote, remoteTarget, duration).")


class CallSummary(ResultModel):
    """:meth:`Call.summary` (extra keys a phone adds are passed through)."""

    model_config = ConfigDict(extra="allow")

    id: int
    direction: str
    remote: str
    state: str
    local_hold: bool
    remote_hold: bool
    muted: bool = Field(False, description="Silence is sent in place of our audio (POST …/mute); RTP goes on.")
    started: float
    alerting: float | None = Field(None, description="When the call was first alerted (wall-clock seconds): an "
                                   "outgoing SIP call's first 18x with a To tag (alerting - started: the "
                                   "post-dial delay).")
    connected: float | None
    ended: float | None
    end_reason: str | None
    remote_reason: str | None = Field(None, description="Why the far end said it ended the call: the RFC 3326 "
                                      "Reason of its BYE or CANCEL (e.g. 'Q.850 cause 16 (Normal call clearing)'); "
                                      "null when it gave none.")
    dtmf_received: str
    media: dict[str, Any] | None
    identity: dict[str, Any] | None = Field(None, description="What verifying the caller's Identity found (RFC "
                                            "8224 §6.2; SHAKEN): verified, code, reason, attest, orig, dest, "
                                            "origid, iat, age (s), ppt, x5u, chain, compact; null when the INVITE "
                                            "carried none.")


class CallResult(CallSummary):
    success: bool = True
    pending: bool = Field(False, description="The action had not finished after ANSWER_WAIT s (HTTP 202): "
                          "it goes on, its outcome comes as an actionDone event.")
    phone: str


class CallDetail(CallResult):
    exchange: list[WireMessage]


PhoneState = Literal["starting", "open", "closing", "failed"]


class PhoneResult(ResultModel):
    success: bool = True
    id: str
    protocol: str
    state: PhoneState
    reason: str = Field("", description="Why the phone failed to start (state failed).")
    pending: list[str] = Field(default_factory=list, description="Actions still going on (start, register, "
                               "message, hangup…), each to end with an actionDone event.")
    account: dict[str, Any]
    registration: Registration
    message_waiting: MessageWaitingView
    watches: list[WatchView] = Field(default_factory=list, description="Presence and busy lamps watched (SIP).")
    calls: list[CallSummary]
    created: float
    last_used: float
    events_dropped: int


class PhoneList(ResultModel):
    success: bool = True
    limit: int
    phones: list[PhoneResult]


class Done(ResultModel):
    success: bool = True
    pending: bool = Field(False, description="The action had not finished after ANSWER_WAIT s (HTTP 202): "
                          "it goes on, its outcome comes as an actionDone event.")
    id: str
    registration: Registration | None = None


# -- protocols ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Protocol:
    """How a ``protocol`` value becomes a phone: the module that must be importable, the body
    model and the factory (None: not wired into the API yet)."""

    module: str
    body: type[_Body] | None
    build: Callable[[Any], Phone] | None


def _sip_phone(body: SIPPhoneBody) -> Phone:
    return SIPPhone(body.account())


def _sccp_phone(body: SCCPPhoneBody) -> Phone:
    return SCCPPhone(body.account())


PROTOCOLS: dict[str, Protocol] = {
    "sip": Protocol("skinnysip.phone.sip_phone", SIPPhoneBody, _sip_phone),
    "sccp": Protocol("skinnysip.phone.sccp_phone", SCCPPhoneBody, _sccp_phone),
}


# -- sessions ----------------------------------------------------------------------------------------
class _Subscriber:
    """One WebSocket's bounded queue; ``None`` is the end."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue(SOCKET_QUEUE)
        self.dropped = 0

    def put(self, item: dict[str, Any] | None) -> None:
        if self.queue.full():
            self.queue.get_nowait()
            self.dropped += 1
        self.queue.put_nowait(item)


class PhoneSession:
    """A phone made over the API: its id, account view, calls on record and event fan-out."""

    def __init__(self, phone_id: str, protocol: str, phone: Phone, account: dict[str, Any]) -> None:
        self.id = phone_id
        self.protocol = protocol
        self.phone = phone
        self.account = account
        self.created = time.time()
        self.last_used = time.time()
        self.busy = 0
        self.closing = False
        self.subscribers: set[_Subscriber] = set()
        self.audio_sockets: dict[int, int] = {}  # call id → open audio sockets
        self._calls: dict[int, Call] = {}
        self._pump: asyncio.Task[None] | None = None
        self.pending: dict[asyncio.Future[Any], str] = {}  # actions answered 202, still going on
        self.register_task: asyncio.Future[Any] | None = None
        self.failure = ""  # why the phone failed to start after the answer
        self._closer: asyncio.Task[None] | None = None

    def start_pump(self) -> None:
        self._pump = asyncio.get_running_loop().create_task(self._fan_out())

    async def _fan_out(self) -> None:
        async for event in self.phone.events():
            if isinstance(event, IncomingCall):
                self.remember(event.call)
            data = event_to_dict(event)
            for sub in list(self.subscribers):
                sub.put(data)

    @contextlib.contextmanager
    def in_use(self) -> Iterator[None]:
        self.busy += 1
        self.last_used = time.time()
        try:
            yield
        finally:
            self.busy -= 1
            self.last_used = time.time()

    @property
    def starting(self) -> bool:
        """The phone was answered while its start still goes on."""
        return "start" in self.pending.values()

    def publish(self, data: dict[str, Any]) -> None:
        """Send ``data`` to every event socket of the phone."""
        for sub in list(self.subscribers):
            sub.put(data)

    async def bounded(self, action: Awaitable[T], what: str, call: int | None = None,
                      judge: Callable[[Any], bool] | None = None) -> tuple[bool, T | None]:
        """Run ``action`` for at most :data:`ANSWER_WAIT` s of this request: ``(True, result)``
        when it finished (its exception raised here; :class:`PhoneError` when it was cancelled
        by the phone closing), else ``(False, None)`` and it goes on,
        followed (:meth:`follow`, with ``judge``). A request that is cancelled leaves it followed too."""
        task = asyncio.ensure_future(action)
        try:
            await asyncio.wait({task}, timeout=ANSWER_WAIT)
        except asyncio.CancelledError:
            self.follow(task, what, call, judge)
            raise
        if task.done():
            if task.cancelled():  # the phone was closed (DELETE, idle, shutdown) meanwhile
                raise PhoneError(f"{what}: the phone was closed meanwhile")
            return True, task.result()
        self.follow(task, what, call, judge)
        return False, None

    def follow(self, task: asyncio.Future[Any], what: str, call: int | None = None,
               judge: Callable[[Any], bool] | None = None) -> None:
        """Keep ``task`` (the phone counts as busy meanwhile, and is listed ``pending``) and
        publish ``{"event": "actionDone", "action", "call", "success", "reason"}`` when it
        ends; an exception is its reason, never raised. ``success``: ``judge(result)``, by
        default that the result is not False. Following a followed task is a no-op."""
        if task in self.pending:
            return
        self.pending[task] = what
        self.busy += 1

        def done(_: asyncio.Future[Any]) -> None:
            self.pending.pop(task, None)
            self.busy -= 1
            self.last_used = time.time()
            if task.cancelled():
                success, reason = False, "cancelled"
            elif (exc := task.exception()) is not None:
                success, reason = False, _reason(exc)
            else:
                result = task.result()
                success, reason = (judge(result) if judge is not None else result is not False), ""
            self.publish({"event": "actionDone", "time": time.time(), "action": what, "call": call,
                          "success": success, "reason": reason})

        task.add_done_callback(done)

    def follow_start(self, task: asyncio.Future[Any]) -> None:
        """The phone was answered while ``task`` (its start) goes on: when it fails the phone
        is closed and stays listed as ``failed`` with the reason until it is deleted or idle."""
        def done(_: asyncio.Future[Any]) -> None:
            if task.cancelled():
                self.failure = "start cancelled"
            elif (exc := task.exception()) is not None:
                self.failure = _reason(exc)
            if self.failure and not self.closing:
                self._closer = asyncio.get_running_loop().create_task(self._close_phone())

        task.add_done_callback(done)
        self.follow(task, "start")

    async def _close_phone(self) -> None:
        await _close_quietly(self.phone)

    def idle(self, now: float, timeout: float) -> bool:
        return (not self.busy and not self.subscribers and not self.phone.calls and not self.closing
                and now - self.last_used >= timeout)

    # -- calls on record -----------------------------------------------------------------------
    def remember(self, call: Call) -> None:
        self._calls[call.id] = call
        ended = [cid for cid, c in self._calls.items() if c not in self.phone.calls]
        for cid in ended[:max(0, len(ended) - CALLS_KEPT)]:
            del self._calls[cid]

    def calls(self) -> list[Call]:
        for call in self.phone.calls:
            if call.id not in self._calls:
                self.remember(call)
        return sorted(self._calls.values(), key=lambda c: c.id)

    def find(self, call_id: int) -> Call:
        for call in self.calls():
            if call.id == call_id:
                return call
        raise HTTPException(404, f"no call {call_id} on phone {self.id}")

    def media_events(self) -> list[dict[str, Any]]:
        """``{"event": "media", …}`` for every live call with a media stream, now."""
        now = time.time()
        out = []
        for call in list(self.phone.calls):
            report = call.media_report()
            if report is not None:
                out.append({"event": "media", "time": now, "call": call.id, "state": call.state.value,
                            "media": camel_keys(report)})
        return out

    # -- views -----------------------------------------------------------------------------------
    def registration(self) -> Registration:
        phone = self.phone
        return Registration(state=phone.registration.value, reason=getattr(phone, "registration_reason", ""),
                            expires=getattr(phone, "expires_granted", None),
                            outbound=getattr(phone, "outbound_active", False),
                            flow_timer=getattr(phone, "flow_timer", None), gruu=getattr(phone, "gruu", None),
                            temp_gruu=getattr(phone, "temp_gruu", None),
                            service_route=list(getattr(phone, "service_route", [])),
                            server_authenticated=getattr(phone, "server_authenticated", None))

    def message_waiting(self) -> MessageWaitingView:
        phone = self.phone
        subscription = getattr(phone, "mwi", None)
        last = phone.message_waiting
        return MessageWaitingView(
            subscription=subscription.state if subscription is not None else "off",
            reason=subscription.reason if subscription is not None else "",
            waiting=last.waiting if last else None, account=last.account if last else None,
            counts=message_counts(last) if last else {}, updated=phone.message_waiting_time)

    def watches(self) -> list[WatchView]:
        return [watch_view(sub) for sub in getattr(self.phone, "watches", {}).values()]

    def view(self) -> PhoneResult:
        state: PhoneState = ("closing" if self.closing else "failed" if self.failure else "starting" if self.starting
                 else "open")
        return PhoneResult(id=self.id, protocol=self.protocol, state=state, reason=self.failure,
                           pending=sorted(self.pending.values()), account=self.account,
                           registration=self.registration(), message_waiting=self.message_waiting(),
                           watches=self.watches(), calls=[CallSummary.model_validate(c.summary()) for c in self.calls()],
                           created=self.created, last_used=self.last_used,
                           events_dropped=self.phone.events_dropped)

    def call_result(self, call: Call, *, detail: bool = False) -> dict[str, Any]:
        fields = {**call.summary(), "phone": self.id}
        if detail:
            return CallDetail.model_validate({**fields, "exchange": call.exchange}).to_api()
        return CallResult.model_validate(fields).to_api()

    # -- the end ------------------------------------------------------------------------------------
    async def close(self) -> None:
        """Hang up, unregister and close the phone; end the event sockets (after the last events)."""
        self.closing = True
        for task in [*self.pending, self.register_task]:
            if task is not None:
                task.cancel()
        await self._close_phone()  # a phone that fails to close must not keep the server up
        if self._pump is not None:
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await asyncio.wait_for(self._pump, 2.0)  # events() ends once the phone is closed
        for sub in list(self.subscribers):
            sub.put(None)


class PhoneManager:
    """The phones of one app (``app.state.phone_manager``), their limit and the idle reaper."""

    def __init__(self, app: FastAPI) -> None:
        self.app = app
        self.sessions: dict[str, PhoneSession] = {}
        self.starting = 0
        self._reaper: asyncio.Task[None] | None = None

    @property
    def limit(self) -> int:
        return int(getattr(self.app.state, "phone_limit", DEFAULT_PHONE_LIMIT))

    @property
    def idle_timeout(self) -> float:
        return float(getattr(self.app.state, "phone_idle_timeout", DEFAULT_IDLE_TIMEOUT))

    def get(self, phone_id: str) -> PhoneSession:
        session = self.sessions.get(phone_id)
        if session is None:
            raise HTTPException(404, f"no phone {phone_id[:64]!r}")
        return session

    async def create(self, protocol: str, phone: Phone, account: dict[str, Any]) -> PhoneSession:
        """Start ``phone`` and keep it; 409 when the server has its limit of phones or the
        phone cannot start (it is closed again)."""
        if len(self.sessions) + self.starting >= self.limit:
            raise HTTPException(409, f"too many phones (at most {self.limit}); delete one first")
        self.starting += 1
        start = asyncio.ensure_future(phone.start())
        try:
            try:
                await asyncio.wait({start}, timeout=ANSWER_WAIT)
            except asyncio.CancelledError:  # the client went: the phone must not be left half made
                start.cancel()
                await _close_quietly(phone)
                raise
            if start.done():
                try:
                    start.result()
                except (PhoneError, SIPTransportError, OSError) as exc:
                    await _close_quietly(phone)
                    raise HTTPException(409, _reason(exc)) from exc
            phone_id = secrets.token_hex(6)
            session = PhoneSession(phone_id, protocol, phone, account)
            session.start_pump()
            if not start.done():
                session.follow_start(start)
            self.sessions[phone_id] = session
        finally:
            self.starting -= 1
        if self._reaper is None or self._reaper.done():
            self._reaper = asyncio.get_running_loop().create_task(self._reap())
        return session

    async def remove(self, session: PhoneSession) -> None:
        self.sessions.pop(session.id, None)
        await session.close()

    async def close_all(self) -> None:
        if self._reaper is not None:
            self._reaper.cancel()
        sessions = list(self.sessions.values())
        self.sessions.clear()
        await asyncio.gather(*(s.close() for s in sessions), return_exceptions=True)

    async def _reap(self) -> None:
        while self.sessions:
            timeout = self.idle_timeout
            await asyncio.sleep(min(60.0, max(0.05, timeout / 4)))
            now = time.time()
            for session in [s for s in self.sessions.values() if s.idle(now, timeout)]:
                await self.remove(session)


async def _close_quietly(phone: Phone) -> None:
    with contextlib.suppress(Exception):
        await asyncio.wait_for(phone.close(), CLOSE_TIMEOUT)


def _reason(exc: BaseException) -> str:
    return getattr(exc, "reason", None) or str(exc) or type(exc).__name__


def manager(app: FastAPI) -> PhoneManager:
    """The app's :class:`PhoneManager` (made on first use)."""
    found = getattr(app.state, "phone_manager", None)
    if found is None:
        found = app.state.phone_manager = PhoneManager(app)
    return found  # type: ignore[no-any-return]


@contextlib.asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """The app's lifespan: on shutdown every phone hangs up, unregisters and closes."""
    yield
    found = getattr(app.state, "phone_manager", None)
    if found is not None:
        await found.close_all()


@contextlib.asynccontextmanager
async def _acting(request: Request, phone_id: str, target_field: str | None = None, *,
                  act: bool = True) -> AsyncIterator[PhoneSession]:
    """The session (404 if unknown), marked in use; a refused action → 409, as is any action
    (``act``) on a phone that failed to start or is still starting."""
    session = manager(request.app).get(phone_id)
    if act and session.failure:
        raise HTTPException(409, f"the phone failed to start: {session.failure}")
    if act and session.starting:
        raise HTTPException(409, "the phone is still starting (see its registration, or wait for the "
                                 "actionDone event of start)")
    with session.in_use():
        try:
            yield session
        except PhoneError as exc:
            raise HTTPException(409, exc.reason) from exc
        except SIPParseError as exc:
            if target_field is None:
                raise HTTPException(409, exc.reason) from exc
            raise HTTPException(400, f"{target_field}: {exc.reason}") from exc
        except (SIPTransportError, OSError) as exc:
            raise HTTPException(409, _reason(exc)) from exc


def _connect_hosts(spec: Any) -> list[str]:
    """The hosts a new phone connects to: the SIP outbound proxy, else the registrar, else
    the AOR's host; the SCCP call manager. (Later connections — call targets, redirects — are
    checked by the resolver under the same policy.)"""
    if isinstance(spec, SCCPPhoneBody):
        return [spec.host]
    if isinstance(spec, SIPPhoneBody):
        server = spec.outbound_proxy or spec.registrar
        return [parse_hostport(server)[0] if server else SipURI.parse(spec.aor).host]
    return []


# -- routes -------------------------------------------------------------------------------------------
def _inlined(schema: dict[str, Any]) -> dict[str, Any]:
    """``schema`` with its local ``$defs`` references (pydantic's, for a nested model such as
    :class:`IdentitySigning`) replaced by the definitions: the operation's own schema lives
    outside ``components``, where ReDoc cannot resolve ``#/$defs/…`` (no recursion here)."""
    defs = schema.pop("$defs", {})

    def walk(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith("#/$defs/"):
                return walk({**defs[ref.removeprefix("#/$defs/")], **{k: v for k, v in node.items() if k != "$ref"}})
            return {k: walk(v) for k, v in node.items()}
        if isinstance(node, list):
            return [walk(v) for v in node]
        return node

    return walk(schema)  # type: ignore[no-any-return]


_CREATE_SCHEMA = {"requestBody": {"required": True, "content": {"application/json": {
    "schema": _inlined(SIPPhoneBody.model_json_schema(by_alias=True))}}}}


@router.post("/api/phones", status_code=201, response_model=PhoneResult, openapi_extra=_CREATE_SCHEMA)
async def create_phone(request: Request, body: Annotated[dict[str, Any], Body(include_in_schema=False)]) -> dict[str, Any]:
    """Create and start a phone (registering it unless ``register`` is false); 201 with the phone."""
    name = body.get("protocol", "sip")
    protocol = PROTOCOLS.get(name) if isinstance(name, str) else None
    if protocol is None:
        raise HTTPException(400, f"protocol: one of {', '.join(PROTOCOLS)}, not {str(name)[:40]!r}")
    if protocol.body is None or protocol.build is None or importlib.util.find_spec(protocol.module) is None:
        raise HTTPException(400, f"protocol: {name} phones are not available in this server yet")
    try:
        spec = protocol.body.model_validate(body)
    except ValidationError as exc:
        raise RequestValidationError(exc.errors()) from exc
    try:
        phone = protocol.build(spec)
    except ValueError as exc:
        raise HTTPException(400, str(exc)) from exc
    for host in _connect_hosts(spec):  # the target policy: 403 with the reason
        await check_target(host)
    public = spec.public() if hasattr(spec, "public") else {}
    session = await manager(request.app).create(name, phone, public)
    return session.view().to_api()


@router.get("/api/phones", response_model=PhoneList)
async def list_phones(request: Request) -> dict[str, Any]:
    """Every phone of this server."""
    phones = manager(request.app)
    return PhoneList(limit=phones.limit, phones=[s.view() for s in phones.sessions.values()]).to_api()


@router.get("/api/phones/{phone_id}", response_model=PhoneResult)
async def get_phone(request: Request, phone_id: str) -> dict[str, Any]:
    """The phone: account (no password), registration, calls."""
    async with _acting(request, phone_id, act=False) as session:
        return session.view().to_api()


def _pending_doc(model: type[ResultModel]) -> dict[int | str, dict[str, Any]]:
    """The OpenAPI entry of an action's 202 answer."""
    return {202: {"model": model, "description": "Not finished after ANSWER_WAIT (10 s): the action goes on "
                  "and ends with an actionDone event; the body is the state so far, success false, pending true."}}


def _pending(model: ResultModel) -> JSONResponse:
    return JSONResponse(model.to_api(), status_code=202)


@router.delete("/api/phones/{phone_id}", response_model=Done, responses=_pending_doc(Done))
async def delete_phone(request: Request, phone_id: str) -> Any:
    """Hang up every call, unregister, close the phone and its event sockets; 202 when that
    takes longer than ANSWER_WAIT (the phone is gone from the list at once either way)."""
    phones = manager(request.app)
    session = phones.get(phone_id)
    finished, _ = await session.bounded(phones.remove(session), "close")
    done = Done(success=finished, pending=not finished, id=session.id, registration=session.registration())
    return done.to_api() if finished else _pending(done)


@router.post("/api/phones/{phone_id}/register", response_model=Done, responses=_pending_doc(Done))
async def register_phone(request: Request, phone_id: str) -> Any:
    """Register now; ``success`` is whether the registrar accepted (a refusal is not an error).
    202 when the registrar has not answered within ANSWER_WAIT; a register still going on is
    joined, not repeated (RFC 3261 §10.2)."""
    async with _acting(request, phone_id) as session:
        register = getattr(session.phone, "register", None)
        if register is None:
            raise HTTPException(409, f"a {session.protocol} phone does not register on demand")
        task = session.register_task
        if task is None or task.done():
            task = session.register_task = asyncio.ensure_future(register())
        def accepted(_: object = None) -> bool:  # the state, not the result: SCCP returns RegisterReject objects
            return session.phone.registration is RegistrationState.REGISTERED

        finished, _ = await session.bounded(asyncio.shield(task), "register", judge=accepted)
        done = Done(success=finished and accepted(), pending=not finished, id=session.id,
                    registration=session.registration())
        return done.to_api() if finished else _pending(done)


@router.post("/api/phones/{phone_id}/unregister", response_model=Done, responses=_pending_doc(Done))
async def unregister_phone(request: Request, phone_id: str) -> Any:
    """Remove the phone's binding now and stop refreshing it (SIP: REGISTER with Expires 0 on
    the registration's Call-ID, RFC 3261 §10.2.2; SCCP: Unregister, reference §3.17);
    ``success`` is whether the server accepted. ``POST …/register`` registers again. 202
    when the server has not answered within ANSWER_WAIT."""
    async with _acting(request, phone_id) as session:
        finished, accepted = await session.bounded(session.phone.unregister(), "unregister")
        done = Done(success=finished and accepted is True, pending=not finished, id=session.id,
                    registration=session.registration())
        return done.to_api() if finished else _pending(done)


@router.post("/api/phones/{phone_id}/calls", status_code=201, response_model=CallResult,
             responses=_pending_doc(Done))
async def place_call(request: Request, phone_id: str, body: TargetBody) -> Any:
    """Call ``target``; 201 at once with the call (``calling``): follow it by GET or the events.
    202 (no call yet) when reaching the target's server takes longer than ANSWER_WAIT (DNS,
    a TCP/TLS connection): the call is placed when it is reached (its events follow), or
    ``actionDone`` says why not."""
    async with _acting(request, phone_id, "target") as session:
        finished, call = await session.bounded(session.phone.call(body.target), "call")
        if not finished or call is None:
            return _pending(Done(success=False, pending=True, id=session.id))
        session.remember(call)
        return session.call_result(call)


@router.get("/api/phones/{phone_id}/calls", response_model=list[CallSummary])
async def list_calls(request: Request, phone_id: str) -> list[dict[str, Any]]:
    """The phone's calls: live ones and the last ended ones, oldest first."""
    async with _acting(request, phone_id, act=False) as session:
        return [CallSummary.model_validate(c.summary()).to_api() for c in session.calls()]


@router.get("/api/phones/{phone_id}/calls/{call_id}", response_model=CallDetail)
async def get_call(request: Request, phone_id: str, call_id: int) -> dict[str, Any]:
    """The call with its media report and every signalling message (``exchange``)."""
    async with _acting(request, phone_id, act=False) as session:
        return session.call_result(session.find(call_id), detail=True)


@router.get("/api/phones/{phone_id}/calls/{call_id}/pcap", response_class=Response,
            responses={200: {"content": {"application/vnd.tcpdump.pcap": {}}, "description": "pcapng file"}})
async def call_pcap(request: Request, phone_id: str, call_id: int) -> Response:
    """The call as a pcapng file (``Content-Disposition: attachment``): its signalling and its
    RTP/RTCP both ways as IP/UDP packets with the real addresses and ports, in time order
    (:meth:`skinnysip.phone.api.Call.pcapng`). Bounded: each media stream keeps about its first
    and last minute (:class:`~skinnysip.net.media.PacketLog`). 404: unknown phone or call."""
    async with _acting(request, phone_id, act=False) as session:
        call = session.find(call_id)
        exchange, media = call.exchange, call.media_packets()  # snapshots, taken on the loop
    try:
        data = await asyncio.to_thread(exchange_to_pcapng, exchange, media)
    except PcapError as exc:
        raise HTTPException(409, f"cannot write the pcap: {exc}") from exc
    name = f"skinnysip-phone-{phone_id[:32]}-call{call.id}.pcapng"
    name = re.sub(r"[^A-Za-z0-9._-]", "_", name)
    return Response(content=data, media_type="application/vnd.tcpdump.pcap",
                    headers={"Content-Disposition": f'attachment; filename="{name}"'})


async def _call_action(request: Request, phone_id: str, call_id: int, action: Callable[[Call], Awaitable[Any]],
                       what: str, target_field: str | None = None) -> Any:
    async with _acting(request, phone_id, target_field) as session:
        call = session.find(call_id)
        finished, _ = await session.bounded(action(call), what, call.id)
        if finished:
            return session.call_result(call)
        return JSONResponse({**session.call_result(call), "success": False, "pending": True}, status_code=202)


@router.post("/api/phones/{phone_id}/calls/{call_id}/answer", response_model=CallResult, responses=_pending_doc(CallResult))
async def answer_call(request: Request, phone_id: str, call_id: int) -> Any:
    """Answer an incoming call."""
    return await _call_action(request, phone_id, call_id, lambda c: c.answer(), "answer")


@router.post("/api/phones/{phone_id}/calls/{call_id}/reject", response_model=CallResult, responses=_pending_doc(CallResult))
async def reject_call(request: Request, phone_id: str, call_id: int, body: RejectBody | None = None) -> Any:
    """Refuse an incoming call with ``code`` (default 486)."""
    code = body.code if body is not None else 486
    return await _call_action(request, phone_id, call_id, lambda c: c.reject(code), "reject")


@router.post("/api/phones/{phone_id}/calls/{call_id}/hangup", response_model=CallResult, responses=_pending_doc(CallResult))
async def hangup_call(request: Request, phone_id: str, call_id: int) -> Any:
    """End the call (CANCEL, reject or BYE as its state needs)."""
    return await _call_action(request, phone_id, call_id, lambda c: c.hangup(), "hangup")


@router.post("/api/phones/{phone_id}/calls/{call_id}/hold", response_model=CallResult, responses=_pending_doc(CallResult))
async def hold_call(request: Request, phone_id: str, call_id: int) -> Any:
    """Put the far end on hold."""
    return await _call_action(request, phone_id, call_id, lambda c: c.hold(), "hold")


@router.post("/api/phones/{phone_id}/calls/{call_id}/resume", response_model=CallResult, responses=_pending_doc(CallResult))
async def resume_call(request: Request, phone_id: str, call_id: int) -> Any:
    """Take the call off hold."""
    return await _call_action(request, phone_id, call_id, lambda c: c.resume(), "resume")


@router.post("/api/phones/{phone_id}/calls/{call_id}/mute", response_model=CallResult, responses=_pending_doc(CallResult))
async def mute_call(request: Request, phone_id: str, call_id: int) -> Any:
    """Send silence instead of our audio (a microphone's mute: RTP, RTCP and DTMF go on, the
    far end is not told — no re-INVITE). 409 unless the call is early or confirmed."""
    return await _call_action(request, phone_id, call_id, lambda c: c.mute(), "mute")


@router.post("/api/phones/{phone_id}/calls/{call_id}/unmute", response_model=CallResult, responses=_pending_doc(CallResult))
async def unmute_call(request: Request, phone_id: str, call_id: int) -> Any:
    """Send our audio again after a mute."""
    return await _call_action(request, phone_id, call_id, lambda c: c.unmute(), "unmute")


class TransferBody(TargetBody):
    replaces: int | None = Field(None, ge=1, description="Attended transfer (RFC 3891): the id of another "
                                 "confirmed call of this phone, to the target, that the transferee's call replaces.")


@router.post("/api/phones/{phone_id}/calls/{call_id}/transfer", response_model=CallResult, responses=_pending_doc(CallResult))
async def transfer_call(request: Request, phone_id: str, call_id: int, body: TransferBody) -> Any:
    """Transfer to ``target`` by REFER: blind, or attended with ``replaces`` (SIP phones);
    answers when the transfer has succeeded (or 409), or 202 after ANSWER_WAIT while the
    target has not answered yet."""

    async def act(call: Call) -> None:
        if body.replaces is None:
            await call.transfer(body.target)
            return
        if not isinstance(call, SIPCall):
            raise PhoneError("attended transfer (replaces) needs a SIP phone")
        other = call.phone.find(body.replaces)
        if not isinstance(other, SIPCall):
            raise PhoneError(f"no SIP call {body.replaces}")
        await call.transfer(body.target, replaces=other)

    return await _call_action(request, phone_id, call_id, act, "transfer", "target")


@router.post("/api/phones/{phone_id}/calls/{call_id}/dtmf", response_model=CallResult, responses=_pending_doc(CallResult))
async def dtmf_call(request: Request, phone_id: str, call_id: int, body: DTMFBody) -> Any:
    """Send ``digits``, ``duration`` ms each."""
    return await _call_action(request, phone_id, call_id, lambda c: c.send_dtmf(body.digits, body.duration / 1000), "dtmf")


@router.post("/api/phones/{phone_id}/messages", response_model=Done, responses=_pending_doc(Done))
async def send_message(request: Request, phone_id: str, body: MessageBody) -> Any:
    """Send an instant message; 200 once the far end accepted it (else 409 with its answer),
    202 when it has not answered within ANSWER_WAIT."""
    async with _acting(request, phone_id, "target") as session:
        finished, _ = await session.bounded(session.phone.message(body.target, body.text), "message")
        done = Done(success=finished, pending=not finished, id=session.id)
        return done.to_api() if finished else _pending(done)


def watch_view(sub: Any) -> WatchView:
    """A :class:`~skinnysip.phone.subscription.Subscription` of a watch, as JSON."""
    return WatchView.model_validate(sub.summary())


def _sip_only(session: PhoneSession, what: str) -> Any:
    if not hasattr(session.phone, "watch"):
        raise PhoneError(f"{what} is SIP's (an SCCP phone has no presence)")
    return session.phone


@router.post("/api/phones/{phone_id}/watches", status_code=201, response_model=WatchView)
async def add_watch(request: Request, phone_id: str, body: WatchBody) -> Any:
    """Watch ``target``'s presence (RFC 3856) or dialogs (``event`` dialog: a busy lamp, RFC
    4235): the phone subscribes, refreshes and subscribes again after failures; the NOTIFYs
    come as ``presence``/``dialogState`` events and in the phone view's ``watches``. Watching
    the same again gives the same watch. 409 for an SCCP phone or beyond the phone's limit."""
    async with _acting(request, phone_id, "target") as session:
        sub = _sip_only(session, "watching").watch(body.target, body.event)
        return watch_view(sub).to_api()


@router.delete("/api/phones/{phone_id}/watches", response_model=Done)
async def remove_watch(request: Request, phone_id: str,
                       target: str = Query(max_length=512, description="The watched target, as given."),
                       event: Literal["presence", "dialog"] = Query("presence")) -> Any:
    """Stop watching (SUBSCRIBE Expires 0 in the subscription, at most 3 s). 404 when that
    target is not watched for that event."""
    async with _acting(request, phone_id, "target") as session:
        phone = _sip_only(session, "watching")
        try:
            target = _check_target(target)
        except ValueError as exc:
            raise HTTPException(400, f"target: {exc}") from exc
        if not await phone.unwatch(target, event):
            raise HTTPException(404, f"{target} is not watched for {event}")
        return Done(pending=False, id=session.id).to_api()


@router.post("/api/phones/{phone_id}/presence", response_model=Done, responses=_pending_doc(Done))
async def publish_presence(request: Request, phone_id: str, body: PresenceBody) -> Any:
    """Publish the phone's own presence (PUBLISH with a PIDF, RFC 3903), refreshed until
    removed; 200 once the presence server accepted (else 409 with its answer), 202 when it
    has not answered within ANSWER_WAIT."""
    async with _acting(request, phone_id) as session:
        phone = _sip_only(session, "publishing presence")
        try:
            finished, _ = await session.bounded(phone.publish_presence(body.basic, note=body.note,
                                                                       activity=body.activity), "presence")
        except ValueError as exc:  # text XML 1.0 cannot carry (a lone surrogate)
            raise HTTPException(400, f"note: {exc}") from exc
        done = Done(success=finished, pending=not finished, id=session.id)
        return done.to_api() if finished else _pending(done)


@router.delete("/api/phones/{phone_id}/presence", response_model=Done)
async def unpublish_presence(request: Request, phone_id: str) -> Any:
    """Remove the phone's published presence (PUBLISH Expires 0, RFC 3903 §4.5)."""
    async with _acting(request, phone_id) as session:
        await _sip_only(session, "publishing presence").unpublish_presence()
        return Done(pending=False, id=session.id).to_api()


@router.websocket("/api/phones/{phone_id}/events")
async def phone_events(websocket: WebSocket, phone_id: str) -> None:
    """Every event of the phone from now on, one JSON text message each."""
    session = manager(websocket.app).sessions.get(phone_id)
    if session is None or session.closing:
        await websocket.accept()
        await websocket.close(code=4404, reason="no such phone")
        return
    if len(session.subscribers) >= SOCKETS_PER_PHONE:
        await websocket.accept()
        await websocket.close(code=1013, reason=f"at most {SOCKETS_PER_PHONE} event sockets per phone")
        return
    sub = _Subscriber()
    session.subscribers.add(sub)  # before accept: nothing after the handshake is missed
    client_gone: asyncio.Future[None] | None = None
    try:
        await websocket.accept()
        client_gone = asyncio.ensure_future(_until_disconnect(websocket))
        loop = asyncio.get_running_loop()
        next_media = loop.time() + MEDIA_INTERVAL
        while True:
            getter = asyncio.ensure_future(sub.queue.get())
            await asyncio.wait({getter, client_gone}, return_when=asyncio.FIRST_COMPLETED,
                               timeout=max(0.0, next_media - loop.time()))
            if client_gone.done():
                getter.cancel()
                return
            if not getter.done():
                getter.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await getter
                if getter.cancelled():
                    next_media = loop.time() + MEDIA_INTERVAL
                    for report in session.media_events():
                        await websocket.send_json(report)
                    continue
            item = getter.result()
            if item is None:
                await websocket.close(code=1000, reason="phone closed")
                return
            if sub.dropped:
                await websocket.send_json({"event": "overflow", "time": time.time(), "dropped": sub.dropped})
                sub.dropped = 0
            await websocket.send_json(item)
    except (WebSocketDisconnect, RuntimeError, OSError):
        return  # the client went away mid-send
    finally:
        session.subscribers.discard(sub)
        if client_gone is not None:
            client_gone.cancel()


async def _until_disconnect(websocket: WebSocket) -> None:
    """Read (and ignore) what the client sends until it goes."""
    with contextlib.suppress(Exception):
        while (await websocket.receive())["type"] != "websocket.disconnect":
            pass


# -- audio in the browser -------------------------------------------------------------------------
def _media_of(call: Call) -> MediaStream | None:
    """The call's media stream now (SCCP opens a new one after hold), None without one."""
    if isinstance(call, SIPCall):
        return call.media
    if isinstance(call, SCCPCall) and call.streams:
        return list(call.streams.values())[-1]
    return None


class _AudioLink:
    """One audio socket's hold on a call's media: a tap of what it plays out, and (while the
    client sends) a :class:`PushSource` in place of the stream's source. :meth:`follow` moves
    both to the call's current stream; :meth:`release` gives the stream its source back."""

    def __init__(self, call: Call) -> None:
        self.call = call
        self.media: MediaStream | None = None
        self.tap: AudioTap | None = None
        self.mic: PushSource | None = None
        self._saved_source: Any = None
        self.frames_sent = 0
        self.dropped_before = 0  # frames dropped by taps of streams left behind

    def follow(self) -> None:
        media = _media_of(self.call)
        if media is self.media and (self.tap is None or not self.tap.closed):
            return
        self._detach()
        self.media = media
        if media is None:
            return
        try:
            self.tap = media.add_tap(AUDIO_TAP_FRAMES)
        except ValueError:
            self.tap = None
        if self.mic is not None:
            self._saved_source, media.source = media.source, self.mic

    def speak(self, pcm: bytes) -> None:
        """Queue client PCM (s16le, 8000 Hz) for the call to send."""
        if self.mic is None:
            self.mic = PushSource(MIC_BUFFER, MIC_PRIME)
            if self.media is not None:
                self._saved_source, self.media.source = self.media.source, self.mic
        self.mic.feed(np.frombuffer(pcm, dtype="<i2"))

    def mute(self) -> None:
        """The client stopped its microphone: the stream sends its own source again."""
        if self.media is not None and self.mic is not None and self.media.source is self.mic:
            self.media.source = self._saved_source
        self.mic = None

    def _detach(self) -> None:
        if self.media is not None:
            if self.tap is not None:
                self.dropped_before += self.tap.dropped
                self.media.remove_tap(self.tap)
            if self.mic is not None and self.media.source is self.mic:
                self.media.source = self._saved_source
        self.media = None
        self.tap = None

    def release(self) -> None:
        self._detach()
        self.mic = None

    def stats(self) -> dict[str, Any]:
        mic = self.mic
        return {"event": "audioStats", "time": time.time(), "call": self.call.id, "framesSent": self.frames_sent,
                "framesDropped": self.dropped_before + (self.tap.dropped if self.tap is not None else 0),
                "micSamples": mic.received if mic else 0, "micDropped": mic.dropped if mic else 0,
                "micUnderruns": mic.underruns if mic else 0}


@router.websocket("/api/phones/{phone_id}/calls/{call_id}/audio")
async def call_audio(websocket: WebSocket, phone_id: str, call_id: int) -> None:
    """The call's received audio to the client and the client's microphone into the call
    (see the module docstring for the messages)."""
    session = manager(websocket.app).sessions.get(phone_id)
    call = None
    if session is not None and not session.closing:
        call = next((c for c in session.calls() if c.id == call_id), None)
    await websocket.accept()
    if session is None or call is None or call.state is CallState.TERMINATED:
        await websocket.close(code=4404, reason="no such live call")
        return
    if session.audio_sockets.get(call.id, 0) >= AUDIO_SOCKETS_PER_CALL:
        await websocket.close(code=1013, reason=f"at most {AUDIO_SOCKETS_PER_CALL} audio sockets per call")
        return
    session.audio_sockets[call.id] = session.audio_sockets.get(call.id, 0) + 1
    link = _AudioLink(call)
    reader = asyncio.ensure_future(_audio_from_client(websocket, link))
    loop = asyncio.get_running_loop()
    try:
        with session.in_use():
            await websocket.send_json({"event": "audio", "call": call.id, "format": "s16le", "rate": AUDIO_RATE,
                                       "channels": 1})
            next_stats = loop.time() + 1.0
            while not reader.done() and call.state is not CallState.TERMINATED and not session.closing:
                link.follow()
                frame = None
                if link.tap is not None and not link.tap.closed:
                    frame = await link.tap.get(0.2)
                else:  # no stream (yet, or closed: SCCP opens a new one after hold): look again soon
                    await asyncio.sleep(0.1)
                if frame is not None:
                    await websocket.send_bytes(frame.astype("<i2").tobytes())
                    link.frames_sent += 1
                if loop.time() >= next_stats:
                    next_stats = loop.time() + 1.0
                    await websocket.send_json(link.stats())
            if not reader.done():
                await websocket.send_json({**link.stats(), "event": "audioEnd",
                                           "reason": call.end_reason or "phone closed"})
                await websocket.close(code=1000, reason="call ended")
    except (WebSocketDisconnect, RuntimeError, OSError):
        return  # the client went away mid-send
    finally:
        reader.cancel()
        link.release()
        left = session.audio_sockets.pop(call.id, 1) - 1
        if left > 0:
            session.audio_sockets[call.id] = left


async def _audio_from_client(websocket: WebSocket, link: _AudioLink) -> None:
    """Microphone PCM from the client into the call until it goes; a message too long or of
    an odd length closes the socket (1009 / 1003)."""
    with contextlib.suppress(Exception):
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                return
            data = message.get("bytes")
            if data is not None:
                if len(data) > MIC_MESSAGE_BYTES or len(data) % 2:
                    await websocket.close(code=1009 if len(data) > MIC_MESSAGE_BYTES else 1003,
                                          reason=f"microphone audio: s16le, at most {MIC_MESSAGE_BYTES} bytes a message")
                    return
                link.follow()
                link.speak(data)
            elif _mic_off(message.get("text")):
                link.mute()


def _mic_off(text: str | None) -> bool:
    """Whether a client text message is ``{"mic": false}``."""
    try:
        value = json.loads(text or "")
    except ValueError:
        return False
    return isinstance(value, dict) and value.get("mic") is False
