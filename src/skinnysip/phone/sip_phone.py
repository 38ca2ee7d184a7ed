"""The SIP user agent: a softphone on the SIP core (RFC 3261 and the RFCs named below).

:class:`SIPPhone` registers an :class:`SIPAccount` (digest; the expiry the registrar grants
is honoured and refreshed before it runs out; re-registration with backoff after a failure;
unregister on close), keeps its flow alive (CRLF pings, RFC 5626 §4.4.1), places and
receives calls (:class:`SIPCall`: INVITE with an SDP offer, RFC 3264 answers, early media on
183, CANCEL, 3xx followed, a forked second 2xx ACKed and ended, hold/resume by re-INVITE,
the far end's re-INVITE/UPDATE answered, 491 glare retried, BYE both ways, DTMF by RFC 4733
or SIP INFO ``application/dtmf-relay``, blind transfer by REFER with NOTIFY ``message/sipfrag``
both ways, RFC 3515; attended transfer with ``Replaces``, RFC 3891, as transferor, transferee
and target), session timers (RFC 4028: refresh by re-INVITE at half the interval when we are
the refresher, BYE when the refresher stays silent, 422 retried once with the larger interval),
reliable provisional responses (RFC 3262) both ways: a reliable 18x to our INVITE is
acknowledged by PRACK; our 180 is sent reliably (``Require: 100rel``, ``RSeq``, retransmitted
from T1 doubling until its PRACK, the INVITE refused 504 after 64·T1 without one) when the
INVITE requires ``100rel``, or supports it and :attr:`SIPAccount.reliable_provisional` asks
for it), sends and receives MESSAGE (RFC 3428), reports a voicemail server's unsolicited
message-waiting NOTIFY (RFC 3842, :class:`~skinnysip.phone.api.MessageWaiting`) and answers OPTIONS.

Media is :class:`skinnysip.net.media.MediaStream` (RTP/RTCP, recordings, quality report).
Every call's signalling is on record (:attr:`SIPCall.exchange`). Python units: seconds.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import random
import re
import secrets
import time
import uuid
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import quote, unquote

from skinnysip import policy as target_policy
from skinnysip.addresses import hostport, is_ip, normal_host, strip_brackets
from skinnysip.net.dtls import DTLSAssociation, default_certificate
from skinnysip.net.ice import ICECredentials
from skinnysip.net.media import (
    DTLSConfig,
    ICEConfig,
    MediaConfig,
    MediaPacket,
    MediaStream,
    SRTPConfig,
    check_port_range,
)
from skinnysip.net.sip_endpoint import USER_AGENT, ClientHandle, SIPEndpoint, SIPTransportError
from skinnysip.net.sip_transport import route_ip, uri_transport
from skinnysip.net.stun import DEFAULT_TIMEOUT as STUN_TIMEOUT
from skinnysip.net.stun import StunError, parse_server
from skinnysip.net.trace import to_wire_messages
from skinnysip.phone.api import (
    Call,
    CallDirection,
    CallState,
    CallStateChanged,
    ErrorEvent,
    IncomingCall,
    MessageReceived,
    MessageWaiting,
    Phone,
    PhoneError,
    RegistrationChanged,
    RegistrationState,
)
from skinnysip.phone.publication import PresencePublication
from skinnysip.phone.subscription import (
    DialogSubscription,
    MWISubscription,
    PresenceSubscription,
    Subscription,
)
from skinnysip.result import WireMessage
from skinnysip.rtp import audio
from skinnysip.rtp.codecs import payload_types
from skinnysip.rtp.dtmf import dtmf_relay_body, parse_dtmf_relay
from skinnysip.sdp import (
    WARN_MEDIA_TYPE,
    AudioSession,
    CryptoAttribute,
    SDPParseError,
    SessionDescription,
    SRTPMode,
    SRTPRefused,
    audio_answer,
    audio_offer_for,
    check_srtp_suites,
    negotiate,
    same_family_remote,
    versioned,
    with_ice_lite,
)
from skinnysip.sip.auth import ChallengeRetry, DigestClient
from skinnysip.sip.dialog import TARGET_REFRESH, Dialog, dialog_id
from skinnysip.sip.message import Request, Response, SIPParseError, canonical_name
from skinnysip.sip.mwi import MessageSummaryError, parse_message_summary
from skinnysip.sip.reason import Reason, completed_elsewhere, describe, parse_reasons
from skinnysip.sip.request import (
    build_cancel,
    event_package,
    granted_expires,
    min_expires_retry,
    new_call_id,
    new_request,
    new_tag,
    our_binding,
    resend_request,
    warning_field,
)
from skinnysip.sip.server_transaction import InviteServerTransaction, ServerTransaction
from skinnysip.sip.syntax import parse_params, uint_or_none, unquote_string
from skinnysip.sip.transaction import Flow, Timers
from skinnysip.sip.transactions import (
    AckReceived,
    CancelReceived,
    LayerEvent,
    RequestReceived,
    ResponseReceived,
    SuccessRetransmission,
    TimedOut,
    TransportFailed,
)
from skinnysip.sip.uas import DEFAULT_ACCEPT, SESSION_ACCEPT, UASCore, is_session_body
from skinnysip.sip.uri import NameAddr, SipURI, parse_hostport, uri_of

if TYPE_CHECKING:
    from skinnysip.phone.identity import IdentityService
    from skinnysip.sip.identity import IdentityCheck

__all__ = ["MAX_WATCHES", "SIPAccount", "SIPCall", "SIPPhone", "check_instance_id", "instance_id_for"]

ALLOW = "INVITE, ACK, CANCEL, BYE, OPTIONS, INFO, UPDATE, MESSAGE, NOTIFY, REFER, PRACK"
#: body types the phone reads (RFC 3261 §20.1): the core's, RFC 3842 message summaries, PIDF
#: (RFC 3863) and dialog-info (RFC 4235) in the NOTIFYs of its watches
ACCEPT = (*DEFAULT_ACCEPT, "application/simple-message-summary", "application/pidf+xml",
          "application/dialog-info+xml")
MAX_WATCHES = 64  # presence/dialog subscriptions one phone keeps at once
SUPPORTED_UAC = "100rel, replaces, timer"  # in our INVITEs (RFC 3262, RFC 3891, RFC 4028)
SUPPORTED_UAS = "100rel, replaces, timer"  # in our 2xx to INVITE
MIN_SE = 90  # seconds, the smallest session interval RFC 4028 §5 allows on the wire
MAX_CALLS = 32
#: Seconds an incoming call rings before it is refused 480 (``SIPAccount.ring_timeout``): three
#: minutes, a proxy's Timer C (RFC 3261 §16.6 step 11: "greater than 3 minutes") and more
#: than any PBX's ring time.
RING_TIMEOUT = 180.0
#: Seconds after a failed STUN Binding during which calls use the local address at once.
STUN_RETRY_AFTER = 60.0
MAX_REDIRECTS = 3
KEEPALIVE_INTERVAL = 25.0  # default s between keep-alives (RFC 5626 §4.4.1 suggests 95-120 for TCP; NATs need less)
RECONNECT_DELAY = 0.5  # seconds before connecting again after the server's connection closed (doubling)


def media_ip_for(offer: SessionDescription, local_ip: str) -> str:
    """Our media IP for answering ``offer``: ``local_ip`` (where the INVITE came in), unless
    the offer's audio is at an IP address of the other family that this host routes to — then
    that route's local address: the answer's c= has the offer's network type (RFC 6157 §3.2,
    updating RFC 3264), so a dual-stack phone answers an IPv6 offer arriving over IPv4
    signalling (or the reverse) instead of refusing it. What :func:`same_family_remote`
    accepts for ``local_ip`` (same family, IPv4-mapped, a name) keeps ``local_ip``."""
    audio = next((m for m in offer.media if m.media == "audio" and m.port), None)
    conn = offer.connection_for(audio) if audio is not None else None
    if conn is None or conn.host in ("0.0.0.0", "::") or same_family_remote((conn.host, 0), local_ip)[1] is None:
        return local_ip
    try:
        return route_ip(strip_brackets(conn.host))
    except SIPTransportError:  # no route in that family: the answer says why (488)
        return local_ip


@dataclass
class SIPAccount:
    """A SIP account (Python units: seconds).

    ``aor``: address of record, ``sip:alice@example.com``. ``password``/``auth_user``:
    digest credentials (``auth_user`` defaults to the AOR's user). ``registrar``:
    ``host[:port]`` (default: the AOR's host). ``outbound_proxy``: ``host[:port]``, every
    request goes there with a loose route (RFC 3261 §8.1.2). Credentials answered are reused
    by every later request with the same Call-ID (refreshes, in-dialog requests, RFC 3261
    §22.3); ``proxy_realm`` names the realm of the phone's own proxy or PBX, whose
    credentials §22.3 lets a UA cache across dialogs: a new call, MESSAGE, SUBSCRIBE or
    PUBLISH then carries them at once instead of drawing a 401/407 first (as pjsua does).
    ``transport``: udp/tcp/tls, or
    ws/wss — SIP over WebSocket (RFC 7118), as a browser phone (JsSIP, SIP.js) talks to a
    WebRTC gateway: the connection to the registrar or outbound proxy (default port 80/443)
    carries every request and every request to us; ``ws_path`` is the resource its handshake
    asks for (Asterisk's ``/ws``; Kamailio and FreeSWITCH take any). ``ws_invalid_host``: over
    ws/wss, name a random ``….invalid`` host in Via and Contact instead of our address, as
    JsSIP and SIP.js do (a browser has no address to give): the server must then route
    requests to us by the connection (Kamailio's ``fix_nated_register``/``add_contact_alias``,
    Asterisk's ``rewrite_contact``), which is what this tests. ``keepalive_interval``: seconds
    between keep-alives on the registrar/proxy flow (CRLF CRLF, RFC 5626 §4.4.1; a ping frame
    on a WebSocket, whose peer must answer within 10 s or the connection counts as failed and
    the phone connects and registers again); ``ValueError`` from :meth:`SIPPhone.__init__` when
    not > 0.
    ``tls_verify``/``ca_file``: checking of the server certificate. ``expires``: the
    registration time asked for. ``register``: False for calls without a registrar.
    ``listen_host``/``listen_port``: a fixed local address (an IP literal of this host; port 0:
    any), which the phone listens on and sends every request and its media from (SIPp ``-i``,
    pjsua ``--bound-addr``; over UDP from that port too). ``auto_answer``:
    seconds after which an incoming call is answered (None: never). ``source``: what we
    send: ``"tone:440"`` (Hz), ``"silence"``, ``"echo"`` (what it hears, decoded and encoded
    again), ``"rtp-echo"`` (each received payload sent back as it came, SIPp's ``-rtp_echo``)
    or a WAV file path. ``record_dir``: WAV recordings of each call. ``dtmf``: ``"rfc4733"`` or ``"info"``. ``srtp`` (SDES keys,
    RFC 4568): ``"off"`` (plain RTP; RTP/SAVP offers refused with 488), ``"optional"`` (offer
    RTP/AVP with ``a=crypto``, plain RTP if the answer has none; accept offers with or without
    crypto) or ``"mandatory"`` (offer RTP/SAVP, the call fails if the far end refuses SRTP;
    offers without usable crypto refused with 488) or ``"dtls"`` (offer DTLS-SRTP,
    ``UDP/TLS/RTP/SAVP`` with our certificate's ``a=fingerprint``, RFC 5763/5764; the call fails
    if the far end refuses it; offers keyed either way accepted, plain ones refused with
    488). Every mode but ``"off"`` answers a DTLS-SRTP offer; a DTLS handshake that fails or
    a certificate that does not match the peer's fingerprint ends the call with a BYE that
    says so. ``srtp_suites``: the SDES crypto suites
    offered, in order, and the only ones accepted (of :data:`~skinnysip.sdp.SRTP_KEY_LENGTHS`:
    the AES-CM suites of RFC 4568 and the AES-GCM ones of RFC 7714; None: offer the two AES-CM
    ones, accept any). ``session_expires``: the session interval
    (RFC 4028) our INVITEs ask for, and that we impose on an incoming INVITE which supports
    timers but asks for none (None: ask for none; the far end's interval is honoured either
    way). ``min_se``: the smallest interval we accept; a smaller one in an incoming request is
    refused 422 (RFC 4028 §9; the RFC's floor is 90 s, lower values are for tests).
    ``soundcard``: a PortAudio device (name, index, or ``"default"``) that is the call's
    microphone and speaker (the optional ``soundcard`` extra; it replaces ``source``).
    ``codecs``: the audio codecs offered and accepted, by rtpmap name (``PCMU``, ``PCMA``,
    ``G722``, ``opus``; any case) in preference order — our offers list them in this order,
    our answers take the offer's first codec that is in the list (the offerer's preference,
    RFC 3264 §6.1), and an offer with none of them is refused 488; None: every codec
    available here, wideband first
    (:func:`skinnysip.rtp.codecs.available`). :meth:`SIPPhone.__init__` raises ``ValueError``
    for a name unknown or whose binding is missing here.
    ``reliable_provisional``: send our 180 reliably (RFC 3262) also when the INVITE only
    supports ``100rel``; when it requires ``100rel`` we always do.
    ``rtp_ports``: (first, last), the range each call's RTP/RTCP port pair is taken from (as
    baresip's ``rtp_ports``, pjsua's ``--rtp-port``; for a firewall that opens only these);
    None: any free pair. ``ValueError`` from :meth:`SIPPhone.__init__` for a range without an
    even port and its successor; a call fails (``PhoneError``) when the range has no free pair.
    ``max_calls``: calls at once at most (an INVITE beyond is answered 486 Busy Here, placing
    one more raises ``PhoneError``); ``ValueError`` from :meth:`SIPPhone.__init__` when < 1.
    ``packet_log``: keep each call's RTP/RTCP datagrams (bounded: the first and the last 1 MiB
    of each stream, :class:`~skinnysip.net.media.PacketLog`) for its pcap; False keeps none
    (a load run's thousands of calls: neither the memory nor the time per packet).
    ``inband_dtmf``: when the far end negotiated no telephone-event (RFC 4733) and sends
    none, find its digits in the received audio (Goertzel; a few µs of CPU per 20 ms frame);
    False hears RFC 4733 and SIP INFO digits only (a load run's phones, as SIPp hears none).
    ``ring_timeout``: seconds an incoming call rings unanswered before we refuse it with 480
    Temporarily Unavailable (a caller that never gives up, or a scanner's INVITE that is never
    cancelled, would otherwise hold a call slot for good); None: ring until the caller
    cancels. An INVITE's own ``Expires`` ends the ringing sooner, with 487 Request Terminated
    (RFC 3261 §13.3.1). ``ValueError`` from :meth:`SIPPhone.__init__` when ≤ 0.
    ``stun_server``: ``host[:port]`` (port 3478 by default) of a STUN server outside the NAT
    this phone is behind: each call's RTP and RTCP sockets ask it where it sees them (RFC 8489
    Binding) and the SDP gives those addresses (``a=rtcp``, RFC 3605, when the RTCP port is
    not the RTP port + 1); when it does not answer the call goes on with the local address
    and an :class:`ErrorEvent` says so. The signalling needs no STUN: the registrar's
    ``received``/``rport`` (RFC 3581) already fix our Contact. ``ValueError`` from
    :meth:`SIPPhone.__init__` for a malformed value.
    ``latch_media``: send each call's RTP (and RTCP) to where the far end's first packet came
    from when that is not where its SDP says (latching, RFC 7362 §4; Asterisk's
    ``rtp_symmetric``, FreeSWITCH's auto-adjust): a server's answer to far ends behind a NAT
    that give their private address. The target policy vets the source first.
    ``ice``: be an ICE lite agent (RFC 8445 §2.5): offers, and answers to offers with ICE, carry
    ``a=ice-lite``, our credentials and host candidates (offers also ``a=rtcp-mux``, which
    WebRTC requires); the far end's connectivity checks
    are answered on the media ports and media goes where it nominates (WebRTC gateways,
    rtpengine ``ICE=force``). Off: ICE offers are answered without ICE (RFC 8445 §5.1.1.1 then
    falls back to the SDP addresses).
    ``outbound``: SIP outbound (RFC 5626): our REGISTER's Contact carries ``+sip.instance``
    and ``reg-id=1`` and ``Supported`` lists ``outbound`` and ``path`` (§4.2.1). When the
    registrar's 2xx answers with ``Require: outbound`` the flow is an outbound flow
    (:attr:`SIPPhone.outbound_active`): keep-alives come every 80-100 % of its ``Flow-Timer``
    (else ``keepalive_interval``), a TCP/TLS flow's CRLF CRLF ping must get its CRLF pong
    within 10 s and a UDP flow's keep-alive is a STUN Binding to the registrar's SIP port whose
    mapped address must not change (§4.4.1, §4.4.2); a flow that fails either way is replaced
    and registered again at once — while the registrar does not answer, again after 0.5 s
    doubling up to the keep-alive interval; a refusal waits for the registration's own retries
    (2 s to 300 s). That is sooner than §4.5's 30 s to 30 min: a test phone should recover
    quickly. Dialog-forming requests and their 2xx carry the ``ob`` Contact URI parameter
    (§4.3, §5.4) so the dialog's requests come back on the flow. A 439 (First Hop Lacks Outbound Support, §11.5)
    is answered by registering again without outbound (:attr:`SIPPhone.outbound_refused`).
    ``gruu``: ask for GRUUs (``Supported: gruu`` with ``+sip.instance``, RFC 5627 §4.1): the
    registrar's ``pub-gruu``/``temp-gruu`` are :attr:`SIPPhone.gruu`/:attr:`SIPPhone.temp_gruu`,
    and the public one is our Contact in dialogs (§4.3), so a call to it reaches this phone only. ``instance_id``: the
    ``+sip.instance`` URN (RFC 5626 §4.1: the same across restarts; None: a new
    ``urn:uuid:`` for each :class:`SIPPhone`); ``ValueError`` from :meth:`SIPPhone.__init__`
    for one that is not a URN.
    A registrar's ``Service-Route`` (RFC 3608, as IMS S-CSCFs and some SBCs give it) is
    followed without asking: the values of its last 2xx to our REGISTER become
    :attr:`SIPPhone.service_route`, the Route of every request outside a dialog but REGISTER
    (after the outbound proxy's), and without an outbound proxy such requests go to its first
    hop.
    ``mwi``: subscribe to the mailbox's message-waiting state (SUBSCRIBE ``message-summary``,
    RFC 3842 over RFC 6665, refreshed; :mod:`skinnysip.phone.subscription`), at
    ``mwi_uri`` (default the AOR); its NOTIFYs become :class:`MessageWaiting` events. Without
    it, unsolicited NOTIFYs are still heard.
    ``watch_presence``/``watch_dialog``: targets (as :meth:`SIPPhone.call` takes them) whose
    ``presence`` (RFC 3856) or ``dialog`` (RFC 4235: a busy lamp) the phone subscribes to once
    started — :meth:`SIPPhone.watch` does it later; their NOTIFYs become
    :class:`PresenceChanged` and :class:`DialogStateChanged` events.
    STIR/SHAKEN (RFC 8224, RFC 8588; :mod:`skinnysip.phone.identity`): with ``identity_key``
    (an EC P-256 private key: a PEM file's path, or the PEM text, as every ``identity_*`` PEM)
    and ``identity_x5u`` (the public http(s) URL of its certificate) every new INVITE carries a ``Date`` and an ``Identity`` whose PASSporT says
    ``attest`` ``identity_attest`` (A, B or C), ``orig`` our AOR's telephone number (else its
    URI), ``dest`` the target's. An INVITE we are sent with an ``Identity`` is verified before
    it rings (signature, ``iat`` within 60 s, From/To numbers, certificate dates) and the
    call's :attr:`~skinnysip.phone.api.Call.identity` says what was found; the certificate
    is ``identity_certificate`` (a PEM file) when given, else — only with ``identity_fetch``,
    as the URL comes from the caller — fetched from the ``x5u``/``info`` URL (3 s, 64 KiB,
    through the target policy). ``identity_ca``: trust anchors (PEM) the certificate must
    chain to. ``identity_required``: refuse an INVITE without a verified identity with RFC
    8224's code (428 without one; 436, 437, 438, or 403 Stale Date). ``ValueError`` from
    :meth:`SIPPhone.__init__` for a file that cannot be read or used.
    """

    aor: str
    password: str | None = None
    auth_user: str | None = None
    registrar: str | None = None
    outbound_proxy: str | None = None
    proxy_realm: str | None = None
    transport: Literal["udp", "tcp", "tls", "ws", "wss"] = "udp"
    ws_path: str = "/"
    ws_invalid_host: bool = False
    keepalive_interval: float = KEEPALIVE_INTERVAL
    tls_verify: bool = True
    ca_file: str | None = None
    expires: int = 600
    display_name: str | None = None
    register: bool = True
    listen_host: str | None = None
    listen_port: int = 0
    auto_answer: float | None = None
    source: str = "tone:440"
    record_dir: str | None = None
    dtmf: Literal["rfc4733", "info"] = "rfc4733"
    srtp: SRTPMode = "off"
    session_expires: int | None = None
    min_se: int = MIN_SE
    reliable_provisional: bool = False
    soundcard: str | None = None
    codecs: tuple[str, ...] | None = None
    timeout: float = 32.0
    t1: float = 0.5
    rtp_ports: tuple[int, int] | None = None
    max_calls: int = MAX_CALLS
    packet_log: bool = True
    inband_dtmf: bool = True
    ring_timeout: float | None = RING_TIMEOUT
    stun_server: str | None = None
    latch_media: bool = False
    ice: bool = False
    mwi: bool = False
    mwi_uri: str | None = None
    watch_presence: tuple[str, ...] = ()
    watch_dialog: tuple[str, ...] = ()
    srtp_suites: tuple[str, ...] | None = None
    outbound: bool = False
    gruu: bool = False
    instance_id: str | None = None
    identity_key: str | None = None
    identity_x5u: str | None = None
    identity_attest: str = "A"
    identity_certificate: str | None = None
    identity_fetch: bool = False
    identity_ca: str | None = None
    identity_required: bool = False

    def uri(self) -> SipURI:
        """The AOR parsed; ``ValueError`` if it is not a sip/sips URI with a host."""
        try:
            uri = SipURI.parse(self.aor)
        except SIPParseError as exc:
            raise ValueError(f"aor: {exc.reason}") from exc
        if uri.scheme not in ("sip", "sips") or not uri.host:
            raise ValueError("aor: a sip: or sips: URI with a host is needed")
        return uri


def _signalling_sources(call: SIPCall) -> set[str]:
    """The far end's IP addresses as the signalling shows them; latching accepts RTP only
    from these, as a NAT sends RTP from the address it sends SIP from (the RTP bleed attack,
    a stranger's packets arriving first, wins nothing). For a call placed to us: the
    ``received`` (else sent-by) of the INVITE's last Via, the one its UA added and a proxy
    marked with the NAT's address (RFC 3261 §18.2.1), and the address it came from; for any
    call, the host of the far end's Contact."""
    sources: set[str] = set()
    if call.direction is CallDirection.INCOMING and call.invite is not None:
        with contextlib.suppress(SIPParseError):
            vias = call.invite.vias
            if vias:
                sources.add(normal_host(vias[-1].params.get("received") or vias[-1].host))
        if call.flow is not None:
            sources.add(normal_host(call.flow.remote[0]))
    if call.dialog is not None:
        with contextlib.suppress(SIPParseError):
            sources.add(normal_host(SipURI.parse(call.dialog.remote_target).host))
    return sources


def _with_ice(call: SIPCall, sdp: SessionDescription, session: AudioSession | None = None) -> SessionDescription:
    """``sdp`` (ours) as an ICE lite agent's (:func:`skinnysip.sdp.with_ice_lite`) — an offer
    (``session`` None), or an answer to an offer with ICE — with the call's credentials (made
    on first use, kept: new ones would be an ICE restart, RFC 8445 §9) and a host candidate for
    RTP and, unless muxed, RTCP, at the addresses :attr:`MediaStream.advertised` gives."""
    if call.media is None or (session is not None and (session.ice_remote is None or session.rejected)):
        return sdp
    if call.ice_local is None:
        call.ice_local = ICECredentials.new()
    ip, port, rtcp = call.media.advertised
    line = next((m for m in sdp.media if m.media == "audio" and m.port != 0), None)
    # RTCP's own candidate unless an answer accepts multiplexing: an offer of rtcp-mux may be
    # refused, and RTCP then needs its own pair (RFC 5761 §5.1.3)
    muxed = line is not None and line.attribute("rtcp-mux") is not None and session is not None
    candidates = [(1, ip, port)] + ([] if line is None or muxed else [(2, ip, rtcp)])
    return with_ice_lite(sdp, (call.ice_local.ufrag, call.ice_local.pwd), candidates)


def _with_rtcp(sdp: SessionDescription, media: MediaStream) -> SessionDescription:
    """Add ``a=rtcp`` (RFC 3605) to ``sdp``'s audio stream (its first with a port) when the RTCP
    port we give (a NAT's mapping, :attr:`MediaStream.advertised`) is not the RTP port + 1 and
    RTCP is not muxed."""
    ip, port, rtcp = media.advertised
    line = next((m for m in sdp.media if m.media == "audio" and m.port != 0), None)
    if line is not None and rtcp != port + 1 and line.attribute("rtcp-mux") is None:
        line.attributes.append(("rtcp", f"{rtcp} IN {'IP6' if ':' in ip else 'IP4'} {ip}"))
    return sdp


def _ring_limit(request: Request, ring_timeout: float | None) -> tuple[float, int, str] | None:
    """(seconds, response code, end reason) for how long an incoming INVITE may ring: its
    ``Expires`` (delta-seconds, RFC 3261 §20.19; 487 when it passes, §13.3.1) or our
    ``ring_timeout`` (480), whichever is sooner; None: no limit. A malformed Expires is ignored."""
    limits: list[tuple[float, int, str]] = []
    if ring_timeout is not None:
        limits.append((ring_timeout, 480, f"not answered within {ring_timeout:g} s"))
    value = (request.headers.get("Expires") or "").strip()
    if value.isdigit() and value.isascii():
        expires = min(int(value), 2**32 - 1)
        limits.append((float(expires), 487, f"the INVITE expired (Expires: {expires})"))
    return min(limits, key=lambda limit: limit[0]) if limits else None


def _server(field_name: str, text: str | None) -> tuple[str, int | None] | None:
    """An account's ``host[:port]`` (IPv6 in brackets) parsed once; ``ValueError`` naming the
    field when it is not one."""
    if text is None:
        return None
    try:
        return parse_hostport(text.strip())
    except SIPParseError as exc:
        raise ValueError(f"{field_name}: {exc.reason}") from exc


def instance_id_for(account: SIPAccount) -> str | None:
    """The account's ``+sip.instance`` URN (RFC 5626 §4.1), made up when it asks for outbound
    or GRUU without one; None when it asks for neither. ``ValueError`` for a non-URN."""
    if account.instance_id is None:
        return f"urn:uuid:{uuid.uuid4()}" if account.outbound or account.gruu else None
    return check_instance_id(account.instance_id)


def check_instance_id(text: str) -> str:
    """``text`` as a ``+sip.instance`` URN (RFC 5626 §4.1: ``urn:…``; no blank, control
    character or anything that would end the quoted ``"<…>"`` or the parameter), surrounding
    blanks removed. ``ValueError`` else."""
    value = text.strip()
    if not value.lower().startswith("urn:") or any(c in '<>";,' or c.isspace() or ord(c) < 32 for c in value):
        raise ValueError(f"instance_id: a URN such as urn:uuid:…, not {text!r}")
    return value


def _option_tags(message: Request | Response, name: str) -> set[str]:
    """The option tags of ``Supported``/``Require`` (lower-cased; a malformed field: none)."""
    try:
        return message.headers.option_tags(name)
    except SIPParseError:
        return set()


def _session_expires(message: Request | Response) -> tuple[int, str | None] | None:
    """``Session-Expires: delta[;refresher=uac|uas]`` (RFC 4028 §4) as (seconds, refresher),
    None when absent or malformed."""
    value = message.headers.get("Session-Expires")
    if not value:
        return None
    delta, semi, ptext = value.partition(";")
    seconds = uint_or_none(delta, 10**9 - 1)
    if not seconds:
        return None
    try:
        params = parse_params(";" + ptext) if semi else {}
    except SIPParseError:
        params = {}
    refresher = (params.get("refresher") or "").lower()
    return seconds, refresher if refresher in ("uac", "uas") else None


def _min_se(message: Request | Response) -> int | None:
    return uint_or_none((message.headers.get("Min-SE") or "").split(";")[0], 10**9 - 1)


def _rseq(response: Response) -> int | None:
    """The RSeq of a reliable provisional response (``Require: 100rel`` and ``RSeq``,
    RFC 3262 §3), else None."""
    if "100rel" not in _option_tags(response, "Require"):
        return None
    value = uint_or_none(response.headers.get("RSeq"))
    return value if value else None


def _parse_replaces(value: str) -> tuple[str, str, str, bool] | None:
    """``Replaces: call-id;to-tag=…;from-tag=…[;early-only]`` (RFC 3891 §6.1) as (Call-ID,
    to-tag, from-tag, early-only), None if malformed."""
    call_id, semi, ptext = value.strip().partition(";")
    try:
        params = parse_params(";" + ptext) if semi else {}
    except SIPParseError:
        return None
    to_tag, from_tag = params.get("to-tag"), params.get("from-tag")
    if not call_id.strip() or not to_tag or not from_tag:
        return None
    return call_id.strip(), to_tag, from_tag, "early-only" in params


class SIPCall(Call):
    """A SIP call: the INVITE dialog, its media stream and its record."""

    def __init__(self, phone: SIPPhone, direction: CallDirection, remote: str, call_id: str) -> None:
        super().__init__(direction, remote)
        self.phone = phone
        self.call_id = call_id
        self.dialog: Dialog | None = None
        self.media: MediaStream | None = None
        self.flow: Flow | None = None
        self.invite: Request | None = None  # the INVITE that made the dialog (ours or theirs)
        self.invite_tx: InviteServerTransaction | None = None
        self.offer: SessionDescription | None = None  # the last offer we sent
        self.remote_offer: SessionDescription | None = None
        self.audio: AudioSession | None = None
        self.session_id = random.getrandbits(48)
        self.to_tag: str | None = None
        self.handle: ClientHandle | None = None
        self.cancelled = False
        self._reinvite_pending = False
        self._task: asyncio.Task[None] | None = None
        self._refer_result: asyncio.Future[int] | None = None
        #: the status of the transferee's final NOTIFY for our last transfer (RFC 3515 §2.4.5's
        #: sipfrag status line); None: none yet, or the call ended before it came
        self.transfer_status: int | None = None
        self.local_sdp: SessionDescription | None = None  # the last SDP we sent (offer or answer)
        self.early_dialogs: dict[str, Dialog] = {}  # our pending INVITE's early dialogs by To tag
        #: RFC 4028: the session interval in force (seconds; None: no session timer), whether
        #: we are the refresher, and the largest Min-SE learned (from a 422)
        self.session_expires: int | None = None
        self.session_refresher = False
        self.min_se: int | None = None
        self._session_task: asyncio.Task[None] | None = None
        self._session_answer: tuple[int, bool, list[tuple[str, str]]] | None = None
        self.replaces: SIPCall | None = None  # RFC 3891: the call this incoming call replaces
        self.rseq: int | None = None  # RFC 3262: the RSeq of our reliable 180 awaiting its PRACK
        self._rel_task: asyncio.Task[None] | None = None
        self.dtls_failed = False  # a DTLS-SRTP association of the call failed (it is being ended)
        self.ice_local: ICECredentials | None = None  # our ICE credentials, kept for the call (no restart)

    # -- record ----------------------------------------------------------------------------
    @property
    def exchange(self) -> list[WireMessage]:
        ids = {self.call_id}
        return to_wire_messages(r for r in self.phone.endpoint.trace if r.call_id in ids)

    def media_packets(self) -> list[MediaPacket]:
        return self.media.packet_log.packets() if self.media is not None else []

    def _media_streams(self) -> list[MediaStream]:
        return [self.media] if self.media is not None else []

    def _announce(self, reason: str) -> None:
        self.phone.emit(CallStateChanged(self, self.state, reason))

    def media_report(self) -> dict[str, Any] | None:
        if self.media is None:
            return None
        report = self.media.report()
        if self.media.recordings:
            report["recordings"] = {kind: str(path) for kind, path in self.media.recordings.items()}
        return report

    # -- actions -----------------------------------------------------------------------------
    async def answer(self) -> None:
        self._require(CallState.INCOMING, action="answer")
        await self.phone._answer(self)

    async def reject(self, code: int = 486) -> None:
        self._require(CallState.INCOMING, action="reject")
        if not 300 <= code <= 699:
            raise PhoneError(f"reject needs a code 300-699, not {code}")
        assert self.invite_tx is not None
        self.phone._respond(self.invite_tx, code, to_tag=self.to_tag)
        await self.phone._end(self, f"rejected {code}")

    async def hangup(self) -> None:
        if self.state is CallState.TERMINATED:
            raise PhoneError(f"call {self.id} has ended")
        if self.state is CallState.INCOMING:
            await self.reject(603)
        elif self.state in (CallState.CALLING, CallState.PROCEEDING, CallState.EARLY) and self.dialog is None \
                or (self.dialog is not None and self.state is not CallState.CONFIRMED
                    and self.direction is CallDirection.OUTGOING):
            await self.phone._cancel(self)
        else:
            await self.phone._bye(self)

    async def hold(self) -> None:
        self._require(CallState.CONFIRMED, action="hold")
        if self.local_hold:
            raise PhoneError(f"call {self.id} is already on hold")
        await self.phone._reinvite(self, "sendonly")
        self.local_hold = True
        self.phone.emit(CallStateChanged(self, self.state, "on hold"))

    async def resume(self) -> None:
        self._require(CallState.CONFIRMED, action="resume")
        if not self.local_hold:
            raise PhoneError(f"call {self.id} is not on hold")
        await self.phone._reinvite(self, "sendrecv")
        self.local_hold = False
        self.phone.emit(CallStateChanged(self, self.state, "resumed"))

    async def transfer(self, target: str, *, replaces: SIPCall | None = None) -> None:
        """Transfer the far end to ``target`` by REFER (RFC 3515). With ``replaces`` (another
        confirmed call of this phone, to the target) the transfer is attended: the Refer-To
        URI carries a ``Replaces`` header naming that call's dialog (RFC 3891 §6.1, RFC 5589
        §7), so the transferee's INVITE replaces our call with the target; ``target`` may be
        empty then (the other call's remote URI is used). Raises :class:`PhoneError`."""
        self._require(CallState.CONFIRMED, action="transfer")
        if replaces is not None:
            replaces._require(CallState.CONFIRMED, action="transfer to")
            if replaces is self or replaces.phone is not self.phone or replaces.dialog is None:
                raise PhoneError("replaces must be another confirmed call of this phone")
        await self.phone._refer(self, target or (replaces.remote if replaces else ""), replaces=replaces)

    async def send_dtmf(self, digits: str, duration: float = 0.1) -> None:
        """Send ``digits`` (0-9 * # A-D), ``duration`` seconds each: as RFC 4733
        telephone-events in the call's RTP when negotiated and the account's ``dtmf`` is
        ``rfc4733``, else as SIP INFO (``application/dtmf-relay``, RFC 6086). Raises
        :class:`PhoneError` for bad digits, a call not early or confirmed, and RFC 4733
        digits the media cannot carry now: while the far end holds the call (our stream is
        ``recvonly`` or ``inactive``, RFC 3264 §5.1: we must not send RTP), an early call we
        send no media in, a duration outside 0.04–2 s, a full send queue or a deadline. The
        call is left as it was."""
        self._require(CallState.CONFIRMED, CallState.EARLY, action="send DTMF on")
        bad = [d for d in digits if d.upper() not in "0123456789*#ABCD"]
        if bad or not digits:
            raise PhoneError(f"DTMF digits are 0-9 * # A-D, not {digits!r}")
        use_info = self.phone.account.dtmf == "info" or self.audio is None or self.audio.telephone_event is None
        if not use_info and self.media is not None:
            if not self.media.sending:
                held = " (the far end holds the call)" if self.remote_hold else ""
                raise PhoneError(f"cannot send DTMF {digits!r} as RFC 4733 events: call {self.id}'s media "
                                 f"is {self.media.config.direction}{held}, so no RTP may be sent")
            try:
                await self.media.send_dtmf(digits.upper(), duration)
            except (RuntimeError, ValueError, TimeoutError) as exc:  # a bad duration, a full queue, closed, late
                raise PhoneError(f"cannot send DTMF {digits!r} as RFC 4733 events: {exc}") from None
            return
        for digit in digits.upper():
            await self.phone._info_dtmf(self, digit, int(duration * 1000))


class SIPPhone(Phone):
    """A SIP softphone for one account. ``async with SIPPhone(account) as phone``.

    Media destinations follow the target policy active where the phone is made
    (:attr:`policy`, :func:`skinnysip.policy.media_refusal`; None: any): an offer whose SDP
    ``c=`` address it refuses gets 488 with ``Warning: 399`` naming the address and rule; such an
    answer to our INVITE (in the 2xx or the ACK) or to our re-INVITE ends the call with BYE, in
    an early 18x cancels it; a re-INVITE/UPDATE moving media there gets 488 and the media stays
    (RFC 3261 §14.2). The call's ``end_reason`` says why; no RTP is sent to a refused address.
    """

    def __init__(self, account: SIPAccount) -> None:
        super().__init__()
        self.account = account
        self.aor = account.uri()
        self.registrar = _server("registrar", account.registrar)
        self.outbound_proxy = _server("outbound_proxy", account.outbound_proxy)
        #: payload types of ``account.codecs`` (None: every codec available here)
        self.codecs = payload_types(account.codecs) if account.codecs is not None else None
        #: the SDES suites offered and accepted (``account.srtp_suites``, checked; None: offer
        #: :data:`~skinnysip.sdp.SRTP_SUITES`, accept any of :data:`~skinnysip.sdp.SRTP_KEY_LENGTHS`)
        self.srtp_suites = check_srtp_suites(account.srtp_suites) if account.srtp_suites is not None else None
        if account.rtp_ports is not None:
            check_port_range(account.rtp_ports, "rtp_ports")
        if account.max_calls < 1:
            raise ValueError("max_calls: at least 1")
        if not account.keepalive_interval > 0:
            raise ValueError("keepalive_interval: seconds > 0")
        if account.ring_timeout is not None and not account.ring_timeout > 0:
            raise ValueError("ring_timeout: seconds > 0, or None")
        self._stun = parse_server(account.stun_server) if account.stun_server is not None else None
        #: the account's STIR/SHAKEN roles (:attr:`stir`), made at once when it has identity
        #: settings (a bad file is a ValueError now), else on the first INVITE with an Identity
        self._stir: IdentityService | None = None
        if _identity_settings(account):
            self._stir = self.stir
        #: our ``+sip.instance`` (RFC 5626 §4.1, RFC 5627 §4.1), None when neither outbound nor GRUU is asked for
        self.instance_id = instance_id_for(account)
        #: the registrar agreed to SIP outbound on our flow (``Require: outbound`` in its 2xx, RFC 5626 §4.2.1)
        self.outbound_active = False
        #: the registrar's ``Flow-Timer`` (seconds, RFC 5626 §4.4), None when it gave none
        self.flow_timer: int | None = None
        #: the public and temporary GRUUs the registrar gave us (RFC 5627 §4.2), or None
        self.gruu: str | None = None
        self.temp_gruu: str | None = None
        #: the registrar's service route (``Service-Route`` of its last 2xx to our REGISTER, RFC
        #: 3608 §6.1): Route values our requests outside a dialog carry after the outbound
        #: proxy's, never a REGISTER; [] without one
        self.service_route: list[str] = []
        self._service_flow: Flow | None = None  # the flow to the service route's first hop
        #: the address a STUN keep-alive last said the registrar sees our UDP flow from (RFC 5626 §4.4.2)
        self.flow_mapped: tuple[str, int] | None = None
        #: flow failures noticed (no pong, no STUN answer, a changed mapping, a closed connection)
        self.flow_failures = 0
        #: the registrar answered 439 (First Hop Lacks Outbound Support): we register without outbound
        self.outbound_refused = False
        self._registrar_answered = False  # our last REGISTER got a final response
        #: the registrar's last ``Authentication-Info`` rspauth (RFC 2617 §3.2.3): True when it
        #: proved that the registrar knows our password, False when it did not match (the phone
        #: emits an ErrorEvent), None before any registrar sent one
        self.server_authenticated: bool | None = None
        self._flow_timer_warned = False  # a malformed Flow-Timer was reported
        self._stun_down_until = 0.0  # monotonic time until which the STUN server counts as down
        self.user = self.aor.user or "skinnysip"
        self.endpoint = SIPEndpoint(timers=Timers(t1=account.t1, t2=max(4.0, account.t1)),
                                    tls_verify=account.tls_verify, ca_file=account.ca_file,
                                    uas=UASCore(supported=("100rel", "replaces", "norefersub", "timer"),
                                                allow=ALLOW.split(", "), server=USER_AGENT, accept=ACCEPT),
                                    ws_path=account.ws_path,
                                    source_ip=account.listen_host if account.listen_host and is_ip(account.listen_host)
                                    else None,
                                    # a stream's own connections cannot take the port its listener has
                                    source_port=account.listen_port if account.transport == "udp" else 0)
        if account.ws_invalid_host:
            self.endpoint.ws_host = f"{secrets.token_hex(6)}.invalid"
        self.credentials = (DigestClient(account.auth_user or self.user, account.password)
                            if account.password is not None else None)
        if self.credentials is not None and account.proxy_realm:
            self.credentials.realm_wide = frozenset({account.proxy_realm})
        self.flow: Flow | None = None
        self._server: tuple[str, int | None] | None = None  # the registrar or outbound proxy (host, port)
        self.server_name: str | None = None
        self.expires_granted: int | None = None
        self._min_expires = 0  # raised by a 423's Min-Expires
        self.registration_reason = ""
        self._reg_call_id = new_call_id()
        self._reg_tag = new_tag()
        self._reg_cseq = 0
        self._reg_lock = asyncio.Lock()
        self._bound: NameAddr | None = None  # the Contact of our last accepted registration
        self._public: tuple[str, int] | None = None  # received/rport learned (RFC 3581)
        self._reg_task: asyncio.Task[None] | None = None
        self._ka_task: asyncio.Task[None] | None = None
        #: set when the connection to the registrar/proxy closes: the keep-alive loop wakes
        self._flow_lost = asyncio.Event()
        #: the message-waiting subscription (``SIPAccount.mwi``; RFC 3842), None without one
        self.mwi: MWISubscription | None = None
        self._mwi_task: asyncio.Task[None] | None = None
        #: the watched resources (:meth:`watch`): (URI, event package) → their subscription
        self.watches: dict[tuple[str, str], Subscription] = {}
        self._watch_tasks: dict[tuple[str, str], asyncio.Task[None]] = {}
        self._unwatched: collections.deque[Subscription] = collections.deque(maxlen=16)  # their last NOTIFYs
        #: our published presence (:meth:`publish_presence`; RFC 3903), None until then
        self.publication: PresencePublication | None = None
        self._publish_task: asyncio.Task[None] | None = None
        self._remove_handler: Any = None
        self.messages: list[dict[str, str]] = []
        self._verifying: set[ServerTransaction] = set()  # INVITEs whose Identity is being checked
        #: the target policy media destinations are checked with (:mod:`skinnysip.policy`):
        #: the one active where the phone was made (the API's, for a phone it created)
        self.policy = target_policy.active()

    @property
    def stir(self) -> IdentityService:
        """The account's STIR/SHAKEN roles (:class:`~skinnysip.phone.identity.IdentityService`:
        signing our INVITEs, verifying those we get), made on first use — a phone without
        identity settings loads neither the crypto nor the HTTP client until an INVITE with an
        Identity comes."""
        if self._stir is None:
            from skinnysip.phone.identity import IdentityService

            self._stir = IdentityService.for_account(self.account)
        return self._stir

    # -- life ------------------------------------------------------------------------------
    async def start(self) -> None:
        """Open the flow to the registrar/outbound proxy (RFC 3263), listen, and register
        (waiting for the first answer). Raises :class:`PhoneError` when the server cannot
        be reached; a refused registration is an event, not an exception."""
        self.endpoint.start()
        self._remove_handler = self.endpoint.add_handler(self._on_event)
        self.endpoint.on_connection_lost = self._on_connection_lost
        acc = self.account
        if acc.listen_host or acc.listen_port:
            try:
                await self.endpoint.listen(acc.transport, acc.listen_host or "127.0.0.1", acc.listen_port)
            except SIPTransportError as exc:
                raise PhoneError(exc.reason) from exc
        server = self.outbound_proxy or self.registrar
        if server is None and acc.register:
            server = (self.aor.host, self.aor.port)
        self._server = server
        if server is not None:
            self.flow = await self._open_flow(*server, secure=self.aor.scheme == "sips")
        if acc.register and self.flow is not None:
            await self.register()  # and keeps refreshing it
        if self.flow is not None:
            self._ka_task = self._spawn(self._keepalive_loop())
        if acc.mwi:
            self.mwi = MWISubscription(self, self.target_uri(acc.mwi_uri) if acc.mwi_uri else str(self.aor))
            self._mwi_task = self._spawn(self.mwi.run())
        for package, targets in (("presence", acc.watch_presence), ("dialog", acc.watch_dialog)):
            for target in targets:
                self.watch(target, package)

    async def close(self) -> None:
        """Hang up every call, unregister, close the sockets (idempotent)."""
        if self.closed:
            return
        for call in list(self.calls):
            with contextlib.suppress(PhoneError, SIPTransportError, SIPParseError, ValueError, TimeoutError):
                await asyncio.wait_for(call.hangup(), 5)
            await self._end(call, "phone closed")
        if self._mwi_task is not None:
            self._mwi_task.cancel()
        if self.mwi is not None:
            await self.mwi.unsubscribe()
        if self.watches:
            await asyncio.gather(*(self.unwatch(sub.uri, sub.EVENT) for sub in list(self.watches.values())))
        await self.unpublish_presence()
        for task in (self._reg_task, self._ka_task):
            if task is not None:
                task.cancel()
        if self.registration is RegistrationState.REGISTERED:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.unregister(), 5)
            if self.registration is not RegistrationState.UNREGISTERED:  # closed: no binding kept, whatever was said
                self._set_registration(RegistrationState.UNREGISTERED, "unregistered")
        for task in list(self._tasks):
            task.cancel()
        self.closed = True
        if self._remove_handler is not None:
            self._remove_handler()
        await self.endpoint.close()

    async def _open_flow(self, host: str, port: int | None, *, secure: bool) -> Flow:
        """A flow to ``host`` (no brackets) and ``port`` (None: RFC 3263 decides), trying each
        located target in turn. :class:`PhoneError` when none can be reached."""
        server = hostport(host, port) if port else host
        try:
            targets = await self.endpoint.resolve(host, port=port, transport=self.account.transport,
                                                  secure=secure, timeout=10.0)
            errors = []
            for target in targets:
                try:
                    flow = await self.endpoint.flow_to(target, timeout=min(10.0, self.account.timeout),
                                                      server_name=host)
                    self.server_name = host
                    return flow
                except SIPTransportError as exc:
                    errors.append(exc.reason)
            raise PhoneError("; ".join(errors) or f"cannot reach {server}")
        except SIPTransportError as exc:
            raise PhoneError(exc.reason) from exc

    # -- registration (RFC 3261 §10) -------------------------------------------------------------
    def _contact(self, flow: Flow, *, register: bool = False) -> NameAddr:
        """Our Contact on ``flow``. ``register``: the one to bind (with ``+sip.instance`` and
        ``reg-id`` as the account asks, RFC 5626 §4.2.1, RFC 5627 §4.1). Else the one for a
        dialog: our public GRUU when the registrar gave one (RFC 5627 §4.3), with ``ob`` on an
        outbound flow (RFC 5626 §4.3, §5.4)."""
        if not register and self.gruu is not None and self.registration is RegistrationState.REGISTERED:
            uri = SipURI.parse(self.gruu)
            if self.outbound_active:
                uri.params["ob"] = None
            return NameAddr(None, uri)
        contact = self.endpoint.contact(flow, self.user, scheme="sip")
        if self._public is not None and isinstance(contact.uri, SipURI):
            contact.uri.host, contact.uri.port = self._public
        if register and self.instance_id is not None:
            contact.params["+sip.instance"] = f'"<{self.instance_id}>"'
            if self._asks_outbound():
                contact.params["reg-id"] = "1"
        elif self.outbound_active and isinstance(contact.uri, SipURI) and flow == self.flow:
            contact.uri.params["ob"] = None
        return contact

    async def _flow_for(self, uri: str) -> Flow:
        """The flow a request to ``uri`` goes on (RFC 3261 §8.1.2: where its first Route
        points): the outbound proxy's; the first hop of the registrar's service route (RFC
        3608 §6.1) when there is no outbound proxy and our flow is not an outbound one (RFC
        5626 §4.3: then requests stay on the flow); the registrar's; else one to the URI's
        own host (calls without a registrar)."""
        if self.service_route and self.outbound_proxy is None and not self.outbound_active:
            return await self._service_route_flow()
        flow = await self._server_flow()
        if flow is not None:
            return flow
        parsed = SipURI.parse(uri)
        return await self._open_flow(parsed.host, parsed.port, secure=parsed.scheme == "sips")

    async def _server_flow(self) -> Flow | None:
        """The flow to the registrar/outbound proxy (None without one), opened again when it
        was a TCP/TLS connection the server or the network has closed (RFC 3261 §18.1.1: a
        client opens a new connection when none is open). :class:`PhoneError` when that fails."""
        if self.flow is None or self._server is None or self.endpoint.transport.is_open(self.flow):
            return self.flow
        self.flow = await self._open_flow(*self._server, secure=self.aor.scheme == "sips")
        return self.flow

    def _registrar_uri(self) -> str:
        host, port = self.registrar or (self.aor.host, self.aor.port)
        return str(SipURI(self.aor.scheme, None, None, host, port))

    async def _service_route_flow(self) -> Flow:
        """The flow to the service route's first hop: the registrar's flow when that hop is
        the registrar, else a flow of the account's transport opened to it (and kept).
        :class:`PhoneError` when it cannot be reached."""
        first = NameAddr.parse(self.service_route[0]).uri
        server = await self._server_flow()
        assert isinstance(first, SipURI)  # _learn_service_route keeps SIP URIs only
        host = strip_brackets(first.host)
        default = 5061 if first.scheme == "sips" or self.account.transport in ("tls", "wss") else 5060
        if server is not None and self._server is not None and (
                (host.lower(), first.port) == (self._server[0].lower(), self._server[1])
                or (host, first.port or default) == server.remote):
            return server
        flow = self._service_flow
        if flow is not None and flow.remote == (host, first.port or default) and self.endpoint.transport.is_open(flow):
            return flow
        self._service_flow = await self._open_flow(host, first.port, secure=first.scheme == "sips")
        return self._service_flow

    def _route_set(self, *, register: bool = False) -> list[str]:
        """The Route values of a request outside a dialog (RFC 3261 §8.1.2): the outbound
        proxy's URI (loose routing), then — except in a REGISTER — the registrar's service
        route (RFC 3608 §6.1)."""
        routes = [] if register else list(self.service_route)
        if self.outbound_proxy is None:
            return routes
        host, port = self.outbound_proxy
        params: dict[str, str | None] = {"lr": None}
        if self.account.transport != "udp":
            params["transport"] = uri_transport(self.account.transport)
        return [str(NameAddr(None, SipURI("sip", None, None, host, port, params))), *routes]

    async def register(self) -> bool:
        """Register now (REGISTER with the account's expiry, digest if challenged). True
        when the registrar accepted; the state and reason are in :attr:`registration`
        and the events. :class:`PhoneError` when the phone has no registrar."""
        if self.flow is None:
            raise PhoneError("no registrar to register with")
        self._set_registration(RegistrationState.REGISTERING, "")
        accepted = await self._register_now()
        # a phone that registers by itself refreshes (also after unregister() and register())
        if self.account.register and not self.closed and (self._reg_task is None or self._reg_task.done()):
            self._reg_task = self._spawn(self._registration_loop())
        return accepted

    async def unregister(self) -> bool:
        """Remove this phone's binding now and stop refreshing it: REGISTER with ``Expires:
        0`` for our Contact on the registration's Call-ID, digest if challenged (RFC 3261
        §10.2.2; pjsua's ``ru``, baresip's ``uareg 0``). True when the registrar accepted
        (state ``unregistered``); False when it refused or did not answer (state ``failed``
        with the reason; the binding may still be there until it expires). :meth:`register`
        registers again. :class:`PhoneError` when the phone has no registrar."""
        if self.flow is None:
            raise PhoneError("no registrar to unregister from")
        task, self._reg_task = self._reg_task, None
        if task is not None:
            task.cancel()
        async with self._reg_lock:  # after a REGISTER in flight (RFC 3261 §10.2)
            try:
                accepted = await self._register_once(0)
            except (SIPTransportError, SIPParseError, ValueError) as exc:
                self._set_registration(RegistrationState.FAILED, f"unregister: {exc}")
                return False
        if not accepted:
            self._set_registration(RegistrationState.FAILED, "the registrar did not accept the unregister")
            return False
        self._bound = None
        self.service_route = []  # it was the registration's (RFC 3608 §6.1)
        self._set_registration(RegistrationState.UNREGISTERED, "unregistered")
        return True

    async def _register_now(self) -> bool:
        """One registration for the wanted expiry, never two at once: a UA sends no new
        REGISTER before the previous one's final response or timeout (RFC 3261 §10.2), so
        the refresh loop, the reconnect on the keep-alive tick and :meth:`register` queue."""
        async with self._reg_lock:
            return await self._register_once(self._expires_wanted())

    def _expires_wanted(self) -> int:
        """The expiry to ask for: the account's, raised to what a registrar's 423 named."""
        return max(self.account.expires, self._min_expires)

    async def _register_once(self, expires: int, contact: NameAddr | None = None, *,
                             brief_retry: bool = True) -> bool:
        """One REGISTER of ``contact`` (default: ours now) for ``expires`` seconds, digest if
        challenged; True on a 2xx. Updates the registration state unless ``expires`` is 0.
        A 423 (Interval Too Brief) naming a longer Min-Expires is retried once with it, and
        later registrations ask for it too (RFC 3261 §10.2.8). Every REGISTER of the
        registration's Call-ID after the first challenge carries credentials at once (§22.3:
        refreshes, the 423 retry, the unregister), so it needs no new challenge unless the
        registrar's nonce has expired."""
        flow = await self._server_flow()
        if flow is None:
            raise PhoneError("no registrar to register with")
        contact = contact or self._contact(flow, register=True)
        self._reg_cseq += 1
        request = new_request(
            "REGISTER", self._registrar_uri(), from_=self.identity(self._reg_tag), to=self.identity(), via=self.endpoint.via(flow), call_id=self._reg_call_id, cseq=self._reg_cseq,
            contact=contact, route_set=self._route_set(register=True), user_agent=USER_AGENT,
            headers=[("Expires", str(expires)), ("Allow", ALLOW), *self._register_supported()],
        )
        outcome = await self.endpoint.transact(request, flow, timeout=self.account.timeout,
                                               credentials=self.credentials)
        self._reg_cseq = outcome.request.cseq[0]
        response = outcome.response
        self._registrar_answered = response is not None
        checked = outcome.auth.server_authenticated if outcome.auth is not None else None
        if checked is not None:
            self.server_authenticated = checked
        if checked is False:
            self.emit(ErrorEvent("the registrar's Authentication-Info rspauth does not match our password: "
                                 "the 200 did not come from a server that knows it (RFC 2617 §3.2.3)"))
        if expires == 0:
            return response is not None and 200 <= response.status_code < 300
        if response is None:
            self._set_registration(RegistrationState.FAILED, outcome.error or "no response")
            return False
        longer = min_expires_retry(response, expires) if brief_retry else None
        if longer is not None:
            self._min_expires = longer
            return await self._register_once(longer, contact, brief_retry=False)
        if response.status_code == 439 and self._asks_outbound():
            # RFC 5626 §4.2.1/§11.5: the registrar does outbound but the first hop does not; a
            # registration without it (no reg-id, no "outbound" tag) still works
            self.outbound_refused = True
            self.emit(ErrorEvent(f"{response.summary}: registering without SIP outbound"))
            return await self._register_once(expires, None, brief_retry=brief_retry)
        if not 200 <= response.status_code < 300:
            reason = response.summary
            if outcome.auth is not None and outcome.auth.refused:
                reason += f" ({outcome.auth.refused})"
            self._set_registration(RegistrationState.FAILED, reason)
            return False
        granted = granted_expires(response, request, self.instance_id) or expires
        self.expires_granted = granted
        self._learn_outbound(response, request)
        self._learn_service_route(response)
        if self._learn_public(response, flow):
            # behind a NAT (RFC 3581): remove the private binding, register the public one
            await self._register_once(0, contact)
            return await self._register_once(self._expires_wanted())
        stale, self._bound = self._bound, contact
        # (with a +sip.instance the registrar replaced that binding itself: RFC 5626 §6, RFC 5627
        # §5.2; removing the old Contact by its instance would remove the new binding)
        if stale is not None and str(stale.uri) != str(contact.uri) and self.instance_id is None:
            # a new connection (or address) made a new Contact: remove the binding of the old
            # one, which nothing reaches any more, so the registrar does not fork calls there
            with contextlib.suppress(PhoneError, SIPTransportError, SIPParseError, ValueError):
                await self._register_once(0, stale)
        self._set_registration(RegistrationState.REGISTERED, response.summary, granted)
        return True

    def _asks_outbound(self) -> bool:
        return self.account.outbound and not self.outbound_refused

    def _register_supported(self) -> list[tuple[str, str]]:
        """``Supported`` of our REGISTER: ``outbound`` and ``path`` (RFC 5626 §4.2.1, RFC 3327
        §5), ``gruu`` (RFC 5627 §4.1), as the account asks."""
        tags = [*(("outbound", "path") if self._asks_outbound() else ()), *(("gruu",) if self.account.gruu else ())]
        return [("Supported", ", ".join(tags))] if tags else []

    def _learn_outbound(self, response: Response, request: Request) -> None:
        """What a REGISTER's 2xx says about SIP outbound (``Require: outbound``, ``Flow-Timer``;
        RFC 5626 §4.2.1, §4.4) and our GRUUs (``pub-gruu``/``temp-gruu`` of our Contact, RFC
        5627 §4.2; a malformed one is ignored)."""
        if self._asks_outbound():
            self.outbound_active = "outbound" in _option_tags(response, "Require")
            raw = response.headers.get("Flow-Timer") if self.outbound_active else None
            timer = uint_or_none(raw, 10**6) if raw is not None else None
            lenient = re.match(r"\s*(\d{1,6})(?!\d)", raw) if raw is not None and timer is None else None
            if lenient is not None:
                # Kamailio 5.6 sends a three-digit Flow-Timer with a NUL for its LF, so the next
                # field runs into it: read the number, say what was wrong (once)
                timer = int(lenient.group(1))
                if not self._flow_timer_warned:
                    self._flow_timer_warned = True
                    self.emit(ErrorEvent(f"the registrar's Flow-Timer {raw!r} is malformed (RFC 5626 §11.2: "
                                         f"digits only); read as {timer} s"))
            self.flow_timer = timer or None
        if not self.account.gruu:
            return
        ours = our_binding(response, request, self.instance_id)
        found: list[str | None] = []
        for name in ("pub-gruu", "temp-gruu"):
            value = unquote_string(ours.params.get(name) or "") if ours is not None else ""
            try:
                found.append(str(SipURI.parse(value)) if value else None)
            except SIPParseError:
                found.append(None)
        self.gruu, self.temp_gruu = found

    def _learn_service_route(self, response: Response) -> None:
        """The service route of a REGISTER's 2xx (RFC 3608 §6.1): its ``Service-Route``
        values in order, replacing the one before; none there clears it. A malformed value
        (not a name-addr with a SIP URI) drops the whole route, and an :class:`ErrorEvent`
        says so: a partial route would send requests past a hop the registrar asked for."""
        try:
            routes = [NameAddr.parse(v) for v in response.headers.values("Service-Route")]
            if any(not isinstance(r.uri, SipURI) or r.uri.scheme not in ("sip", "sips") for r in routes):
                raise SIPParseError("not a SIP URI")
        except SIPParseError as exc:
            self.emit(ErrorEvent(f"the registrar's Service-Route is malformed ({exc}): ignored"))
            self.service_route = []
            return
        self.service_route = [str(r) for r in routes]

    def _learn_public(self, response: Response, flow: Flow) -> bool:
        """RFC 3581: the registrar saw us at ``received``:``rport``; if that differs from
        the Contact we registered, use it (we are behind a NAT). True when it changed."""
        try:
            via = response.top_via
        except SIPParseError:
            return False
        if via is None or flow.transport != "udp":
            return False
        rport = uint_or_none(via.params.get("rport"), 65535)
        if not rport:
            return False
        # ``received`` is absent when the registrar saw our own IP (§18.2.1); the port may differ
        public = (via.params.get("received") or via.host, rport)
        local = self.endpoint.local_address(flow)
        if public == local or public == self._public:
            return False
        self._public = public
        return True

    def _set_registration(self, state: RegistrationState, reason: str, expires: int | None = None) -> None:
        if state is self.registration and state is not RegistrationState.REGISTERED:
            return
        self.registration = state
        self.registration_reason = reason
        if state is RegistrationState.REGISTERED:
            self.emit(RegistrationChanged(state, reason, expires, self.outbound_active, self.flow_timer,
                                          self.gruu, self.temp_gruu, tuple(self.service_route),
                                          self.server_authenticated))
        else:
            self.emit(RegistrationChanged(state, reason, expires))

    async def _registration_loop(self) -> None:
        """Refresh before the granted expiry runs out (half of it up to 2 min, else 60 s
        early); after a failure retry with exponential backoff (2 s … 300 s)."""
        failures = 0
        while True:
            if self.registration is RegistrationState.REGISTERED and self.expires_granted:
                granted = self.expires_granted
                wait = granted / 2 if granted <= 120 else granted - 60
                failures = 0
            else:
                failures += 1
                wait = min(300.0, 2.0 ** min(failures, 8))
            await asyncio.sleep(max(1.0, wait))
            try:
                await self._register_now()
            except (PhoneError, SIPTransportError, SIPParseError, ValueError) as exc:
                self._set_registration(RegistrationState.FAILED, str(exc))

    def _on_connection_lost(self, flow: Flow, reason: str) -> None:
        if self.flow is not None and flow.connection == self.flow.connection and not self.closed:
            self.flow_failures += 1
            self.emit(ErrorEvent(f"lost the flow to {hostport(*flow.remote)}: {reason}; registering again"
                                 if self.account.register else f"lost the flow to {hostport(*flow.remote)}: {reason}"))
            self._flow_lost.set()

    def _keepalive_wait(self) -> float:
        """Seconds to the next keep-alive: 80-100 % of the registrar's ``Flow-Timer`` on an
        outbound flow (RFC 5626 §4.4.1), else ``keepalive_interval``."""
        if self.outbound_active and self.flow_timer:
            return self.flow_timer * random.uniform(0.8, 1.0)
        return self.account.keepalive_interval

    async def _keepalive_loop(self) -> None:
        """Keep the registrar/proxy flow alive and replace it when it fails (RFC 5626 §4.4,
        §4.5; RFC 7118 §5 for a WebSocket, which nothing can connect to us again)."""
        backoff = RECONNECT_DELAY
        recovering = False  # a failed flow's registration did not succeed yet: try again soon
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._flow_lost.wait(), self._keepalive_wait())
            if self._flow_lost.is_set():  # wait a moment (longer each time it fails) before connecting
                self._flow_lost.clear()
                await asyncio.sleep(backoff)
                backoff = min(max(self.account.keepalive_interval, RECONNECT_DELAY), backoff * 2)
            if self.flow is None:
                continue
            replace_flow = recovering or not self.endpoint.transport.is_open(self.flow)
            if not replace_flow and self.outbound_active and self.flow.transport == "udp":
                replace_flow = not await self._stun_keepalive(self.flow)
            if replace_flow:
                # the server closed our connection, or the outbound flow failed: connect and
                # register again now, not at the refresh, and until it works (a phone that does
                # not register opens a connection at its next request)
                if not self.account.register:
                    continue
                self._registrar_answered = False
                try:
                    registered = await self._register_now()
                except (PhoneError, SIPTransportError, SIPParseError, ValueError) as exc:
                    self._set_registration(RegistrationState.FAILED, str(exc))
                    registered = False
                # unreachable: try again soon; refused (403…): the registration loop's slower retries
                recovering = not registered and not self._registrar_answered
                if registered:
                    backoff = RECONNECT_DELAY
                elif recovering:
                    self._flow_lost.set()  # again after the (growing) backoff
                continue
            if self.outbound_active and self.flow.transport == "udp":
                continue  # the STUN Binding above was the keep-alive
            try:
                self.endpoint.transport.send_keepalive(self.flow, expect_pong=self.outbound_active)
            except SIPTransportError as exc:
                self.emit(ErrorEvent(f"keep-alive failed: {exc.reason}"))

    async def _stun_keepalive(self, flow: Flow) -> bool:
        """An outbound UDP flow's keep-alive: a STUN Binding to the registrar's SIP port (RFC
        5626 §4.4.2). False (an :class:`ErrorEvent` says why) when it went unanswered or the
        mapped address changed — the NAT binding, hence the flow, is new."""
        try:
            mapped = await self.endpoint.transport.stun_keepalive(flow)
        except SIPTransportError as exc:
            reason = exc.reason
        else:
            before, self.flow_mapped = self.flow_mapped, mapped
            if before is None or before == mapped:
                return True
            reason = f"the flow's mapped address changed from {hostport(*before)} to {hostport(*mapped)}"
        self.flow_failures += 1
        self.emit(ErrorEvent(f"the flow to {hostport(*flow.remote)} failed: {reason}; registering again"))
        return False

    # -- outgoing calls (RFC 3261 §13.2) ------------------------------------------------------
    def identity(self, tag: str | None = None) -> NameAddr:
        """Our AOR as From (with ``tag``) or To of our requests: the account's display name and
        the AOR's URI without its parameters (RFC 3261 §8.1.1.3)."""
        uri = SipURI(self.aor.scheme, self.aor.user, None, self.aor.host, self.aor.port)
        return NameAddr(self.account.display_name, uri, {"tag": tag} if tag is not None else {})

    def target_uri(self, target: str) -> str:
        """A dial string → a Request-URI: a full sip:/sips:/tel: URI, ``user@host``, or a user
        at the AOR's domain."""
        if target.lower().startswith(("sip:", "sips:", "tel:")):
            SipURI.parse(target) if not target.lower().startswith("tel:") else None
            return target
        if "@" in target:
            return f"{self.aor.scheme}:{target}"
        return str(SipURI(self.aor.scheme, target, None, self.aor.host, self.aor.port))

    async def call(self, target: str, *, headers: list[tuple[str, str]] | None = None) -> SIPCall:
        """Place a call to ``target`` (``sip:bob@host[:port]``, ``bob@host`` or ``bob``).
        Returns at once with the call in state ``calling``; follow it with the events or
        :meth:`Call.wait_connected`. ``headers``: extra header fields for the INVITE
        (``Replaces``, ``Referred-By``…; a ``User-Agent`` replaces ours). :class:`PhoneError` for a bad target or too many calls."""
        if self.closed:
            raise PhoneError("the phone is closed")
        if len(self.calls) >= self.account.max_calls:
            raise PhoneError(f"too many calls ({self.account.max_calls})")
        try:
            uri = self.target_uri(target)
        except SIPParseError as exc:
            raise PhoneError(f"bad target {target!r}: {exc.reason}") from exc
        flow = await self._flow_for(uri)
        call = SIPCall(self, CallDirection.OUTGOING, uri, new_call_id())
        call.flow = flow
        self.calls.append(call)
        try:
            call.media = await self._open_media(call, flow)
        except (OSError, ValueError) as exc:
            self.calls.remove(call)
            raise PhoneError(f"cannot open media: {exc}") from exc
        call._task = self._spawn(self._outgoing(call, uri, headers or []))
        return call

    async def _open_media(self, call: SIPCall, flow: Flow, offer: SessionDescription | None = None) -> MediaStream:
        local_ip = self.endpoint.local_address(flow)[0]
        if offer is not None:
            local_ip = media_ip_for(offer, local_ip)
        acc = self.account
        stream = await MediaStream.open(local_ip, source=audio.source_from_spec(acc.source),
                                        record_dir=acc.record_dir, name=f"call{call.id}", echo=acc.source == "echo",
                                        echo_payload=acc.source == "rtp-echo",
                                        on_dtmf=lambda digit, duration: self._stream_dtmf(call, digit, duration),
                                        ports=acc.rtp_ports, inband_dtmf=acc.inband_dtmf)
        stream.packet_log.enabled = acc.packet_log
        stream.muted = call.muted
        stream.on_dtls = lambda component, association: self._dtls_progress(call, component, association)
        if acc.latch_media:
            policy = self.policy

            def latch_refusal(ip: str) -> str | None:
                sources = _signalling_sources(call)
                if normal_host(ip) not in sources:  # RTP bleed: a stranger's packets must not win
                    return f"{ip} is not where the call's signalling came from ({', '.join(sorted(sources))})"
                return target_policy.media_refusal(ip, policy, what="RTP source")

            stream.latch = True
            stream.latch_refusal = latch_refusal
        if acc.stun_server is not None:
            await self._map_through_stun(call, stream)
        if acc.soundcard is not None:
            from skinnysip.net.soundcard import attach

            try:
                attach(stream, acc.soundcard)
            except OSError:
                await stream.close()
                raise
        return stream

    async def _map_through_stun(self, call: SIPCall, stream: MediaStream) -> None:
        """Learn where the account's STUN server sees ``stream``'s sockets, for the SDP
        (:meth:`MediaStream.map_through_stun`). A failure (no answer, a name that does not
        resolve or that the target policy refuses, no address of the stream's family) is an
        :class:`ErrorEvent`, and the call goes on with the local address — as do the calls of
        the next :data:`STUN_RETRY_AFTER` seconds, without waiting for the server again."""
        assert self._stun is not None
        if time.monotonic() < self._stun_down_until:
            return  # it just failed: the next calls do not each wait for it again
        host, port = self._stun
        timeout = min(self.account.timeout, STUN_TIMEOUT)
        six = ":" in stream.local_ip
        try:
            if self.policy is not None:
                addresses = await self.policy.resolve(host, timeout=timeout)
            else:
                addresses = await target_policy.lookup(host, timeout=timeout)
            server = next((a for a in addresses if (":" in a) == six), None)
            if server is None:
                raise StunError(f"STUN server {host} has no IPv{6 if six else 4} address")
            await stream.map_through_stun((server, port), timeout=timeout)
        except (StunError, target_policy.TargetRefused) as exc:
            reason = exc.reason
            self._stun_down_until = time.monotonic() + STUN_RETRY_AFTER
            self.emit(ErrorEvent(f"call {call.id}: {reason}; the SDP gives the local address (and for "
                                 f"{STUN_RETRY_AFTER:g} s, without asking again)"))

    def _dtls_fingerprint(self) -> tuple[str, str] | None:
        """Our certificate's ``a=fingerprint`` (sha-256, RFC 8122) when SRTP is not off: the
        process's certificate (:func:`~skinnysip.net.dtls.default_certificate`), made on first use."""
        if self.account.srtp == "off":
            return None
        return "sha-256", default_certificate().fingerprint("sha-256")

    def _dtls_progress(self, call: SIPCall, component: str, association: DTLSAssociation) -> None:
        """A call's DTLS association connected (its media report's ``dtls`` says so) or failed:
        an :class:`ErrorEvent`, and the call ends (no SRTP keys, no media; RFC 5763 §6.6 for a
        certificate that does not match its fingerprint)."""
        if association.state == "failed" and call.state is not CallState.TERMINATED and not call.dtls_failed:
            call.dtls_failed = True  # one BYE: RTP's and RTCP's associations may both fail
            self.emit(ErrorEvent(f"call {call.id}: DTLS-SRTP on {component} failed: {association.error}"))
            self._spawn(self._bye(call, reason=f"DTLS-SRTP failed: {association.error}", cause=488))

    def _offer(self, call: SIPCall, direction: str) -> SessionDescription:
        """Our offer (a new call's, a re-INVITE's, or the one in the 200 to an offerless
        re-INVITE); the SDP version goes up only when it differs from the SDP we sent last."""
        assert call.media is not None
        a = call.audio  # a re-offer keeps the keys in use (RFC 4568 §7.1.4), and with them the SRTP index
        crypto = None
        mode = self.account.srtp
        if a is not None and a.srtp_suite is not None and a.srtp_local_key is not None:
            crypto = [CryptoAttribute(1, a.srtp_suite, a.srtp_local_key)]
            mode = "mandatory" if mode == "dtls" else mode  # keyed by SDES: re-offered as it is
        elif a is not None and a.dtls_role is not None:
            mode = "dtls"  # keyed by DTLS: re-offered with the same fingerprint (the association stays)
        ip, port, _ = call.media.advertised
        offer = _with_rtcp(audio_offer_for(ip, port, direction=direction, session_id=call.session_id,
                                           version=1, srtp=mode, crypto=crypto,
                                           codecs=self.codecs, srtp_suites=self.srtp_suites,
                                           dtls_fingerprint=self._dtls_fingerprint()), call.media)
        if self.account.ice:
            # a WebRTC peer requires RTCP multiplexing (RFC 8829 §5.1.3's "require" policy): offer
            # it (RFC 5761 §5.1.1); a peer that does not take it answers without, as before
            line = next((m for m in offer.media if m.media == "audio" and m.port != 0), None)
            if line is not None and line.attribute("rtcp-mux") is None:
                line.attributes.append(("rtcp-mux", None))
            offer = _with_ice(call, offer)
        offer = versioned(offer, call.local_sdp)  # after our first SDP: its version, + 1 if changed
        call.offer = call.local_sdp = offer
        return offer

    async def _outgoing(self, call: SIPCall, uri: str, extra: list[tuple[str, str]]) -> None:
        assert call.flow is not None
        flow = call.flow
        offer = self._offer(call, "sendrecv")
        local = self.identity(new_tag())
        headers = [("Allow", ALLOW), ("Supported", SUPPORTED_UAC)]
        if self.account.session_expires:
            headers.append(("Session-Expires", str(self.account.session_expires)))
        if self._stir is not None and not any(canonical_name(name) == "Identity" for name, _ in extra):
            headers += self._stir.sign(str(local.uri), uri)  # RFC 8224 §5
        request = new_request(
            "INVITE", uri, from_=local, to=NameAddr(None, SipURI.parse(uri) if not uri.startswith("tel:") else uri),
            via=self.endpoint.via(flow), call_id=call.call_id, cseq=1, contact=self._contact(flow),
            route_set=self._route_set(), headers=headers + extra,
            user_agent=None if any(canonical_name(name) == "User-Agent" for name, _ in extra) else USER_AGENT,
            body=offer.to_bytes(), content_type="application/sdp",
        )
        rule = ChallengeRetry(self.credentials)
        request = rule.preempt(request)  # the proxy realm's credentials (RFC 3261 §22.3), if cached
        redirects = 0
        interval_retried = False
        try:
            while True:
                call.invite = request
                final = await self._run_invite(call, request)
                if final is None:
                    return
                code = final.status_code
                if 200 <= code < 300:
                    rule.settle(request, final)  # in-dialog requests carry these credentials (§22.3)
                    return
                if code in (401, 407):
                    retried = rule.retry(request, final, self.endpoint.via(flow))
                    if retried is not None:
                        request = retried
                        continue
                    rule.settle(request, final)  # refused: cached credentials are not tried again
                if code == 422 and not interval_retried:
                    retried = self._larger_interval(call, request, final, flow)
                    if retried is not None:
                        interval_retried = True
                        rule.settle(request, final)
                        request = rule.preempt(retried)
                        continue
                if 300 <= code < 400 and redirects < MAX_REDIRECTS:
                    target = self._redirect_target(final)
                    if target is not None:
                        redirects += 1
                        call.remote = target
                        flow = call.flow = await self._flow_for(target)  # without a proxy: the new target's own server
                        request = resend_request(request, self.endpoint.via(flow), uri=target)
                        continue
                srtp_refused = code == 488 and self.account.srtp in ("mandatory", "dtls")
                await self._end(call, f"the far end refused SRTP ({final.summary})" if srtp_refused else final.summary)
                return
        except (SIPTransportError, SIPParseError, ValueError) as exc:
            await self._end(call, f"error: {getattr(exc, 'reason', exc)}")

    def _redirect_target(self, response: Response) -> str | None:
        """The best Contact of a 3xx (highest q, RFC 3261 §8.1.3.4), sip/sips only."""
        try:
            contacts = [NameAddr.parse(v) for v in response.headers.values("Contact")]
        except SIPParseError:
            return None
        usable = [c for c in contacts if isinstance(c.uri, SipURI) and c.uri.scheme in ("sip", "sips")]
        if not usable:
            return None

        def q(c: NameAddr) -> float:
            try:
                return float(c.params.get("q") or 1.0)
            except ValueError:
                return 0.0

        return str(max(usable, key=q).uri)

    def _larger_interval(self, call: SIPCall, request: Request, response: Response, flow: Flow) -> Request | None:
        """RFC 4028 §7.3: after 422 Session Interval Too Small, the INVITE again with
        ``Session-Expires`` and ``Min-SE`` at least the 422's ``Min-SE`` (new CSeq and
        branch; credentials dropped, a new challenge is answered as usual). None if the 422
        has no usable Min-SE."""
        min_se = _min_se(response)
        if min_se is None:
            return None
        call.min_se = max(call.min_se or 0, min_se)
        retried = resend_request(request, self.endpoint.via(flow))
        retried.headers.set("Session-Expires", str(max(call.min_se, self.account.session_expires or 0)))
        retried.headers.set("Min-SE", str(call.min_se))
        return retried


    async def _run_invite(self, call: SIPCall, request: Request) -> Response | None:
        """Send one INVITE and follow it to its final response. Returns the final response
        when the caller must act on it (non-2xx) or after a 2xx is handled; None when the
        call ended here."""
        assert call.flow is not None
        flow = call.flow
        handle = self.endpoint.send_request(request, flow)
        assert handle is not None
        call.handle = handle
        call.early_dialogs.clear()  # early dialogs belong to one INVITE
        rseqs: dict[str, int] = {}  # RFC 3262 §4: the last RSeq acknowledged, per early dialog
        deadline = handle.started + 300.0  # ringing at most 5 min
        while True:
            event = await handle.next_event(deadline)
            if event is None:
                if call.state is not CallState.TERMINATED:
                    await self._cancel(call)
                return None
            if isinstance(event, ResponseReceived):
                response = event.response
                code = response.status_code
                if code < 200:
                    if call.state is CallState.TERMINATED:
                        continue
                    rseq = _rseq(response) if code > 100 and response.to_tag else None
                    if rseq is not None and response.to_tag:
                        last = rseqs.get(response.to_tag)
                        if last is not None and rseq != last + 1:
                            continue  # a retransmission (or out of order): no PRACK, not processed (§4)
                        rseqs[response.to_tag] = rseq
                        self._early(call, request, response)
                        self._prack(call, request, response, rseq)
                    elif code > 100 and response.to_tag:
                        self._early(call, request, response)
                    elif call.state is CallState.CALLING:
                        self._set_state(call, CallState.PROCEEDING, response.summary)
                    if call.cancelled:
                        self.endpoint.send_request(build_cancel(request), flow)
                        call.cancelled = False  # sent once
                    continue
                if code < 300:
                    await self._answered(call, request, response, handle)
                    return response
                if call.cancelled or call.state is CallState.TERMINATED:
                    await self._end(call, "cancelled")
                    return None
                return response
            if isinstance(event, TimedOut):
                await self._end(call, f"no answer (RFC 3261 Timer {event.timer})")
                return None
            if isinstance(event, TransportFailed):
                await self._end(call, event.reason)
                return None

    def _early(self, call: SIPCall, request: Request, response: Response) -> None:
        """A 18x with a To tag: an early dialog (§12.1.2); with SDP, early media (§13.2.1)."""
        with contextlib.suppress(SIPParseError, ValueError):
            tag = response.to_tag or ""
            dialog = call.early_dialogs.get(tag)
            if dialog is None and len(call.early_dialogs) < 16:
                dialog = call.early_dialogs[tag] = Dialog.uac(request, response)
            if dialog is not None:
                call.dialog = dialog
            if response.body and call.offer is not None and call.media is not None:
                session = negotiate(call.offer, SessionDescription.parse(response.body))
                refused = self._media_refusal(session)
                if refused is not None:  # no early media there; the call is cancelled (§9.1)
                    self._set_state(call, CallState.EARLY, response.summary)
                    if not call.cancelled:
                        call.end_reason = call.end_reason or refused
                        self._spawn(self._cancel(call))
                    return
                call.audio = session
                self._apply_media(call)
        self._set_state(call, CallState.EARLY, response.summary)

    def _prack(self, call: SIPCall, invite: Request, response: Response, rseq: int) -> None:
        """RFC 3262 §7.2: PRACK a reliable provisional response in its early dialog
        (``RAck: RSeq CSeq-number INVITE``). Built now, so that CSeq follows the RSeq order;
        sent in the background (a failure is an :class:`ErrorEvent`)."""
        dialog = call.early_dialogs.get(response.to_tag or "")
        if dialog is None or call.flow is None:
            return
        flow = call.flow
        try:
            request = dialog.request("PRACK", self.endpoint.via(flow),
                                     headers=[("User-Agent", USER_AGENT), ("RAck", f"{rseq} {invite.cseq[0]} INVITE")])
        except SIPParseError as exc:
            self.emit(ErrorEvent(f"cannot PRACK {response.summary}: {exc.reason}"))
            return

        async def send() -> None:
            outcome = await self.endpoint.transact(request, flow, timeout=self.account.timeout,
                                                   credentials=self.credentials)
            dialog.local_cseq = max(dialog.local_cseq or 0, outcome.request.cseq[0])
            if outcome.response is None or not 200 <= outcome.response.status_code < 300:
                why = outcome.response.summary if outcome.response is not None else outcome.error
                self.emit(ErrorEvent(f"PRACK for {response.summary} (RSeq {rseq}): {why}"))

        self._spawn(send())

    async def _answered(self, call: SIPCall, request: Request, response: Response, handle: ClientHandle) -> None:
        """A 2xx to our INVITE: the dialog, the ACK on the route set (§13.2.2.4), the
        negotiated media. A second 2xx from another fork is ACKed and ended with BYE."""
        assert call.flow is not None
        flow = call.flow
        try:
            dialog = Dialog.from_2xx(request, response)
        except SIPParseError as exc:
            await self._end(call, f"unusable {response.summary}: {exc.reason}")
            return
        ack = dialog.ack(self.endpoint.via(flow), request)
        if call.dialog is not None and call.state is CallState.CONFIRMED and dialog.remote_tag != call.dialog.remote_tag:
            self.endpoint.send_stateless(ack, flow)  # a forked second 2xx: ACK, then BYE
            self.endpoint.send_request(dialog.bye(self.endpoint.via(flow), USER_AGENT), flow)
            return
        early = call.early_dialogs.get(dialog.remote_tag)
        if early is not None and early.local_cseq:  # PRACKs used CSeq numbers of this dialog
            dialog.local_cseq = max(dialog.local_cseq or 0, early.local_cseq)
        call.dialog = dialog
        self.endpoint.send_stateless(ack, flow)

        def re_ack(event: Any) -> None:  # 2xx retransmissions (RFC 6026 Accepted)
            if isinstance(event, ResponseReceived) and 200 <= event.response.status_code < 300:
                if event.response.to_tag == dialog.remote_tag:
                    with contextlib.suppress(SIPTransportError):
                        self.endpoint.send_stateless(ack, flow, "re-ACK")
                else:
                    self._spawn(self._answered(call, request, event.response, handle))

        call.ack = ack  # type: ignore[attr-defined]
        handle.set_listener(re_ack)
        if call.cancelled:  # CANCEL crossed the 200: the call is up, end it (§9.1)
            await self._bye(call)
            return
        if response.body and call.offer is not None:
            try:
                session = negotiate(call.offer, SessionDescription.parse(response.body))
            except (SDPParseError, ValueError) as exc:
                self._set_state(call, CallState.CONFIRMED, response.summary)
                await self._bye(call, reason=str(exc) if isinstance(exc, SRTPRefused) else f"bad SDP answer: {exc}",
                                cause=488)
                return
            refused = self._media_refusal(session)
            if refused is not None:  # the answer aims our RTP where the policy forbids: hang up
                self._set_state(call, CallState.CONFIRMED, response.summary)
                await self._bye(call, reason=refused, cause=488)
                return
            call.audio = session
            self._apply_media(call)
        self._set_state(call, CallState.CONFIRMED, response.summary)
        self._session_from_response(call, response)

    def _media_refusal(self, session: AudioSession | None) -> str | None:
        """Why the phone's target policy forbids sending RTP or RTCP where ``session`` says (the
        SDP ``c=``/``m=`` address of the far end, its ``a=rtcp`` one), or None
        (:func:`skinnysip.policy.media_refusal`)."""
        if session is None or session.remote is None:
            return None
        refused = target_policy.media_refusal(session.remote[0], self.policy, what="SDP c= address")
        if refused is None and session.remote_rtcp is not None:
            refused = target_policy.media_refusal(session.remote_rtcp[0], self.policy, what="SDP a=rtcp address")
        return refused

    def _apply_media(self, call: SIPCall) -> None:
        if call.media is None or call.audio is None:
            return
        a = call.audio
        refused = self._media_refusal(a)
        if refused is not None:  # every caller checked already: the last line of defence
            self.emit(ErrorEvent(f"call {call.id}: {refused}: no media sent"))
            return
        call.remote_hold = a.direction in ("recvonly", "inactive") and not call.local_hold
        dtls = DTLSConfig(a.dtls_role, a.dtls_fingerprints) if a.dtls_role is not None else None
        ice = ICEConfig(call.ice_local, a.ice_remote[0]) \
            if self.account.ice and call.ice_local is not None and a.ice_remote is not None else None
        call.media.apply(MediaConfig(payload_type=a.payload_type, ptime=a.ptime, telephone_event=a.telephone_event,
                                     direction=a.direction, remote=a.remote, rtcp_mux=a.rtcp_mux,
                                     remote_rtcp=a.remote_rtcp, srtp=None if dtls else SRTPConfig.from_audio(a),
                                     dtls=dtls, ice=ice))

    async def _cancel(self, call: SIPCall) -> None:
        """CANCEL our pending INVITE (§9.1); the 487 ends the call. Before any provisional
        response, the CANCEL waits for one (§9.1: it must not be sent before)."""
        if call.invite is None or call.flow is None:
            await self._end(call, "cancelled")
            return
        call.cancelled = True
        if call.state in (CallState.PROCEEDING, CallState.EARLY):
            with contextlib.suppress(SIPTransportError, ValueError):
                self.endpoint.send_request(build_cancel(call.invite), call.flow)
                call.cancelled = True
        if not await call.wait_ended(8.0):
            await self._end(call, "cancelled")

    # -- incoming calls (RFC 3261 §13.3) ------------------------------------------------------
    def _respond(self, tx: ServerTransaction, code: int, *, to_tag: str | None = None, body: bytes = b"",
                 headers: list[tuple[str, str]] | None = None, flow: Flow | None = None,
                 reason: str | None = None) -> None:
        contact = self._contact(flow or self.flow or tx.flow) if (code < 300 and tx.flow) else None  # type: ignore[arg-type]
        if code >= 200:  # a final response ends our reliable 180's retransmission (RFC 3262 §3);
            # the 180 stays unacknowledged: a PRACK for it arriving after the 2xx still gets 200
            for call in self.calls:
                if isinstance(call, SIPCall) and call.invite_tx is tx and call._rel_task is not None:
                    if call._rel_task is not asyncio.current_task():
                        call._rel_task.cancel()
        with contextlib.suppress(ValueError, SIPParseError, SIPTransportError):
            self.endpoint.respond(tx, code, to_tag=to_tag, body=body, headers=headers or [],
                                  content_type="application/sdp" if body else None, contact=contact, reason=reason)

    def _incoming(self, event: RequestReceived) -> None:
        request, tx = event.request, event.transaction
        assert isinstance(tx, InviteServerTransaction)
        if len(self.calls) + len(self._verifying) >= self.account.max_calls or self.closed:
            self._respond(tx, 486, to_tag=new_tag())  # INVITEs being verified hold a call slot too
            return
        if self._session_too_small(request):  # RFC 4028 §9
            self._respond(tx, 422, to_tag=new_tag(), headers=[("Min-SE", str(self.account.min_se))])
            return
        if not is_session_body(request):  # RFC 3261 §8.2.3
            self._respond(tx, 415, to_tag=new_tag(), headers=[SESSION_ACCEPT])
            return
        if request.headers.get_all("Identity") or (self._stir is not None and self._stir.required):
            self._verifying.add(tx)  # a CANCEL meanwhile is answered (see _on_event)
            self._spawn(self._verified_incoming(event))
            return
        self._ring(event)

    async def _verified_incoming(self, event: RequestReceived) -> None:
        """Verify the INVITE's ``Identity`` (RFC 8224 §6.2: the certificate may have to be
        fetched; the transaction's 100 Trying covers the wait), then ring or — when an
        identity is required and this one does not verify — refuse it with RFC 8224's code."""
        request, tx = event.request, event.transaction
        assert isinstance(tx, InviteServerTransaction)
        try:
            check = await self.stir.verify(request)
        finally:
            self._verifying.discard(tx)
        if tx.final:  # cancelled meanwhile (487 sent)
            return
        refusal = self.stir.refusal(check)
        if refusal is not None:
            from skinnysip.sip.identity import STALE_DATE, STALE_DATE_PHRASE, stir_reason

            why = check.reason if check is not None else "no Identity header"
            stir = [("Reason", stir_reason(check))] if check is not None else []
            self._respond(tx, refusal, to_tag=new_tag(), headers=[warning_field(why), *stir],
                          reason=STALE_DATE_PHRASE if refusal == STALE_DATE else None)
            caller = uri_of(request.headers.get("From")) or "unknown"
            self.emit(ErrorEvent(f"INVITE from {caller} refused {refusal}: {why}"))
            return
        if len(self.calls) >= self.account.max_calls or self.closed:
            self._respond(tx, 486, to_tag=new_tag())
            return
        self._ring(event, check)

    def _ring(self, event: RequestReceived, identity: IdentityCheck | None = None) -> None:
        """Take an INVITE that passed the phone's checks: a new incoming call, ringing."""
        request, tx = event.request, event.transaction
        assert isinstance(tx, InviteServerTransaction)
        replaced: SIPCall | None = None
        if request.headers.get_all("Replaces"):
            found = self._replaced_call(request)
            if isinstance(found, int):
                self._respond(tx, found, to_tag=new_tag())
                return
            replaced = found
        remote = uri_of(request.headers.get("From")) or "unknown"
        call = SIPCall(self, CallDirection.INCOMING, remote, request.call_id or "")
        call.invite = request
        call.invite_tx = tx
        call.flow = event.flow
        call.to_tag = new_tag()
        call.replaces = replaced
        call.identity = identity
        call._session_answer = self._session_for_request(request)
        if request.body:
            try:
                call.remote_offer = SessionDescription.parse(request.body)
            except SDPParseError:
                self._respond(tx, 400, to_tag=call.to_tag)
                return
            refused = target_policy.sdp_media_refusal(call.remote_offer, self.policy)
            if refused is not None:  # 488 Not Acceptable Here (RFC 3261 §21.4.26) with the reason
                self._respond(tx, 488, to_tag=call.to_tag, headers=[warning_field(refused)])
                self.calls.append(call)
                self._spawn(self._end(call, f"488 {refused}"))
                return
        self.calls.append(call)
        offered = _option_tags(request, "Supported") | _option_tags(request, "Require")
        # an identity that did not verify, the call going on: its reason goes back upstream in
        # our first response after the 100 (RFC 9410 §3: Reason with the STIR protocol)
        stir: list[tuple[str, str]] = []
        if identity is not None and not identity.verified:
            from skinnysip.sip.identity import stir_reason

            stir = [("Reason", stir_reason(identity))]
        if "100rel" in _option_tags(request, "Require") or (
                self.account.reliable_provisional and "100rel" in offered):
            call.rseq = random.randint(1, 2**31 - 1)  # RFC 3262 §3
            ringing = [("Require", "100rel"), ("RSeq", str(call.rseq)), *stir]
            self._respond(tx, 180, to_tag=call.to_tag, flow=event.flow, headers=ringing)
            call._rel_task = self._spawn(self._retransmit_reliable(call, tx, ringing))
        else:
            self._respond(tx, 180, to_tag=call.to_tag, flow=event.flow, headers=stir)
        with contextlib.suppress(SIPParseError, ValueError):
            call.dialog = Dialog.uas(request, call.to_tag, early=True)
        self.emit(IncomingCall(call))
        if replaced is not None:  # RFC 3891 §3: the replacing call is answered at once
            self._spawn(self._auto_answer(call, 0.0))
        elif self.account.auto_answer is not None:
            self._spawn(self._auto_answer(call, self.account.auto_answer))
        limit = _ring_limit(request, self.account.ring_timeout)
        if limit is not None:
            self._spawn(self._ring_expiry(call, *limit))

    async def _ring_expiry(self, call: SIPCall, seconds: float, code: int, reason: str) -> None:
        """Refuse ``call`` with ``code`` if it still rings after ``seconds``."""
        await asyncio.sleep(seconds)
        if call.state is CallState.INCOMING and call.invite_tx is not None:
            self._respond(call.invite_tx, code, to_tag=call.to_tag)
            await self._end(call, reason)

    async def _retransmit_reliable(self, call: SIPCall, tx: InviteServerTransaction,
                                   headers: list[tuple[str, str]]) -> None:
        """RFC 3262 §3: the reliable 180 again after T1, doubling, until its PRACK arrives
        or the INVITE ends; no PRACK within 64·T1 refuses the INVITE with 504."""
        interval, waited, limit = self.account.t1, 0.0, 64 * self.account.t1
        while waited + interval <= limit:
            await asyncio.sleep(interval)
            waited += interval
            if call.rseq is None or call.state is not CallState.INCOMING:
                return
            self._respond(tx, 180, to_tag=call.to_tag, flow=call.flow, headers=headers)
            interval *= 2
        await asyncio.sleep(max(0.0, limit - waited))
        if call.rseq is not None and call.state is CallState.INCOMING:
            call.rseq = None
            self._respond(tx, 504, to_tag=call.to_tag)
            await self._end(call, "no PRACK for our reliable 180 (RFC 3262 §3)")

    def _prack_received(self, call: SIPCall, tx: ServerTransaction, request: Request) -> None:
        """RFC 3262 §3: a PRACK whose ``RAck`` (RSeq, CSeq number, method) names our
        unacknowledged reliable 180 stops its retransmission and gets 200 — also when it
        crosses our 2xx (answered at once, the PRACK arrives after it); any other 481."""
        rack = (request.headers.get("RAck") or "").split()
        invite = call.invite
        matches = (len(rack) == 3 and call.rseq is not None and invite is not None
                   and rack[0] == str(call.rseq) and rack[2].upper() == "INVITE"
                   and rack[1] == str(invite.cseq[0]))
        if not matches:
            self.endpoint.respond(tx, 481)
            return
        call.rseq = None
        if call._rel_task is not None:
            call._rel_task.cancel()
        self.endpoint.respond(tx, 200)

    def _replaced_call(self, request: Request) -> SIPCall | int:
        """RFC 3891 §3: the call whose dialog the INVITE's ``Replaces`` names (Call-ID, our
        tag as to-tag, the far end's as from-tag), or the status to refuse it with: 400 for
        a malformed or repeated header, 481 when no dialog matches or it is an early dialog
        we did not start (a call ringing here), 486 for ``early-only`` and a confirmed one,
        603 when it has ended."""
        values = request.headers.get_all("Replaces")
        parsed = _parse_replaces(values[0]) if len(values) == 1 else None
        if parsed is None:
            return 400
        call_id, to_tag, from_tag, early_only = parsed
        for call in self.calls:
            if not isinstance(call, SIPCall) or call.call_id != call_id:
                continue
            dialogs = [call.dialog, *call.early_dialogs.values()] if call.dialog else list(call.early_dialogs.values())
            if not any(d.local_tag == to_tag and d.remote_tag == from_tag for d in dialogs if d is not None):
                continue
            if call.state is CallState.TERMINATED:
                return 603
            if call.state is CallState.CONFIRMED:
                return 486 if early_only else call
            return call if call.direction is CallDirection.OUTGOING else 481
        return 481

    async def _auto_answer(self, call: SIPCall, delay: float) -> None:
        await asyncio.sleep(delay)
        if call.state is CallState.INCOMING:
            with contextlib.suppress(PhoneError):
                await call.answer()

    async def _answer(self, call: SIPCall) -> None:
        """200 with the SDP answer (or, to an offerless INVITE, our offer, answered in the
        ACK, RFC 3261 §13.2.1); the call is confirmed by the ACK (§13.3.1.4)."""
        assert call.invite_tx is not None and call.flow is not None and call.invite is not None
        try:
            call.media = await self._open_media(call, call.flow, call.remote_offer)
        except (OSError, ValueError) as exc:
            self._respond(call.invite_tx, 500, to_tag=call.to_tag)
            await self._end(call, f"cannot open media: {exc}")
            raise PhoneError(f"cannot open media: {exc}") from exc
        if call.state is not CallState.INCOMING:  # cancelled meanwhile
            await call.media.close()
            raise PhoneError(f"call {call.id} is {call.state.value}")
        if call.remote_offer is not None:
            try:
                ip, port, _ = call.media.advertised
                answer, session = audio_answer(call.remote_offer, ip, port, session_id=call.session_id,
                                               srtp=self.account.srtp, codecs=self.codecs,
                                               srtp_suites=self.srtp_suites,
                                               dtls_fingerprint=self._dtls_fingerprint())
                _with_rtcp(answer, call.media)
                if self.account.ice:
                    _with_ice(call, answer, session)
            except ValueError:
                self._respond(call.invite_tx, 488, to_tag=call.to_tag,
                              headers=[warning_field("no audio stream offered", WARN_MEDIA_TYPE)])
                await self._end(call, "488 no audio offered")
                return
            if session.rejected:  # 488 with the reason (RFC 3261 §21.4.26, §20.43)
                self._respond(call.invite_tx, 488, to_tag=call.to_tag,
                              headers=[warning_field(session.refusal, session.refusal_code)] if session.refusal else [])
                await self._end(call, f"488 {session.refusal or 'no common codec'}")
                return
            call.audio = session
            call.local_sdp = answer
            body = answer.to_bytes()
        else:
            body = self._offer(call, "sendrecv").to_bytes()
        timer = call._session_answer
        self._respond(call.invite_tx, 200, to_tag=call.to_tag, body=body, flow=call.flow,
                      headers=[("Supported", SUPPORTED_UAS), *(timer[2] if timer else [])])
        if call.dialog is not None:
            call.dialog.confirm()
        self._set_session_timer(call, timer)
        self._apply_media(call)

    def _acked(self, call: SIPCall, ack: Request) -> None:
        if ack.body and call.offer is not None and call.audio is None:
            refused: str | None
            try:
                session = negotiate(call.offer, SessionDescription.parse(ack.body))
            except (SDPParseError, ValueError) as exc:  # no media we may send: BYE, saying why
                refused = str(exc) if isinstance(exc, SRTPRefused) else f"bad SDP answer in the ACK: {exc}"
            else:
                refused = self._media_refusal(session)  # the answer aims RTP where the policy forbids
            if refused is not None:
                if call.state is CallState.INCOMING:
                    self._set_state(call, CallState.CONFIRMED, "ACK")
                self._spawn(self._bye(call, refused, cause=488))
                return
            call.audio = session
            self._apply_media(call)
        if call.state is CallState.INCOMING:
            self._set_state(call, CallState.CONFIRMED, "ACK")
            if call.replaces is not None:
                self._spawn(self._end_replaced(call.replaces))

    async def _end_replaced(self, old: SIPCall) -> None:
        """RFC 3891 §3: once the replacing call is up, the replaced one ends: BYE when it
        was confirmed, CANCEL when it was our INVITE still ringing."""
        old.end_reason = old.end_reason or "replaced (RFC 3891)"
        if old.state is CallState.CONFIRMED:
            await self._bye(old, "replaced (RFC 3891)")
        elif old.state is not CallState.TERMINATED:
            with contextlib.suppress(PhoneError):
                await old.hangup()

    # -- in-dialog requests we send ------------------------------------------------------------
    def _in_dialog(self, call: SIPCall, method: str, *, body: bytes = b"", content_type: str | None = None,
                   headers: list[tuple[str, str]] | None = None) -> Request:
        """A request in ``call``'s dialog (RFC 3261 §12.2.1.1); a target refresh request
        (re-INVITE, UPDATE, REFER, and NOTIFY: RFC 6665 §4.4.1 makes it one, RFC 3265 §7.1
        a Contact mandatory in it) carries ours."""
        assert call.dialog is not None and call.flow is not None
        return call.dialog.request(method, self.endpoint.via(call.flow), body=body, content_type=content_type,
                                   headers=[("User-Agent", USER_AGENT), *(headers or [])],
                                   contact=self._contact(call.flow) if method in TARGET_REFRESH else None)

    async def _transact(self, call: SIPCall, request: Request) -> Response | None:
        assert call.flow is not None
        outcome = await self.endpoint.transact(request, call.flow, timeout=self.account.timeout,
                                               credentials=self.credentials)
        if call.dialog is not None:
            call.dialog.local_cseq = max(call.dialog.local_cseq or 0, outcome.request.cseq[0])
        return outcome.response

    async def _bye(self, call: SIPCall, reason: str = "BYE sent", cause: int | None = None) -> None:
        """End ``call`` with a BYE (``reason``: its end reason here). ``cause``: a SIP status
        code that says why we hang up when it is a failure — the BYE then carries ``Reason:
        SIP;cause=<cause>;text="<reason>"`` (RFC 3326 §2), so the far end and its CDRs see it."""
        if call.dialog is None or call.flow is None:
            await self._end(call, reason)
            return
        headers = [("Reason", Reason("SIP", cause, reason[:120]).header_value())] if cause is not None else None
        request = self._in_dialog(call, "BYE", headers=headers)
        await self._end(call, reason)
        with contextlib.suppress(SIPTransportError, ValueError):
            await self._transact(call, request)

    async def _info_dtmf(self, call: SIPCall, digit: str, duration_ms: int) -> None:
        request = self._in_dialog(call, "INFO", body=dtmf_relay_body(digit, duration_ms),
                                  content_type="application/dtmf-relay")
        response = await self._transact(call, request)
        if response is None or not 200 <= response.status_code < 300:
            raise PhoneError(f"INFO DTMF refused: {response.summary if response else 'no response'}")

    async def _reinvite(self, call: SIPCall, direction: str, *, refresh: bool = False) -> None:
        """A re-INVITE with a new offer (hold: ``sendonly``; resume: ``sendrecv``, RFC 3264
        §8.4), or with ``refresh`` the SDP we sent last, version unchanged (a session
        refresh, RFC 4028 §7.4). Every re-INVITE carries the session timer in force and its
        2xx sets the next one (§7.2). On 491 (glare, §14.1) it is retried after 2.1-4 s
        (Call-ID owner) or 0-2 s."""
        if call._reinvite_pending:
            raise PhoneError(f"call {call.id} has a re-INVITE pending")
        call._reinvite_pending = True
        try:
            for _ in range(3):
                offer = call.local_sdp if refresh and call.local_sdp is not None else self._offer(call, direction)
                request = self._in_dialog(call, "INVITE", body=offer.to_bytes(), content_type="application/sdp",
                                          headers=self._session_headers(call))
                response = await self._reinvite_once(call, request)
                if response is None:
                    raise PhoneError("no answer to the re-INVITE")
                if response.status_code == 491:
                    owner = call.direction is CallDirection.OUTGOING
                    await asyncio.sleep(random.uniform(2.1, 4.0) if owner else random.uniform(0.0, 2.0))
                    continue
                if not 200 <= response.status_code < 300:
                    raise PhoneError(f"re-INVITE refused: {response.summary}")
                if response.body:
                    try:
                        session = negotiate(offer, SessionDescription.parse(response.body))
                    except (SDPParseError, ValueError) as exc:
                        raise PhoneError(f"bad SDP answer to the re-INVITE: {exc}") from exc
                    refused = self._media_refusal(session)
                    if refused is not None:  # accepted, but aimed where we may not send: hang up
                        self._spawn(self._bye(call, refused))
                        raise PhoneError(f"re-INVITE answer refused: {refused}")
                    call.audio = session
                    if call.dialog is not None:
                        call.dialog.receive_response(request, response)
                    self._apply_media(call)
                self._session_from_response(call, response)
                return
            raise PhoneError("re-INVITE glare (491) three times")
        finally:
            call._reinvite_pending = False

    async def _reinvite_once(self, call: SIPCall, request: Request) -> Response | None:
        assert call.flow is not None and call.dialog is not None
        rule = ChallengeRetry(self.credentials)
        request = rule.preempt(request)  # the dialog's cached credentials (RFC 3261 §22.3)
        for _ in range(3):
            handle = self.endpoint.send_request(request, call.flow)
            assert handle is not None
            deadline = handle.started + self.account.timeout
            final: Response | None = None
            while final is None:
                event = await handle.next_event(deadline)
                if event is None or isinstance(event, TimedOut | TransportFailed):
                    return None
                if isinstance(event, ResponseReceived) and event.final:
                    final = event.response
            if 200 <= final.status_code < 300:
                rule.settle(request, final)
                ack = call.dialog.ack(self.endpoint.via(call.flow), request)
                self.endpoint.send_stateless(ack, call.flow)
                def reack(event: Any, ack: Request = ack) -> None:
                    self._reack(event, ack, call)

                handle.set_listener(reack)
                return final
            retried = rule.retry(request, final, self.endpoint.via(call.flow))
            if retried is None:
                return final
            request = retried
            call.dialog.local_cseq = request.cseq[0]
        return None

    # -- session timers (RFC 4028) ----------------------------------------------------------------
    def _session_headers(self, call: SIPCall) -> list[tuple[str, str]]:
        """What a re-INVITE of ours says about the session timer (§7.4): the interval in
        force and who refreshes (``uac``: we, the sender), the Min-SE learned."""
        headers = [("Supported", SUPPORTED_UAS)]
        if call.session_expires:
            headers.append(("Session-Expires",
                            f"{call.session_expires};refresher={'uac' if call.session_refresher else 'uas'}"))
        elif self.account.session_expires:
            headers.append(("Session-Expires", str(self.account.session_expires)))
        if call.min_se and len(headers) > 1:
            headers.append(("Min-SE", str(call.min_se)))
        return headers

    def _session_from_response(self, call: SIPCall, response: Response) -> None:
        """§7.2: the 2xx to our INVITE or re-INVITE sets the session timer: none without
        ``Session-Expires``; we refresh when its refresher is ``uac`` (or unnamed), else the
        far end does."""
        expires = _session_expires(response)
        self._set_session_timer(call, (expires[0], expires[1] != "uas", []) if expires else None)

    def _session_too_small(self, request: Request) -> bool:
        """§9: a request whose ``Session-Expires`` is below our minimum gets 422."""
        expires = _session_expires(request)
        return expires is not None and expires[0] < self.account.min_se

    def _session_for_request(self, request: Request) -> tuple[int, bool, list[tuple[str, str]]] | None:
        """§9: the session timer our 2xx to an INVITE/UPDATE sets, as (interval, whether we
        refresh, header fields for the 2xx); None: no session timer. The request's interval
        is kept; an unnamed refresher is chosen: the UAC when it supports timers, else us;
        a UAC that supports timers but asked for none gets the account's interval, if any.
        ``Require: timer`` goes into the 2xx only when the UAC supports timers."""
        supports = "timer" in _option_tags(request, "Supported") | _option_tags(request, "Require")
        expires = _session_expires(request)
        if expires is not None:
            interval, refresher = expires
            if not supports:
                refresher = "uas"
            elif refresher is None:
                refresher = "uac"
        elif supports and self.account.session_expires:
            interval, refresher = max(self.account.session_expires, _min_se(request) or 0), "uac"
        else:
            return None
        headers = [("Session-Expires", f"{interval};refresher={refresher}")]
        if supports:
            headers.append(("Require", "timer"))
        return interval, refresher == "uas", headers

    def _set_session_timer(self, call: SIPCall, timer: tuple[int, bool, list[tuple[str, str]]] | None) -> None:
        """Restart (or stop, with None) the call's session timer: (interval, we refresh, _)."""
        task = call._session_task
        if task is not None and task is not asyncio.current_task():
            task.cancel()
        call._session_task = None
        call.session_expires = timer[0] if timer else None
        call.session_refresher = bool(timer and timer[1])
        if timer is not None and call.state is not CallState.TERMINATED:
            call._session_task = self._spawn(self._session_timer(call, timer[0], timer[1]))

    async def _session_timer(self, call: SIPCall, interval: int, we_refresh: bool) -> None:
        """§10: the refresher re-INVITEs at half the interval (a failed refresh ends the call
        with BYE); the other side sends BYE when no refresh came by the interval minus
        min(32 s, a third of it)."""
        if not we_refresh:
            await asyncio.sleep(interval - min(32.0, interval / 3))
            if call.state is not CallState.TERMINATED:
                await self._bye(call, f"session expired: no refresh within {interval} s (RFC 4028 §10)", cause=408)
            return
        await asyncio.sleep(interval / 2)
        for _ in range(40):  # a re-INVITE of ours in progress refreshes the session itself
            if not call._reinvite_pending:
                break
            await asyncio.sleep(0.5)
        if call._session_task is not asyncio.current_task() or call.state is not CallState.CONFIRMED:
            return
        try:
            await self._reinvite(call, "sendonly" if call.local_hold else "sendrecv", refresh=True)
        except PhoneError as exc:
            if call.state is not CallState.TERMINATED:
                await self._bye(call, f"session refresh failed: {exc.reason} (RFC 4028 §10)", cause=408)

    def _reack(self, event: Any, ack: Request, call: SIPCall) -> None:
        if isinstance(event, ResponseReceived) and 200 <= event.response.status_code < 300 and call.flow:
            with contextlib.suppress(SIPTransportError):
                self.endpoint.send_stateless(ack, call.flow, "re-ACK")

    async def _refer(self, call: SIPCall, target: str, *, replaces: SIPCall | None = None) -> None:
        """Blind transfer (RFC 3515, RFC 5589 §6): REFER with Refer-To; after 202 the
        transferee's NOTIFYs (``message/sipfrag``) report the new call; on a 2xx there we
        hang up. Attended (``replaces``, RFC 5589 §7): the Refer-To URI carries
        ``?Replaces=`` with that call's dialog (Call-ID; to-tag = the target's tag, from-tag
        = ours, RFC 3891 §6.1), escaped; the target ends that call itself (we do, if it
        has not within 5 s). Raises :class:`PhoneError` if the REFER is refused, the
        transfer fails or no final NOTIFY comes within 60 s. A transferee that ends the
        call itself before its final NOTIFY (BYE, as Twinkle does) ends the wait: the
        transfer returns then, its outcome untold."""
        try:
            uri = self.target_uri(target)
        except SIPParseError as exc:
            raise PhoneError(f"bad transfer target {target!r}: {exc.reason}") from exc
        refer_to = f"<{uri}>"
        if replaces is not None and replaces.dialog is not None:
            d = replaces.dialog
            value = f"{d.call_id};to-tag={d.remote_tag};from-tag={d.local_tag}"
            refer_to = f"<{uri}?Replaces={quote(value, safe='')}>"
        loop = asyncio.get_running_loop()
        call._refer_result = loop.create_future()
        call.transfer_status = None
        request = self._in_dialog(call, "REFER", headers=[("Refer-To", refer_to), ("Referred-By", f"<{self.aor}>")])
        response = await self._transact(call, request)
        if response is None or not 200 <= response.status_code < 300:
            raise PhoneError(f"REFER refused: {response.summary if response else 'no response'}")
        result: asyncio.Future[int] = call._refer_result
        ended: asyncio.Future[bool] = asyncio.ensure_future(call.wait_ended(60.0))
        try:
            await asyncio.wait((result, ended), timeout=60.0, return_when=asyncio.FIRST_COMPLETED)
        finally:
            ended.cancel()
        if not result.done() and call.state is CallState.TERMINATED:
            # the transferee ended the call before its final NOTIFY (Twinkle sends its BYE
            # first, and that NOTIFY then arrives out of order, refused 500 by RFC 3261
            # §12.2.2): one in flight still counts; otherwise the outcome was not told
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(result), 1.0)
            if not result.done():
                return
        if not result.done():
            raise PhoneError("no final NOTIFY for the transfer within 60 s")
        code = call.transfer_status = result.result()
        if not 200 <= code < 300:
            raise PhoneError(f"transfer failed: the target answered {code}")
        if call.state is not CallState.TERMINATED:
            await self._bye(call, "transferred")
        if replaces is not None and not await replaces.wait_ended(5.0):
            await self._bye(replaces, "transferred (the target did not end the replaced call)")

    # -- watching others: presence (RFC 3856) and dialogs (RFC 4235) ----------------------------
    def watch(self, target: str, package: str = "presence") -> Subscription:
        """Subscribe to ``target``'s ``presence`` (RFC 3856: a buddy's status) or ``dialog``
        state (RFC 4235: a busy-lamp-field key), refreshed and subscribed again after a
        failure until :meth:`unwatch` or :meth:`close`. Its NOTIFYs become
        :class:`PresenceChanged` / :class:`DialogStateChanged` events; the subscription's
        ``state`` and ``reason`` tell how it stands. Watching the same again returns the
        subscription there is. ``ValueError`` for another package or a malformed target;
        :class:`PhoneError` beyond :data:`MAX_WATCHES` or when closed."""
        kinds: dict[str, type[Subscription]] = {"presence": PresenceSubscription, "dialog": DialogSubscription}
        if package not in kinds:
            raise ValueError(f"package: presence or dialog, not {package!r}")
        if self.closed:
            raise PhoneError("the phone is closed")
        uri = self.target_uri(target)
        key = (uri, package)
        if key in self.watches:
            return self.watches[key]
        if len(self.watches) >= MAX_WATCHES:
            raise PhoneError(f"at most {MAX_WATCHES} watches")
        sub = kinds[package](self, uri)
        self.watches[key] = sub
        self._watch_tasks[key] = self._spawn(sub.run())
        return sub

    async def unwatch(self, target: str, package: str = "presence") -> bool:
        """Stop watching: SUBSCRIBE with Expires 0 in the subscription's dialog (at most 3 s).
        False when ``target`` was not watched for ``package``."""
        key = (self.target_uri(target), package)
        sub = self.watches.pop(key, None)
        task = self._watch_tasks.pop(key, None)
        if task is not None:
            task.cancel()
        if sub is None:
            return False
        self._unwatched.append(sub)  # the notifier's final NOTIFY is still ours to answer
        await sub.unsubscribe()
        return True

    async def publish_presence(self, basic: str = "open", *, note: str | None = None,
                               activity: str | None = None) -> None:
        """Publish our own presence for the AOR (PUBLISH ``presence`` with a PIDF document,
        RFC 3903 §4, RFC 3863): ``basic`` ``open`` or ``closed``, a ``note``, an RPID
        ``activity`` (RFC 4480: ``away``, ``busy``, ``on-the-phone``…). Kept alive by
        refreshes until :meth:`unpublish_presence` or :meth:`close`; a second call modifies
        it. ``ValueError`` for another ``basic`` or text XML 1.0 cannot carry (a control
        character); :class:`PhoneError` when the presence server refuses (the reason) or does
        not answer."""
        from skinnysip.sip.presence import build_pidf

        body = build_pidf(str(self.aor), basic, note=note, activity=activity)
        if self.publication is None:
            self.publication = PresencePublication(self)
        await self.publication.publish(body)
        if self._publish_task is None or self._publish_task.done():
            self._publish_task = self._spawn(self.publication.run())

    async def unpublish_presence(self) -> None:
        """Remove our published presence (PUBLISH ``Expires: 0``, RFC 3903 §4.5; at most 3 s)
        and stop refreshing it."""
        if self._publish_task is not None:
            self._publish_task.cancel()
            self._publish_task = None
        if self.publication is not None:
            await self.publication.remove()

    # -- MESSAGE (RFC 3428) ---------------------------------------------------------------------
    async def message(self, target: str, text: str) -> None:
        """Send an instant message (MESSAGE, ``text/plain``; digest if challenged).
        :class:`PhoneError` when it is not accepted (2xx)."""
        uri = self.target_uri(target)
        flow = await self._flow_for(uri)
        request = new_request("MESSAGE", uri, from_=self.identity(), to=NameAddr(None, SipURI.parse(uri)),
                              via=self.endpoint.via(flow), route_set=self._route_set(), user_agent=USER_AGENT,
                              body=text.encode(), content_type="text/plain;charset=UTF-8")
        outcome = await self.endpoint.transact(request, flow, timeout=self.account.timeout,
                                               credentials=self.credentials)
        if outcome.response is None:
            raise PhoneError(f"MESSAGE: {outcome.error}")
        if not 200 <= outcome.response.status_code < 300:
            raise PhoneError(f"MESSAGE refused: {outcome.response.summary}")

    # -- what the endpoint hands us ----------------------------------------------------------
    def _call_for(self, request: Request) -> SIPCall | None:
        did = dialog_id(request, local_is_from=False)
        for call in self.calls:
            if isinstance(call, SIPCall) and call.dialog is not None and did == call.dialog.id:
                return call
        return None

    def _on_event(self, event: LayerEvent) -> bool:
        if isinstance(event, CancelReceived):
            call = next((c for c in self.calls if isinstance(c, SIPCall) and c.invite_tx is event.invite), None)
            if call is None and event.invite in self._verifying:  # its Identity is being checked: not rung yet
                self.endpoint.respond(event.transaction, 200)
                if not event.invite.final:
                    self._respond(event.invite, 487, to_tag=new_tag())
                return True
            if call is None:
                return False
            self.endpoint.respond(event.transaction, 200)
            if not event.invite.final:
                self._respond(event.invite, 487, to_tag=call.to_tag)
            reasons = parse_reasons(event.request.headers.get_all("Reason"))
            call.remote_reason = describe(reasons)
            # RFC 3326: a forking proxy's CANCEL of a branch that lost says the call was
            # answered on another device (not missed)
            why = "answered elsewhere" if completed_elsewhere(reasons) else "cancelled by the caller"
            self._spawn(self._end(call, why))
            return True
        if isinstance(event, AckReceived):
            call = self._call_for(event.request)
            if call is not None:
                self._acked(call, event.request)
                return True
            return False
        if isinstance(event, SuccessRetransmission):
            for other in self.calls:
                if isinstance(other, SIPCall) and other.call_id == event.response.call_id and other.flow:
                    ack = getattr(other, "ack", None)
                    if ack is not None:
                        with contextlib.suppress(SIPTransportError):
                            self.endpoint.send_stateless(ack, other.flow, "re-ACK")
                    return True
            return False
        if isinstance(event, TimedOut) and isinstance(event.transaction, InviteServerTransaction):
            if event.timer == "L":
                call = next((c for c in self.calls if isinstance(c, SIPCall) and c.invite_tx is event.transaction),
                            None)
                if call is not None and call.state is not CallState.CONFIRMED:
                    self._spawn(self._bye(call, "no ACK for our 200 (RFC 3261 §13.3.1.4)", cause=408))
            return True
        if not isinstance(event, RequestReceived):
            return False
        request = event.request
        method = request.method
        if request.to_tag is None:
            if method == "INVITE":
                self._incoming(event)
                return True
            if method == "MESSAGE":
                self._message_received(event)
                return True
            if method == "NOTIFY":
                self._unsolicited_notify(event)
                return True
            return False  # OPTIONS and the rest: the endpoint's UAS core
        if self.mwi is not None and self.mwi.owns(request):
            self.mwi.notify_received(event)
            return True
        if method == "NOTIFY":
            watch = next((w for w in (*self.watches.values(), *self._unwatched) if w.owns(request)), None)
            if watch is not None:
                watch.notify_received(event)
                return True
        call = self._call_for(request)
        if call is None:
            return False  # 481
        assert call.dialog is not None
        refusal = call.dialog.receive_request(request)
        if refusal is not None:
            self.endpoint.respond(event.transaction, refusal)
            return True
        self._spawn(self._in_dialog_request(call, event))
        return True

    async def _in_dialog_request(self, call: SIPCall, event: RequestReceived) -> None:
        request, tx = event.request, event.transaction
        method = request.method
        if method == "BYE":
            self.endpoint.respond(tx, 200)
            call.remote_reason = describe(parse_reasons(request.headers.get_all("Reason")))
            await self._end(call, "BYE received")
        elif method in ("INVITE", "UPDATE"):
            await self._remote_offer(call, tx, request)
        elif method == "INFO":
            self._info_received(call, tx, request)
        elif method == "REFER":
            await self._refer_received(call, tx, request)
        elif method == "NOTIFY":
            self._notify_received(call, tx, request)
        elif method == "MESSAGE":
            self._message_received(event)
        elif method == "OPTIONS":
            self.endpoint.send_response(tx, self.endpoint.uas.options(request))
        elif method == "PRACK":
            self._prack_received(call, tx, request)
        else:
            self.endpoint.respond(tx, 405, headers=[("Allow", ALLOW)])

    async def _remote_offer(self, call: SIPCall, tx: ServerTransaction, request: Request) -> None:
        """The far end's re-INVITE or UPDATE (RFC 3264 §8, RFC 3311): answer its offer
        (hold when it offers sendonly/inactive); 491 while our own re-INVITE is pending.
        It is a session refresh too (RFC 4028 §9): its 2xx carries the session timer."""
        if request.method == "INVITE" and call._reinvite_pending:
            self.endpoint.respond(tx, 491)
            return
        if call.media is None or call.flow is None:
            self.endpoint.respond(tx, 488)
            return
        if not is_session_body(request):  # RFC 3261 §8.2.3
            self.endpoint.respond(tx, 415, headers=[SESSION_ACCEPT])
            return
        if self._session_too_small(request):
            self.endpoint.respond(tx, 422, headers=[("Min-SE", str(self.account.min_se))])
            return
        timer = self._session_for_request(request)
        headers = [("Supported", SUPPORTED_UAS), *(timer[2] if timer else [])]
        if not request.body:
            if request.method == "UPDATE":  # no offer: nothing to answer (RFC 3311 §5.2)
                self.endpoint.respond(tx, 200, headers=headers, contact=self._contact(call.flow))
            else:
                body = self._offer(call, "sendonly" if call.local_hold else "sendrecv").to_bytes()
                self._respond(tx, 200, body=body, flow=call.flow, headers=headers)
            self._set_session_timer(call, timer)
            return
        try:
            offer = SessionDescription.parse(request.body)
            ip, port, _ = call.media.advertised
            answer, session = audio_answer(offer, ip, port,
                                           direction="sendonly" if call.local_hold else "sendrecv",
                                           session_id=call.session_id,
                                           srtp=self.account.srtp, codecs=self.codecs, srtp_suites=self.srtp_suites,
                                           srtp_key=call.audio.srtp_local_key if call.audio else None,
                                           dtls_fingerprint=self._dtls_fingerprint(),
                                           dtls_role=call.audio.dtls_role if call.audio else None)
            _with_rtcp(answer, call.media)
            if self.account.ice:
                _with_ice(call, answer, session)
        except SDPParseError as exc:
            self.endpoint.respond(tx, 488, headers=[warning_field(f"malformed SDP: {exc}"[:200])])
            return
        except ValueError:  # no audio stream (a T.38 re-INVITE, say): the session stays as it is
            self.endpoint.respond(tx, 488, headers=[warning_field("no audio stream offered", WARN_MEDIA_TYPE)])
            return
        if session.rejected:  # e.g. RTP/SAVP while SRTP is off: 488 keeps the session as it is (RFC 3261 §14.2)
            self.endpoint.respond(tx, 488, headers=[warning_field(session.refusal, session.refusal_code)]
                                  if session.refusal else None)
            return
        refused = self._media_refusal(session)
        if refused is not None:  # 488: the session, and our media, stay as they were (RFC 3261 §14.2)
            self.endpoint.respond(tx, 488, headers=[warning_field(refused)])
            self.emit(ErrorEvent(f"call {call.id}: {request.method} refused with 488: {refused}"))
            return
        answer = versioned(answer, call.local_sdp)  # unchanged (a keep-alive re-INVITE): the same version
        call.audio = session
        call.local_sdp = answer
        self._respond(tx, 200, body=answer.to_bytes(), flow=call.flow, headers=headers)
        self._set_session_timer(call, timer)
        self._apply_media(call)
        self.emit_hold(call)

    def emit_hold(self, call: SIPCall) -> None:
        self.emit(CallStateChanged(call, call.state, "on hold by the far end" if call.remote_hold else "resumed"))

    def _info_received(self, call: SIPCall, tx: ServerTransaction, request: Request) -> None:
        ctype = request.media_type
        if ctype == "application/dtmf-relay":
            try:
                digit, duration_ms = parse_dtmf_relay(request.body)
            except ValueError:
                self.endpoint.respond(tx, 400)
                return
            self.endpoint.respond(tx, 200)
            self._dtmf(call, digit, "info", duration_ms / 1000)
            return
        self.endpoint.respond(tx, 200 if not request.body else 415)

    async def _refer_received(self, call: SIPCall, tx: ServerTransaction, request: Request) -> None:
        """We are the transferee (RFC 3515): 202, NOTIFY 100 Trying, call the Refer-To
        target, NOTIFY its outcome; the transferor then ends the original call. With
        ``Refer-Sub: false`` (RFC 4488) the 202 repeats it and there are no NOTIFYs."""
        refer_to = request.headers.get("Refer-To")
        try:
            uri = SipURI.parse(str(NameAddr.parse(refer_to or "").uri))
        except SIPParseError:
            self.endpoint.respond(tx, 400)
            return
        # URI headers become header fields of the INVITE (RFC 3261 §19.1.5); we take Replaces
        # (RFC 3891 §6.1, attended transfer) and nothing else; the Request-URI has none
        headers = [("Replaces", unquote(v)) for k, v in uri.headers.items() if k.lower() == "replaces"][:1]
        if request.headers.get("Referred-By"):
            headers.append(("Referred-By", request.headers.get("Referred-By") or ""))
        target = str(replace(uri, headers={}))
        # RFC 4488 §4: "Refer-Sub: false", which we support ("norefersub"), asks for no implicit
        # subscription: the 2xx says so again and no NOTIFY follows
        subscribe = (request.headers.get("Refer-Sub") or "true").strip().lower() != "false"
        self.endpoint.respond(tx, 202, headers=None if subscribe else [("Refer-Sub", "false")])
        if subscribe:
            await self._notify_sipfrag(call, "SIP/2.0 100 Trying", active=True)
        try:
            new = await self.call(target, headers=headers)
            ok = await new.wait_connected(60.0)
            frag = "SIP/2.0 200 OK" if ok else f"SIP/2.0 {new.end_reason or '480 Temporarily Unavailable'}"
            if uint_or_none(frag.split()[1], 699) is None:
                frag = "SIP/2.0 480 Temporarily Unavailable"
        except PhoneError as exc:
            frag = f"SIP/2.0 503 Service Unavailable ({exc.reason[:60]})"
        if subscribe:
            with contextlib.suppress(Exception):
                await self._notify_sipfrag(call, frag, active=False)

    async def _notify_sipfrag(self, call: SIPCall, frag: str, *, active: bool) -> None:
        if call.state is CallState.TERMINATED:
            return
        state = "active;expires=60" if active else "terminated;reason=noresource"
        request = self._in_dialog(call, "NOTIFY", body=(frag + "\r\n").encode(), content_type="message/sipfrag",
                                  headers=[("Event", "refer"), ("Subscription-State", state)])
        await self._transact(call, request)

    def _notify_received(self, call: SIPCall, tx: ServerTransaction, request: Request) -> None:
        """A NOTIFY of our REFER subscription: its sipfrag status line tells the outcome."""
        self.endpoint.respond(tx, 200)
        if event_package(request) != "refer":
            return
        line = request.body.decode("utf-8", "replace").split("\r\n", 1)[0].split()
        code = uint_or_none(line[1], 699) if len(line) >= 2 else None
        if code is not None:
            if code >= 200 and call._refer_result is not None and not call._refer_result.done():
                call._refer_result.set_result(code)

    def _message_received(self, event: RequestReceived) -> None:
        request = event.request
        ctype = request.media_type or "text/plain"
        if not ctype.startswith("text/"):
            self.endpoint.respond(event.transaction, 415, headers=[("Accept", "text/plain")])
            return
        self.endpoint.respond(event.transaction, 200)
        sender = request.headers.get("From") or ""
        with contextlib.suppress(SIPParseError):
            sender = str(NameAddr.parse(sender).uri)
        text = request.body.decode("utf-8", "replace")[:10000]
        self.messages.append({"from": sender, "text": text})
        del self.messages[:-100]
        self.emit(MessageReceived(sender, text, ctype))

    def _unsolicited_notify(self, event: RequestReceived) -> None:
        """A NOTIFY outside any dialog. A voicemail server's message-waiting indication
        (``Event: message-summary``, RFC 3842; servers such as Asterisk send it without a
        SUBSCRIBE) → 200 and a :class:`MessageWaiting` event (400 when its body is not a
        summary); any other event package → 481, no subscription of ours matches it
        (RFC 6665 §4.1.3)."""
        request, tx = event.request, event.transaction
        package = event_package(request)
        if package != "message-summary":
            self.endpoint.respond(tx, 481, to_tag=new_tag())
            return
        try:
            summary = parse_message_summary(request.body)
        except MessageSummaryError as exc:
            self.endpoint.respond(tx, 400, to_tag=new_tag(), headers=[warning_field(str(exc))])
            return
        self.endpoint.respond(tx, 200, to_tag=new_tag())
        self.emit(MessageWaiting(summary.waiting, summary.account, summary.counts))

    # -- the end of a call ----------------------------------------------------------------------
    async def _end(self, call: Call, reason: str) -> None:
        if call.state is CallState.TERMINATED:
            return
        if isinstance(call, SIPCall):
            self._set_session_timer(call, None)
        if isinstance(call, SIPCall) and call.media is not None:
            with contextlib.suppress(Exception):
                await call.media.close()
        self._set_state(call, CallState.TERMINATED, reason)


def _identity_settings(account: SIPAccount) -> bool:
    """Whether ``account`` sets any of its ``identity_*`` fields (STIR/SHAKEN)."""
    return (account.identity_key is not None or account.identity_x5u is not None or account.identity_attest != "A"
            or account.identity_certificate is not None or account.identity_fetch or account.identity_ca is not None
            or account.identity_required)
