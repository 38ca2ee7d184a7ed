"""SDP session descriptions (RFC 4566) for offers and answers (RFC 3264), sans-IO.

What a softphone or a probe needs: parse any description without losing lines,
read the media sections (port, payload types, ``rtpmap``/``fmtp``, direction, ptime,
connection address), and build an audio offer with :func:`audio_offer` (G.711, and G.722 and
Opus where their bindings install: :mod:`skinnysip.rtp.codecs`).
SRTP keys travel in ``a=crypto`` (SDES, RFC 4568): :class:`CryptoAttribute`, and the
offer/answer functions take ``srtp="off"|"optional"|"mandatory"``.

``SessionDescription.parse(data)`` accepts ``str`` or ``bytes`` (UTF-8; undecodable
bytes survive via ``surrogateescape``), CRLF or bare LF line ends, and raises
:class:`SDPParseError` — and nothing else — on malformed input. ``to_bytes()`` writes
CRLF lines in the order RFC 4566 §5 prescribes.
"""

from __future__ import annotations

import base64
import binascii
import functools
import ipaddress
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from skinnysip.addresses import is_ip, is_ipv6, strip_brackets
from skinnysip.rtp import codecs as _codecs

__all__ = [
    "Connection",
    "MediaDescription",
    "Origin",
    "RtpMap",
    "SDPParseError",
    "SessionDescription",
    "AUDIO_CODECS",  # noqa: F822 - computed on first use by __getattr__
    "SRTP_MODES",
    "SRTPMode",
    "SRTP_KEY_LENGTHS",
    "SRTP_SUITES",
    "check_srtp_suites",
    "TELEPHONE_EVENT_PT",
    "TELEPHONE_EVENT_48K_PT",
    "AudioSession",
    "CryptoAttribute",
    "SRTPRefused",
    "audio_answer",
    "audio_offer",
    "audio_offer_for",
    "combine_directions",
    "crypto_attributes",
    "negotiate",
    "new_crypto",
    "reverse_direction",
    "DTLS_PROTOS",
    "SETUP_VALUES",
    "answer_setup",
    "fingerprints",
    "setup_of",
    "ice_credentials",
    "with_ice_lite",
    "host_priority",
]


class SDPParseError(ValueError):
    """Malformed SDP; ``reason`` says what is wrong. The only exception :meth:`SessionDescription.parse` raises."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


_SESSION_ORDER = "vosiuepcbtrzka"
_MEDIA_ORDER = "icbka"
_LINE_SPLIT_RE = re.compile(r"\r?\n")
_DIGITS_RE = re.compile(r"[0-9]{1,30}")  # bounded: int() of huge strings is slow/refused
_DIRECTIONS = ("sendrecv", "sendonly", "recvonly", "inactive")

#: Static payload types (RFC 3551 §6) we can describe in an offer: pt → (encoding, clock rate).
STATIC_PAYLOAD_TYPES: dict[int, tuple[str, int]] = {
    0: ("PCMU", 8000),
    3: ("GSM", 8000),
    8: ("PCMA", 8000),
    9: ("G722", 8000),
    18: ("G729", 8000),
}

#: RFC 4733 payload types we offer: ``telephone-event/8000`` beside the 8000 Hz codecs (G.711,
#: G.722) and ``telephone-event/48000`` beside Opus (RFC 4733 §2.1: an event uses the clock rate
#: of the audio it replaces, so each codec gets the events at its own RTP clock)
TELEPHONE_EVENT_PT = 101
TELEPHONE_EVENT_48K_PT = 110
_TELEPHONE_EVENTS = {TELEPHONE_EVENT_PT: 8000, TELEPHONE_EVENT_48K_PT: 48000}


def _int(text: str, what: str, upper: int | None = None) -> int:
    if not _DIGITS_RE.fullmatch(text):
        raise SDPParseError(f"{what} {text[:20]!r} is not a non-negative integer")
    value = int(text)
    if upper is not None and value > upper:
        raise SDPParseError(f"{what} {value} larger than {upper}")
    return value


@dataclass
class Origin:
    """``o=`` (RFC 4566 §5.2): ``username sess-id sess-version nettype addrtype address``."""

    username: str = "-"
    session_id: int = 0
    session_version: int = 0
    nettype: str = "IN"
    addrtype: str = "IP4"
    address: str = "127.0.0.1"

    @classmethod
    def parse(cls, value: str) -> Origin:
        parts = value.split()
        if len(parts) != 6:
            raise SDPParseError(f"o= needs 6 fields, got {len(parts)}")
        return cls(parts[0], _int(parts[1], "sess-id"), _int(parts[2], "sess-version"), *parts[3:])

    def __str__(self) -> str:
        return (
            f"{self.username} {self.session_id} {self.session_version} "
            f"{self.nettype} {self.addrtype} {self.address}"
        )


@dataclass
class Connection:
    """``c=`` (RFC 4566 §5.7): ``nettype addrtype address`` (address may carry ``/ttl``)."""

    nettype: str = "IN"
    addrtype: str = "IP4"
    address: str = "127.0.0.1"

    @classmethod
    def parse(cls, value: str) -> Connection:
        parts = value.split()
        if len(parts) != 3:
            raise SDPParseError(f"c= needs 3 fields, got {len(parts)}")
        return cls(*parts)

    def __str__(self) -> str:
        return f"{self.nettype} {self.addrtype} {self.address}"

    @property
    def host(self) -> str:
        """The address without a ``/ttl`` or ``/count`` suffix."""
        return self.address.split("/", 1)[0]


@dataclass
class RtpMap:
    """``a=rtpmap:<pt> <encoding>/<clock rate>[/<channels>]`` (RFC 4566 §6)."""

    payload_type: int
    encoding: str
    clock_rate: int
    channels: int | None = None


@dataclass
class MediaDescription:
    """One ``m=`` section (RFC 4566 §5.14) and its ``i= c= b= k= a=`` lines.

    ``formats`` are the format tokens as written (payload type numbers for RTP/AVP);
    ``attributes`` are ``(name, value)`` pairs in order, ``value`` ``None`` for flags;
    ``other`` keeps ``i=``/``k=``/unknown lines as ``(type, value)``.
    """

    media: str = "audio"
    port: int = 0
    proto: str = "RTP/AVP"
    formats: list[str] = field(default_factory=list)
    port_count: int | None = None
    connection: Connection | None = None
    bandwidths: list[str] = field(default_factory=list)
    attributes: list[tuple[str, str | None]] = field(default_factory=list)
    other: list[tuple[str, str]] = field(default_factory=list)

    @classmethod
    def _parse_m(cls, value: str) -> MediaDescription:
        parts = value.split()
        if len(parts) < 3:
            raise SDPParseError(f"m= needs at least 3 fields, got {len(parts)}")
        port_text, slash, count_text = parts[1].partition("/")
        port = _int(port_text, "media port", 65535)
        count = _int(count_text, "port count") if slash else None
        return cls(parts[0], port, parts[2], parts[3:], count)

    def attribute(self, name: str) -> str | None:
        """Value of the first ``a=name:value`` (``""`` for a flag), or ``None`` if absent."""
        for n, v in self.attributes:
            if n == name:
                return "" if v is None else v
        return None

    def attribute_values(self, name: str) -> list[str]:
        """Values of every ``a=name:...`` line, in order."""
        return [v or "" for n, v in self.attributes if n == name]

    @property
    def payload_types(self) -> list[int]:
        """``formats`` as integers (RTP profiles); non-numeric formats are skipped."""
        return [int(f) for f in self.formats if _DIGITS_RE.fullmatch(f) and int(f) < 128]

    def rtpmaps(self) -> dict[int, RtpMap]:
        """``a=rtpmap`` lines by payload type, plus static types (RFC 3551) without one."""
        out: dict[int, RtpMap] = {}
        for value in self.attribute_values("rtpmap"):
            pt_text, _, enc = value.partition(" ")
            fields = enc.strip().split("/")
            if not _DIGITS_RE.fullmatch(pt_text) or len(fields) < 2 or not _DIGITS_RE.fullmatch(fields[1]):
                continue
            channels = int(fields[2]) if len(fields) > 2 and _DIGITS_RE.fullmatch(fields[2]) else None
            out[int(pt_text)] = RtpMap(int(pt_text), fields[0], int(fields[1]), channels)
        for pt in self.payload_types:
            if pt not in out and pt in STATIC_PAYLOAD_TYPES:
                enc, rate = STATIC_PAYLOAD_TYPES[pt]
                out[pt] = RtpMap(pt, enc, rate)
        return out

    def fmtps(self) -> dict[int, str]:
        """``a=fmtp:<pt> <params>`` by payload type."""
        out: dict[int, str] = {}
        for value in self.attribute_values("fmtp"):
            pt_text, _, params = value.partition(" ")
            if _DIGITS_RE.fullmatch(pt_text):
                out[int(pt_text)] = params.strip()
        return out

    @property
    def direction(self) -> str | None:
        """``sendrecv``/``sendonly``/``recvonly``/``inactive`` if given at media level, else ``None``."""
        for n, _ in self.attributes:
            if n in _DIRECTIONS:
                return n
        return None

    @property
    def ptime(self) -> float | None:
        """``a=ptime`` in milliseconds, or ``None``."""
        value = self.attribute("ptime")
        try:
            return float(value) if value else None
        except ValueError:
            return None

    def _lines(self) -> list[str]:
        port = f"{self.port}/{self.port_count}" if self.port_count is not None else str(self.port)
        lines = [f"m={' '.join([self.media, port, self.proto, *self.formats])}"]
        for kind in _MEDIA_ORDER:
            if kind == "c" and self.connection is not None:
                lines.append(f"c={self.connection}")
            elif kind == "b":
                lines.extend(f"b={b}" for b in self.bandwidths)
            elif kind == "a":
                lines.extend(f"a={n}" if v is None else f"a={n}:{v}" for n, v in self.attributes)
            else:
                lines.extend(f"{t}={v}" for t, v in self.other if t == kind)
        lines.extend(f"{t}={v}" for t, v in self.other if t not in _MEDIA_ORDER)
        return lines


@dataclass
class SessionDescription:
    """A whole SDP body (RFC 4566 §5).

    ``times`` are the ``t=`` start/stop pairs (NTP seconds, 0 = unbounded);
    ``other`` keeps every session-level line not modelled here (``i u e p r z k`` and
    unknown types) as ``(type, value)`` in order.
    """

    origin: Origin = field(default_factory=Origin)
    session_name: str = "-"
    version: int = 0
    connection: Connection | None = None
    bandwidths: list[str] = field(default_factory=list)
    times: list[tuple[int, int]] = field(default_factory=lambda: [(0, 0)])
    attributes: list[tuple[str, str | None]] = field(default_factory=list)
    media: list[MediaDescription] = field(default_factory=list)
    other: list[tuple[str, str]] = field(default_factory=list)

    @classmethod
    def parse(cls, data: str | bytes) -> SessionDescription:
        """Parse an SDP body; raises :class:`SDPParseError` with a reason if malformed.

        Required: ``v=0`` first, one ``o=`` line, ``s=``. Lenient: bare LF line ends,
        trailing blank lines, an empty ``s=``, a missing ``t=``.
        """
        if isinstance(data, bytes | bytearray):
            text = bytes(data).decode("utf-8", "surrogateescape")
        elif isinstance(data, str):
            text = data
        else:
            raise SDPParseError("SDP must be str or bytes")
        lines = _LINE_SPLIT_RE.split(text)
        while lines and lines[-1] == "":
            lines.pop()
        if not lines:
            raise SDPParseError("empty SDP")
        sd = cls(times=[])
        seen_o = seen_s = False
        current: MediaDescription | None = None
        for number, line in enumerate(lines, 1):
            if len(line) < 2 or line[1] != "=" or not ("a" <= line[0] <= "z"):
                raise SDPParseError(f"line {number} is not '<type>=<value>': {line[:30]!r}")
            kind, value = line[0], line[2:]
            if number == 1:
                if kind != "v":
                    raise SDPParseError("SDP must start with v=")
                sd.version = _int(value.strip(), "v=")
                if sd.version != 0:
                    raise SDPParseError(f"unsupported SDP version {sd.version}")
                continue
            if kind == "v":
                raise SDPParseError(f"second v= line at line {number}")
            if kind == "m":
                current = MediaDescription._parse_m(value)
                sd.media.append(current)
            elif current is not None:
                if kind == "c":
                    current.connection = Connection.parse(value)
                elif kind == "b":
                    current.bandwidths.append(value)
                elif kind == "a":
                    current.attributes.append(_parse_attribute(value))
                else:
                    current.other.append((kind, value))
            elif kind == "o":
                if seen_o:
                    raise SDPParseError("several o= lines")
                sd.origin = Origin.parse(value)
                seen_o = True
            elif kind == "s":
                sd.session_name = value
                seen_s = True
            elif kind == "c":
                sd.connection = Connection.parse(value)
            elif kind == "b":
                sd.bandwidths.append(value)
            elif kind == "t":
                parts = value.split()
                if len(parts) != 2:
                    raise SDPParseError(f"t= needs 2 fields, got {len(parts)}")
                sd.times.append((_int(parts[0], "start time"), _int(parts[1], "stop time")))
            elif kind == "a":
                sd.attributes.append(_parse_attribute(value))
            else:
                sd.other.append((kind, value))
        if not seen_o:
            raise SDPParseError("no o= line")
        if not seen_s:
            raise SDPParseError("no s= line")
        return sd

    def to_bytes(self) -> bytes:
        """Serialize with CRLF line ends (RFC 4566 §5); ``t=0 0`` if no times are set."""
        lines = [f"v={self.version}", f"o={self.origin}", f"s={self.session_name}"]
        for kind in _SESSION_ORDER[3:]:
            if kind == "c" and self.connection is not None:
                lines.append(f"c={self.connection}")
            elif kind == "b":
                lines.extend(f"b={b}" for b in self.bandwidths)
            elif kind == "t":
                lines.extend(f"t={a} {b}" for a, b in (self.times or [(0, 0)]))
            elif kind == "a":
                lines.extend(f"a={n}" if v is None else f"a={n}:{v}" for n, v in self.attributes)
            else:
                lines.extend(f"{t}={v}" for t, v in self.other if t == kind)
        lines.extend(f"{t}={v}" for t, v in self.other if t not in _SESSION_ORDER)
        for m in self.media:
            lines.extend(m._lines())
        return ("\r\n".join(lines) + "\r\n").encode("utf-8", "surrogateescape")

    def connection_for(self, media: MediaDescription) -> Connection | None:
        """The media's ``c=``, else the session's (RFC 4566 §5.7)."""
        return media.connection or self.connection

    def direction_of(self, media: MediaDescription) -> str:
        """Effective direction: media-level, else session-level, else ``sendrecv`` (RFC 3264 §5.1)."""
        if media.direction:
            return media.direction
        for n, _ in self.attributes:
            if n in _DIRECTIONS:
                return n
        return "sendrecv"


def _parse_attribute(value: str) -> tuple[str, str | None]:
    name, colon, rest = value.partition(":")
    if not name:
        raise SDPParseError("a= line without attribute name")
    return (name, rest) if colon else (name, None)


def versioned(sdp: SessionDescription, previous: SessionDescription | None) -> SessionDescription:
    """``sdp`` as it is sent after ``previous`` (the SDP we last sent in this session; None:
    the first). RFC 3264 §8: an SDP that modifies the session has the ``o=`` sess-version of the
    previous one plus one; one that does not keeps it (and must then be identical — the far end
    may restart its media on a new version). So: ``previous`` itself when ``sdp`` differs from
    it in the version alone, else ``sdp`` with ``previous``'s version + 1 (``sdp`` as it is
    when there is no ``previous``)."""
    if previous is None:
        return sdp
    same = replace(sdp, origin=replace(sdp.origin, session_version=previous.origin.session_version))
    if same == previous:
        return previous
    return replace(sdp, origin=replace(sdp.origin, session_version=previous.origin.session_version + 1))


# --------------------------------------------------------------------------- SDES keys (RFC 4568)

#: SRTP crypto suites we can key (RFC 4568 §6.2), in our order of preference. Both take a
#: 128-bit master key and a 112-bit master salt: 30 octets, 40 base64 characters inline.
SRTP_SUITES: tuple[str, ...] = ("AES_CM_128_HMAC_SHA1_80", "AES_CM_128_HMAC_SHA1_32")
#: octets of master key || master salt for :data:`SRTP_SUITES`
SRTP_KEY_LENGTH = 30
#: every SDES suite we can key, with its master key || master salt length in octets: the
#: AES-CM suites of RFC 4568 §6.2 (16 + 14) and the AES-GCM ones of RFC 7714 (16 or 32, + 12).
#: Offers carry :data:`SRTP_SUITES` unless told otherwise; answers take any of these.
SRTP_KEY_LENGTHS: dict[str, int] = {
    "AES_CM_128_HMAC_SHA1_80": 30, "AES_CM_128_HMAC_SHA1_32": 30, "AEAD_AES_128_GCM": 28, "AEAD_AES_256_GCM": 44,
}
#: ``off``: plain RTP/AVP; ``optional``: RTP/AVP with ``a=crypto`` (SRTP if the answer keys
#: it, like baresip's ``mediaenc=srtp``); ``mandatory``: RTP/SAVP, nothing else accepted;
#: ``dtls``: offers DTLS-SRTP (``UDP/TLS/RTP/SAVP``, RFC 5764; baresip's ``mediaenc=dtls_srtp``)
#: and accepts SRTP keyed either way, never plain RTP. Every mode but ``off`` answers a
#: DTLS-SRTP offer when given a certificate fingerprint.
SRTPMode = Literal["off", "optional", "mandatory", "dtls"]
SRTP_MODES: tuple[SRTPMode, ...] = ("off", "optional", "mandatory", "dtls")
_SECURE_PROTOS = ("RTP/SAVP", "RTP/SAVPF")
#: the DTLS-SRTP profiles (RFC 5764 §8, RFC 5124 for the feedback one)
DTLS_PROTOS = ("UDP/TLS/RTP/SAVP", "UDP/TLS/RTP/SAVPF")
#: ``a=setup`` values (RFC 4145 §4): who opens the association; ``active`` is the DTLS client
SETUP_VALUES = ("actpass", "active", "passive", "holdconn")
#: Warning codes (RFC 3261 §20.43) for an offer we refuse: its network address format (IPv4
#: against IPv6), its transport protocol (RTP profile, SRTP), its media type (no audio stream),
#: its media formats (no common codec)
WARN_ADDRESS_FORMAT, WARN_TRANSPORT, WARN_MEDIA_TYPE, WARN_MEDIA_FORMAT = 301, 302, 304, 305
#: the RTP profiles over UDP this stack speaks (RFC 3551, 4585, 3711, 5124): RTCP feedback
#: (AVPF) is a superset an endpoint meets by sending regular RTCP (RFC 4585 §3.1); anything
#: else — DTLS-SRTP (``UDP/TLS/RTP/SAVP``, RFC 5764), RTP over TCP (RFC 4571), ``udp`` — is not RTP
#: over plain UDP and is refused
RTP_PROTOS = ("RTP/AVP", "RTP/AVPF") + _SECURE_PROTOS
_CRYPTO_TAG_RE = re.compile(r"[0-9]{1,9}")
_CRYPTO_SUITE_RE = re.compile(r"[A-Za-z0-9_]{1,64}")
_LIFETIME_RE = re.compile(r"(2\^)?[0-9]{1,20}")
_MKI_RE = re.compile(r"([0-9]{1,20}):([0-9]{1,3})")
_BASE64_RE = re.compile(r"[A-Za-z0-9+/]{1,200}={0,2}")
#: session parameters (RFC 4568 §6.3) that would change what libsrtp must do: not supported
_UNSUPPORTED_PARAMS = ("UNENCRYPTED_SRTP", "UNENCRYPTED_SRTCP", "UNAUTHENTICATED_SRTP")


class SRTPRefused(ValueError):
    """The far end did not key SRTP for our RTP/SAVP offer (RFC 4568 §7.1.2); the message
    starts with "the far end refused SRTP"."""


_FINGERPRINT_HASH_RE = re.compile(r"[A-Za-z0-9-]{1,16}")
_FINGERPRINT_HEX_RE = re.compile(r"[0-9A-Fa-f]{2}(:[0-9A-Fa-f]{2}){15,63}")


def fingerprints(sd: SessionDescription, m: MediaDescription) -> tuple[tuple[str, str], ...]:
    """The certificate fingerprints for stream ``m`` of ``sd``: its ``a=fingerprint`` lines, or
    the session's when it has none (RFC 8122 §5: ``a=fingerprint:<hash-func> <XX:XX:…>``), as
    (lower-case hash name, upper-case hex). Malformed lines are skipped; at most 8 are kept."""
    values = m.attribute_values("fingerprint") or [v for n, v in sd.attributes if n == "fingerprint" and v]
    found: list[tuple[str, str]] = []
    for value in values[:8]:
        parts = value.split()
        if len(parts) == 2 and _FINGERPRINT_HASH_RE.fullmatch(parts[0]) and _FINGERPRINT_HEX_RE.fullmatch(parts[1]):
            found.append((parts[0].lower(), parts[1].upper()))
    return tuple(found)


def setup_of(sd: SessionDescription, m: MediaDescription) -> str | None:
    """Stream ``m``'s ``a=setup`` (or the session's), lower-case, None when absent or not one of
    :data:`SETUP_VALUES` (RFC 4145 §4)."""
    value = m.attribute("setup")
    if value is None:
        value = next((v for n, v in sd.attributes if n == "setup" and v), None)
    value = (value or "").strip().lower()
    return value if value in SETUP_VALUES else None


def host_priority(component: int, local_preference: int = 65535) -> int:
    """A host candidate's priority (RFC 8445 §5.1.2.1): 2^24·126 (the recommended type
    preference of a host candidate, §5.1.2.2) + 2^8·``local_preference`` + (256 −
    ``component``); component 1 is RTP, 2 RTCP."""
    return (126 << 24) + (local_preference << 8) + (256 - component)


_ICE_UFRAG_RE = re.compile(r"[A-Za-z0-9+/]{4,256}")
_ICE_PWD_RE = re.compile(r"[A-Za-z0-9+/]{22,256}")


def ice_credentials(sd: SessionDescription, m: MediaDescription) -> tuple[str, str] | None:
    """Stream ``m``'s ICE short-term credentials, (``a=ice-ufrag``, ``a=ice-pwd``), each from
    the media or else the session level (RFC 8839 §5.4); None when either is missing or not
    ice-chars of the allowed length (ufrag 4..256, pwd 22..256)."""
    def value(name: str) -> str | None:
        found = m.attribute(name)
        if found is None:
            found = next((v for n, v in sd.attributes if n == name and v), None)
        return found.strip() if found is not None else None

    ufrag, pwd = value("ice-ufrag"), value("ice-pwd")
    if ufrag is None or pwd is None or not _ICE_UFRAG_RE.fullmatch(ufrag) or not _ICE_PWD_RE.fullmatch(pwd):
        return None
    return ufrag, pwd


def with_ice_lite(sd: SessionDescription, credentials: tuple[str, str],
                  candidates: Sequence[tuple[int, str, int]]) -> SessionDescription:
    """``sd`` as an ICE lite agent's SDP (RFC 8445 §2.5, RFC 8839 §5): ``a=ice-lite`` at
    session level, and on its first audio stream with a port ``a=ice-ufrag``/``a=ice-pwd``
    (``credentials``) and one host ``a=candidate`` per (component, address, port) of
    ``candidates`` (1 RTP, 2 RTCP), foundation 1, priority by RFC 8445 §5.1.2.1. Changes
    and returns ``sd``."""
    line = next((m for m in sd.media if m.media == "audio" and m.port != 0), None)
    if line is None:
        return sd
    if ("ice-lite", None) not in sd.attributes:
        sd.attributes.append(("ice-lite", None))
    ufrag, pwd = credentials
    extra: list[tuple[str, str | None]] = [("ice-ufrag", ufrag), ("ice-pwd", pwd)]
    for component, address, port in candidates:
        extra.append(("candidate", f"1 {component} UDP {host_priority(component)} {address} {port} typ host"))
    line.attributes.extend(extra)
    return sd


def answer_setup(offered: str | None, role: str | None = None) -> str | None:
    """Our ``a=setup`` in an answer to an offered one (RFC 8842 §5.2/§5.3, RFC 5763 §5):
    ``actpass`` → ``active`` (RECOMMENDED: the handshake starts with the answer) unless we
    already have a DTLS ``role`` to keep (``"client"`` → active, ``"server"`` → passive: no new
    association on a re-offer); ``active`` → ``passive``; ``passive`` → ``active``; an offer
    without ``a=setup`` is ``active`` by RFC 4145 §4.1's default. None for ``holdconn``."""
    if offered is None:
        offered = "active"
    if offered == "actpass":
        return "passive" if role == "server" else "active"
    return {"active": "passive", "passive": "active"}.get(offered)


@dataclass(frozen=True)
class CryptoAttribute:
    """``a=crypto:<tag> <crypto-suite> inline:<key||salt>[|<lifetime>][|<MKI>:<length>] [<session-params>]``
    (RFC 4568 §9.1).

    ``key``: the decoded master key || master salt (exactly :data:`SRTP_KEY_LENGTHS` octets for
    the suites we know; as given for the others). ``lifetime`` and ``mki``: as
    written, or None; checked for syntax, not used. Of several ``;``-separated keys the first
    is kept. ``session_params``: the tokens after the key parameters (``KDR=0``, ``WSH=128``…).
    """

    tag: int
    suite: str
    key: bytes = field(repr=False)
    lifetime: str | None = None
    mki: str | None = None
    session_params: tuple[str, ...] = ()

    @classmethod
    def parse(cls, value: str) -> CryptoAttribute:
        """Parse the value of an ``a=crypto`` line; :class:`SDPParseError` if malformed."""
        parts = value.split()
        if len(parts) < 3:
            raise SDPParseError("a=crypto needs <tag> <crypto-suite> <key-params>")
        tag, suite, key_params = parts[:3]
        if not _CRYPTO_TAG_RE.fullmatch(tag):
            raise SDPParseError(f"a=crypto tag {tag[:20]!r} is not 1-9 digits")
        if not _CRYPTO_SUITE_RE.fullmatch(suite):
            raise SDPParseError(f"a=crypto suite {suite[:30]!r} is not a suite name")
        method, colon, info = key_params.split(";", 1)[0].partition(":")
        if method.lower() != "inline" or not colon:
            raise SDPParseError(f"a=crypto key method {method[:20]!r}: only inline is defined")
        key_text, *extras = info.split("|")
        if len(extras) > 2:
            raise SDPParseError("a=crypto inline key has more than a lifetime and an MKI")
        lifetime = mki = None
        for extra in extras:
            if _MKI_RE.fullmatch(extra) and mki is None:
                mki = extra
            elif _LIFETIME_RE.fullmatch(extra) and lifetime is None and mki is None:
                lifetime = extra
            else:
                raise SDPParseError(f"a=crypto: {extra[:30]!r} is neither a lifetime nor MKI:length")
        if not _BASE64_RE.fullmatch(key_text):
            raise SDPParseError("a=crypto inline key is not base64")
        try:
            key = base64.b64decode(key_text.rstrip("=") + "=" * (-len(key_text.rstrip("=")) % 4), validate=True)
        except (binascii.Error, ValueError):
            raise SDPParseError("a=crypto inline key is not base64") from None
        need = SRTP_KEY_LENGTHS.get(suite)
        if need is not None and len(key) != need:
            raise SDPParseError(f"a=crypto {suite} needs {need} octets of key||salt, got {len(key)}")
        return cls(int(tag), suite, key, lifetime, mki, tuple(parts[3:]))

    def __str__(self) -> str:
        inline = base64.b64encode(self.key).decode("ascii")
        for extra in (self.lifetime, self.mki):
            if extra is not None:
                inline += f"|{extra}"
        return " ".join([str(self.tag), self.suite, f"inline:{inline}", *self.session_params])

    @property
    def usable(self) -> bool:
        """True if we can key SRTP with it: a suite of :data:`SRTP_KEY_LENGTHS` with a key of
        its length, no MKI in the packets (none, or length 0), no ``KDR`` other than 0 and none
        of the UNENCRYPTED/UNAUTHENTICATED session parameters."""
        if len(self.key) != SRTP_KEY_LENGTHS.get(self.suite, -1):
            return False
        if self.mki is not None and not self.mki.endswith(":0"):
            return False
        for param in self.session_params:
            name, _, value = param.partition("=")
            if name.upper() in _UNSUPPORTED_PARAMS or (name.upper() == "KDR" and value != "0"):
                return False
        return True


def check_srtp_suites(suites: Sequence[str]) -> tuple[str, ...]:
    """``suites`` as a tuple, checked: at least one, each a suite of :data:`SRTP_KEY_LENGTHS`,
    none twice; ``ValueError`` naming the first bad one."""
    if not suites:
        raise ValueError("srtp suites: at least one")
    for suite in suites:
        if suite not in SRTP_KEY_LENGTHS:
            raise ValueError(f"srtp suite {suite[:40]!r}: one of {', '.join(SRTP_KEY_LENGTHS)}")
    if len(set(suites)) != len(suites):
        raise ValueError("srtp suites: each once")
    return tuple(suites)


def new_crypto(tag: int, suite: str = SRTP_SUITES[0]) -> CryptoAttribute:
    """A fresh ``a=crypto`` line: ``tag``, ``suite`` (one of :data:`SRTP_KEY_LENGTHS`) and a
    random master key || salt of its length from :mod:`secrets` (RFC 4568 §6.1: keys must be
    random). ``ValueError`` for another suite."""
    if suite not in SRTP_KEY_LENGTHS:
        raise ValueError(f"crypto suite {suite[:40]!r}: one of {', '.join(SRTP_KEY_LENGTHS)}")
    return CryptoAttribute(tag, suite, secrets.token_bytes(SRTP_KEY_LENGTHS[suite]))


def crypto_attributes(media: MediaDescription) -> list[CryptoAttribute]:
    """The media's ``a=crypto`` lines in order; malformed ones are skipped (RFC 4568 §7.1.1:
    an answerer ignores lines it does not understand)."""
    out = []
    for value in media.attribute_values("crypto"):
        try:
            out.append(CryptoAttribute.parse(value))
        except SDPParseError:
            continue
    return out


def _check_srtp_mode(srtp: str) -> None:
    if srtp not in SRTP_MODES:
        raise ValueError(f"srtp {srtp!r}: one of {', '.join(SRTP_MODES)}")


def audio_offer(
    address: str,
    port: int,
    payload_types: tuple[int, ...] | list[int] = (0, 8, 101),
    session_id: int | None = None,
    direction: str = "sendrecv",
    ptime: int = 20,
) -> SessionDescription:
    """Build an audio offer (RFC 3264 §5): one ``m=audio <port> RTP/AVP`` section.

    ``address`` is the RTP address (``IN IP6`` when it contains ``:``); ``port`` the RTP
    port. Static types 0 (PCMU), 3, 8 (PCMA), 9 (G722), 18 get an ``rtpmap``; 101 is
    ``telephone-event/8000`` and 110 ``telephone-event/48000``, each with ``fmtp 0-16``
    (RFC 4733); 111 is ``opus/48000/2`` with ``fmtp:111 useinbandfec=1`` (RFC 7587). ``ptime`` in ms.
    ``session_id`` defaults to a random 62-bit number. Raises ``ValueError`` for an
    unknown payload type, a bad port or direction.
    """
    if not 0 <= port <= 65535:
        raise ValueError(f"port {port} out of range")
    if direction not in _DIRECTIONS:
        raise ValueError(f"direction must be one of {_DIRECTIONS}")
    addrtype = "IP6" if ":" in address else "IP4"
    sid = secrets.randbits(62) if session_id is None else session_id
    attributes: list[tuple[str, str | None]] = []
    for pt in payload_types:
        codec = _codecs.for_payload_type(pt)
        if pt in STATIC_PAYLOAD_TYPES:
            enc, rate = STATIC_PAYLOAD_TYPES[pt]
            attributes.append(("rtpmap", f"{pt} {enc}/{rate}"))
        elif pt in _TELEPHONE_EVENTS:
            attributes.append(("rtpmap", f"{pt} telephone-event/{_TELEPHONE_EVENTS[pt]}"))
            attributes.append(("fmtp", f"{pt} 0-16"))
        elif codec is not None:
            attributes.append(("rtpmap", codec.rtpmap()))
            if codec.fmtp:
                attributes.append(("fmtp", f"{pt} {codec.fmtp}"))
        else:
            raise ValueError(f"no rtpmap known for payload type {pt}")
    attributes.append(("ptime", str(ptime)))
    attributes.append((direction, None))
    media = MediaDescription(
        "audio", port, "RTP/AVP", [str(pt) for pt in payload_types], attributes=attributes
    )
    return SessionDescription(
        origin=Origin("skinnysip", sid, sid, "IN", addrtype, address),
        session_name="skinnysip",
        connection=Connection("IN", addrtype, address),
        times=[(0, 0)],
        media=[media],
    )


# --------------------------------------------------------------------------- offer/answer (RFC 3264)

_REVERSE = {"sendonly": "recvonly", "recvonly": "sendonly", "sendrecv": "sendrecv", "inactive": "inactive"}
#: audio payload types we can send and receive, in our order of preference: the wideband codecs
#: whose binding imports here (111 opus, 9 G722: :func:`skinnysip.rtp.codecs.available`), then
#: G.711 (0 PCMU, 8 PCMA). A dynamic type here (111) stands for its codec, whatever type the
#: peer's SDP maps it to.
# AUDIO_CODECS is computed on first use (module ``__getattr__``): finding which bindings import
# loads them (libopus through ctypes), which the CLI's start-up should not pay for.


@functools.cache
def _audio_codecs() -> tuple[int, ...]:
    return tuple(c.payload_type for c in _codecs.available())


def __getattr__(name: str) -> Any:
    if name == "AUDIO_CODECS":
        return _audio_codecs()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def reverse_direction(direction: str) -> str:
    """The answerer's direction for an offered one (RFC 3264 §6.1): sendonly ↔ recvonly."""
    return _REVERSE.get(direction, "sendrecv")


def combine_directions(ours: str, theirs_reversed: str) -> str:
    """The strictest of two directions, both seen from our side (RFC 3264 §6.1): we send
    only if both allow it, receive only if both allow it."""
    send = ours in ("sendrecv", "sendonly") and theirs_reversed in ("sendrecv", "sendonly")
    recv = ours in ("sendrecv", "recvonly") and theirs_reversed in ("sendrecv", "recvonly")
    return {(True, True): "sendrecv", (True, False): "sendonly", (False, True): "recvonly"}.get(
        (send, recv), "inactive")


@dataclass
class AudioSession:
    """What an offer/answer exchange settled for the audio stream, from our side.

    ``remote``: the peer's RTP (address, port), None when it is on hold with ``0.0.0.0``/
    ``::`` or the stream was rejected (port 0); ``payload_type`` the codec both sides use
    (0 PCMU, 8 PCMA, 9 G722, a dynamic one for opus), ``encoding``/``clock_rate``/``fmtp``
    its rtpmap name, RTP clock rate and the peer's ``a=fmtp`` parameters; ``telephone_event``
    the RFC 4733 payload type at that same clock rate (None: not agreed);
    ``ptime`` seconds; ``direction`` what WE do (sendrecv, sendonly, recvonly, inactive; never
    sending to a peer holding with ``c=0.0.0.0``, RFC 3264 §8.4);
    ``rtcp_mux`` both offered RFC 5761 multiplexing; ``remote_rtcp`` where the peer's
    ``a=rtcp`` (RFC 3605) asks for its RTCP, None: the RTP port + 1 (or the RTP port itself
    with ``rtcp_mux``); ``rejected`` the m-line was refused,
    ``refusal`` why (when we refused it) and ``refusal_code`` the Warning code that says it
    (RFC 3261 §20.43: :data:`WARN_TRANSPORT`…). SRTP (RFC 4568): ``srtp_suite`` the agreed crypto
    suite, ``srtp_local_key`` our master key || salt (we protect with it), ``srtp_remote_key``
    the peer's (we unprotect with it); all three None = plain RTP. DTLS-SRTP (RFC 5763):
    ``dtls_role`` ``"client"`` (our ``a=setup:active``) or ``"server"`` (``passive``), None when
    the keys do not come from DTLS; ``dtls_fingerprints`` the peer's ``a=fingerprint`` values
    (:func:`fingerprints`), which its certificate must match. ``ice_remote``: the peer's ICE
    credentials (:func:`ice_credentials`), None when its SDP has none.
    """

    remote: tuple[str, int] | None
    payload_type: int
    telephone_event: int | None
    ptime: float
    direction: str
    rtcp_mux: bool = False
    rejected: bool = False
    refusal: str | None = None
    srtp_suite: str | None = None
    srtp_local_key: bytes | None = field(default=None, repr=False)  # keys stay out of logs
    srtp_remote_key: bytes | None = field(default=None, repr=False)
    encoding: str = "PCMU"
    clock_rate: int = 8000
    fmtp: str | None = None
    remote_rtcp: tuple[str, int] | None = None
    refusal_code: int | None = None
    dtls_role: str | None = None
    dtls_fingerprints: tuple[tuple[str, str], ...] = ()
    ice_remote: tuple[str, str] | None = None


def _audio(sd: SessionDescription) -> MediaDescription | None:
    return next((m for m in sd.media if m.media == "audio"), None)


def _answerable_audio(sd: SessionDescription, dtls: bool = False) -> MediaDescription | None:
    """The offered audio stream to answer: the first one with a port and an RTP profile we
    speak (:data:`RTP_PROTOS`, and :data:`DTLS_PROTOS` with ``dtls``), else the first audio
    stream (to be refused), else None."""
    audio = [m for m in sd.media if m.media == "audio"]
    protos = RTP_PROTOS + DTLS_PROTOS if dtls else RTP_PROTOS
    usable = (m for m in audio if m.port != 0 and m.proto.upper() in protos)
    return next(usable, audio[0] if audio else None)


def _remote(sd: SessionDescription, m: MediaDescription) -> tuple[str, int] | None:
    conn = sd.connection_for(m)
    if conn is None or m.port == 0 or conn.host in ("0.0.0.0", "::"):
        return None
    return conn.host, m.port


def rtcp_address(m: MediaDescription, remote: tuple[str, int] | None) -> tuple[str, int] | None:
    """Where the stream ``m``, whose RTP goes to ``remote``, wants its RTCP: its ``a=rtcp``
    (RFC 3605 §2.1: ``a=rtcp:port [IN IP4|IP6 address]``; without an address, the RTP one).
    None when there is no such attribute, when it is malformed or names a host name or an
    address of the other family than ``remote`` (RTCP then goes to the RTP port + 1, RFC
    3550 §11), and when ``remote`` is None (nothing is sent)."""
    value = m.attribute("rtcp")
    if value is None or remote is None:
        return None
    parts = value.split()
    if not parts or not parts[0].isdigit() or not 0 < int(parts[0]) < 65536:
        return None
    if len(parts) == 1:
        return remote[0], int(parts[0])
    if len(parts) != 4 or parts[1] != "IN" or parts[2] not in ("IP4", "IP6"):
        return None
    try:
        address = ipaddress.ip_address(parts[3])
    except ValueError:
        return None
    if address.version != ipaddress.ip_address(remote[0]).version or parts[2] != f"IP{address.version}":
        return None
    return str(address), int(parts[0])


def held_by_address(sd: SessionDescription, m: MediaDescription) -> bool:
    """True when ``m`` (a stream of ``sd`` with a port) has the unspecified connection
    address, ``0.0.0.0`` or ``::``: RFC 2543's hold, which RFC 3264 §8.4 still requires an
    agent to understand as "send neither RTP nor RTCP to the peer", whatever the direction
    attribute says."""
    conn = sd.connection_for(m)
    return m.port != 0 and conn is not None and conn.host in ("0.0.0.0", "::")


def _what_we_do(direction: str, sd: SessionDescription, m: MediaDescription) -> str:
    """Our ``direction`` without sending when the peer's stream ``m`` is held by address."""
    return combine_directions(direction, "recvonly") if held_by_address(sd, m) else direction


def agreed_ptime(remote_ms: float | None, ours_ms: float, codec: _codecs.Codec) -> float:
    """The packet duration (s) to send with ``codec``: the far end's ``a=ptime`` (RFC 4566 §6:
    what it would like to receive, a wish) when we can send it
    (:meth:`~skinnysip.rtp.codecs.Codec.ptime_problem`), else ours. A zero, negative, huge or
    fractional-sample ``a=ptime`` is ignored, not an error."""
    if remote_ms is not None and codec.ptime_problem(remote_ms / 1000) is None:
        return remote_ms / 1000
    return ours_ms / 1000


def same_family_remote(remote: tuple[str, int] | None, local: str) -> tuple[tuple[str, int] | None, str | None]:
    """``remote`` (the far end's RTP address from SDP) as our ``local`` media address's IP family
    can send to: an IPv4-mapped IPv6 address (``::ffff:192.0.2.1``, RFC 4291 §2.5.5.2) becomes
    its IPv4 address for an IPv4 ``local``. Returns (remote, None), or (None, why) when the
    families differ otherwise — RFC 3261 §20.43's warning 301, "incompatible network address
    formats"; a host name is left as it is (the target policy judges names)."""
    if remote is None or not is_ip(local) or not is_ip(remote[0]) or is_ipv6(local) == is_ipv6(remote[0]):
        return remote, None
    if not is_ipv6(local):
        mapped = ipaddress.IPv6Address(strip_brackets(remote[0])).ipv4_mapped
        if mapped is not None:
            return (str(mapped), remote[1]), None
    theirs, mine = (6, 4) if is_ipv6(remote[0]) else (4, 6)
    return None, (f"incompatible network address formats: SDP c= address {remote[0]} is IPv{theirs}, "
                  f"our media address {local} is IPv{mine}")


def _telephone_event(m: MediaDescription, clock_rate: int = 8000) -> int | None:
    listed = set(m.payload_types)
    for pt, rtpmap in m.rtpmaps().items():
        if pt in listed and rtpmap.encoding.lower() == "telephone-event" and rtpmap.clock_rate == clock_rate:
            return pt
    return None


def _usable_codecs(payload_types: Sequence[int]) -> tuple[_codecs.Codec, ...]:
    """The codecs ``payload_types`` name (:func:`skinnysip.rtp.codecs.for_payload_type`) whose
    binding imports here."""
    found = (_codecs.for_payload_type(pt) for pt in payload_types)
    return tuple(c for c in found if c is not None and c.is_available)


def _first_codec(m: MediaDescription, among: tuple[_codecs.Codec, ...]) -> tuple[int, _codecs.Codec] | None:
    """The first payload type of ``m`` (its order) whose rtpmap names one of ``among``."""
    rtpmaps = m.rtpmaps()
    for pt in m.payload_types:
        r = rtpmaps.get(pt)
        codec = _codecs.matching(r.encoding, r.clock_rate, r.channels, among) if r else None
        if codec is not None:
            return pt, codec
    return None


def _te_default(clock_rate: int) -> int:
    return TELEPHONE_EVENT_48K_PT if clock_rate == 48000 else TELEPHONE_EVENT_PT


def audio_answer(
    offer: SessionDescription,
    address: str,
    port: int,
    *,
    direction: str = "sendrecv",
    codecs: tuple[int, ...] | None = None,
    session_id: int | None = None,
    version: int = 0,
    ptime: int = 20,
    srtp: str = "off",
    srtp_key: bytes | None = None,
    srtp_suites: Sequence[str] | None = None,
    dtls_fingerprint: tuple[str, str] | None = None,
    dtls_role: str | None = None,
) -> tuple[SessionDescription, AudioSession]:
    """Answer an offer's first audio stream with a port and an RTP profile over UDP
    (:data:`RTP_PROTOS`; answered in that same profile) (RFC 3264 §6): the first offered codec of
    ``codecs`` whose binding imports here (the offerer's order, matched by rtpmap name, clock
    rate and channels, answered under the offerer's payload type), telephone-event if offered at
    that codec's clock rate (RFC 4733 §2.1), our ``direction`` combined
    with the reverse of the offered one (§6.1; the session's ``direction`` also loses sending
    when the offer holds by address, :func:`held_by_address`, while the answer says what we
    are willing to do), ``a=rtcp-mux`` echoed if offered (RFC 5761),
    the offered ``a=ptime`` when we can send it (:func:`agreed_ptime`), else ``ptime``.
    With no common codec, no audio stream in such a profile (DTLS-SRTP, RTP over TCP…), or
    media at an address of the other IP family than ``address`` (:func:`same_family_remote`),
    the m-line is refused with port 0 (§6) and ``refusal`` says why. Other media lines are
    refused with port 0, each in its place (the answer has the offer's m-lines in its order). Raises ``ValueError`` if the offer has no audio stream or ``srtp``
    is not one of :data:`SRTP_MODES`.

    SRTP (RFC 4568 §7.1.2): with ``srtp`` not ``off``, the first offered ``a=crypto`` we can
    use (the offerer's order; of ``srtp_suites`` when given, else of :data:`SRTP_KEY_LENGTHS`) is answered with the same tag and suite and our own key
    (``srtp_key`` when it is a 30-octet key to keep, e.g. on a re-offer; else fresh from
    :mod:`secrets`). The stream is refused (port 0, ``refusal`` says why) when the offer is
    RTP/SAVP and ``srtp`` is ``off`` or no crypto line is usable, and when ``srtp`` is
    ``mandatory`` or ``dtls`` and the offer has no usable crypto. With ``srtp`` ``off`` the crypto lines
    of an RTP/AVP offer are ignored (plain RTP).

    DTLS-SRTP (RFC 5763 §5, RFC 8842): with ``srtp`` not ``off`` and ``dtls_fingerprint`` (our
    certificate's (hash name, hex), :class:`skinnysip.net.dtls.Certificate`), a
    ``UDP/TLS/RTP/SAVP(F)`` offer is answered in its profile with our ``a=fingerprint`` and
    the ``a=setup`` of :func:`answer_setup` (``dtls_role``: the role of an association to
    keep); the session's ``dtls_role``/``dtls_fingerprints`` say how to run the handshake. It
    is refused without a usable ``a=fingerprint`` or with ``a=setup:holdconn``.
    """
    _check_srtp_mode(srtp)
    dtls_ok = srtp != "off" and dtls_fingerprint is not None
    m = _answerable_audio(offer, dtls_ok)
    if m is None:
        raise ValueError("the offer has no audio stream")
    is_dtls = m.proto.upper() in DTLS_PROTOS
    pick = _first_codec(m, _usable_codecs(_audio_codecs() if codecs is None else codecs))
    chosen, codec = pick if pick is not None else (None, _codecs.PCMU)
    te = _telephone_event(m, codec.clock_rate)
    mine = combine_directions(direction, reverse_direction(offer.direction_of(m)))
    mux = m.attribute("rtcp-mux") is not None
    secure = m.proto.upper() in _SECURE_PROTOS
    usable = [c for c in crypto_attributes(m) if c.usable and (srtp_suites is None or c.suite in srtp_suites)] \
        if srtp != "off" and not is_dtls else []
    their_fingerprints = fingerprints(offer, m) if is_dtls else ()
    setup = answer_setup(setup_of(offer, m), dtls_role) if is_dtls else None
    refusal, code = ("no common codec", WARN_MEDIA_FORMAT) if chosen is None else (None, None)
    if is_dtls:
        why = (f"{m.proto} (DTLS-SRTP) offered, SRTP is off here" if srtp == "off"
               else f"{m.proto} (DTLS-SRTP) offered, no DTLS certificate here" if not dtls_ok
               else "DTLS-SRTP offered without a usable a=fingerprint (RFC 8122 §5)" if not their_fingerprints
               else "DTLS-SRTP offered with a=setup:holdconn: no association to answer" if setup is None
               else None)
        if why is not None:
            refusal, code = why, WARN_TRANSPORT
    elif m.proto.upper() not in RTP_PROTOS:
        refusal = f"{m.proto[:40]} media is not supported here (RTP over UDP only: {', '.join(RTP_PROTOS)})"
        code = WARN_TRANSPORT
    elif secure and srtp == "off":
        refusal, code = f"{m.proto} (SRTP) offered, SRTP is off here", WARN_TRANSPORT
    elif (secure or srtp in ("mandatory", "dtls")) and not usable:
        suites = sorted({c.suite for c in crypto_attributes(m)})
        refusal = f"SRTP needed but no usable a=crypto offered (suites: {', '.join(suites) or 'none'})"
        code = WARN_TRANSPORT
    if refusal is not None:
        answer = audio_offer(address, port, (0,), session_id=session_id)
        answer.origin.session_version = version
        answer.media = [_refused(other) for other in offer.media]
        return answer, AudioSession(None, 0, None, 0.02, "inactive", rejected=True, refusal=refusal,
                                    refusal_code=code)
    assert chosen is not None
    formats = [(chosen, codec.payload_type)] + ([(te, _te_default(codec.clock_rate))] if te is not None else [])
    answer = _offer_with(address, port, formats, session_id, mine, ptime, version)
    keyed: CryptoAttribute | None = None
    if usable:
        theirs = usable[0]
        length = SRTP_KEY_LENGTHS[theirs.suite]
        key = srtp_key if srtp_key is not None and len(srtp_key) == length else None
        keyed = CryptoAttribute(theirs.tag, theirs.suite, key or secrets.token_bytes(length))
        answer.media[0].attributes.insert(-2, ("crypto", str(keyed)))
    if is_dtls and dtls_fingerprint is not None and setup is not None:
        answer.media[0].attributes[-2:-2] = [("setup", setup), ("fingerprint", " ".join(dtls_fingerprint))]
    line = answer.media[0]
    line.proto = m.proto  # the offered profile (RTP/AVPF answered as AVPF, RFC 4585 §4.2)
    if mux:
        line.attributes.append(("rtcp-mux", None))
    # other m-lines: refused, in the offer's order (RFC 3264 §6: same count, matched by order, port 0)
    answer.media = [line if other is m else _refused(other) for other in offer.media]
    remote, family_refusal = same_family_remote(_remote(offer, m), address)
    if family_refusal is not None:  # nothing we could send to: refused as a whole (RFC 3264 §6)
        line.port = 0
        return answer, AudioSession(None, 0, None, 0.02, "inactive", rejected=True, refusal=family_refusal,
                                    refusal_code=WARN_ADDRESS_FORMAT)
    session = AudioSession(remote, chosen, te, agreed_ptime(m.ptime, ptime, codec), _what_we_do(mine, offer, m), mux,
                           encoding=codec.name, clock_rate=codec.clock_rate, fmtp=m.fmtps().get(chosen),
                           remote_rtcp=None if mux else rtcp_address(m, remote))
    if keyed is not None:
        session.srtp_suite, session.srtp_local_key, session.srtp_remote_key = keyed.suite, keyed.key, usable[0].key
    if is_dtls:
        session.dtls_role = "client" if setup == "active" else "server"
        session.dtls_fingerprints = their_fingerprints
    session.ice_remote = ice_credentials(offer, m)
    return answer, session


def _refused(m: MediaDescription) -> MediaDescription:
    """The answer's line refusing the offered stream ``m``: port 0, its media and profile (RFC
    3264 §6)."""
    return MediaDescription(m.media, 0, m.proto, m.formats[:1] or ["0"])


def _offer_with(address: str, port: int, formats: list[tuple[int, int]], session_id: int | None, direction: str,
                ptime: int, version: int) -> SessionDescription:
    """An audio description of ``formats``: (payload type on the wire, the type
    :func:`audio_offer` describes it under, e.g. (96, 101) for telephone-event/8000 as 96)."""
    sd = audio_offer(address, port, tuple(known for _, known in formats), session_id=session_id,
                     direction=direction, ptime=ptime)
    sd.origin.session_version = version
    remap = {str(known): str(pt) for pt, known in formats if pt != known}
    if remap:
        media = sd.media[0]
        media.formats = [str(pt) for pt, _ in formats]
        media.attributes = [(n, _renumber(v, remap) if n in ("rtpmap", "fmtp") else v) for n, v in media.attributes]
    return sd


def _renumber(value: str | None, remap: dict[str, str]) -> str | None:
    if value is None:
        return None
    pt, space, rest = value.partition(" ")
    return f"{remap.get(pt, pt)}{space}{rest}"


def audio_offer_for(address: str, port: int, *, direction: str = "sendrecv", codecs: tuple[int, ...] | None = None,
                    telephone_event: int | None = TELEPHONE_EVENT_PT, session_id: int | None = None, version: int = 0,
                    ptime: int = 20, srtp: str = "off", crypto: Sequence[CryptoAttribute] | None = None,
                    telephone_event_48k: int | None = TELEPHONE_EVENT_48K_PT,
                    srtp_suites: Sequence[str] | None = None,
                    dtls_fingerprint: tuple[str, str] | None = None) -> SessionDescription:
    """Our audio offer (RFC 3264 §5): ``codecs`` in preference order (default: the wideband
    codecs available here first, :data:`AUDIO_CODECS`), telephone-event/8000 (RFC 4733) on
    ``telephone_event`` and, when Opus is offered, telephone-event/48000 on
    ``telephone_event_48k`` (RFC 4733 §2.1; None = no events for Opus; left out if its type
    is taken), ``direction`` (``sendonly`` to hold, §8.4), origin ``version`` (increment on
    each new offer in a session, §8).

    ``srtp`` (:data:`SRTP_MODES`): ``mandatory`` offers ``RTP/SAVP``, ``optional`` offers
    ``RTP/AVP``, both with ``a=crypto`` lines (RFC 4568): ``crypto`` (e.g. the keys in use,
    on a re-offer) or one fresh key per suite of ``srtp_suites`` (default :data:`SRTP_SUITES`),
    tags 1, 2…. ``dtls`` offers ``UDP/TLS/RTP/SAVP`` with ``a=setup:actpass`` (RFC 5763 §5,
    also on re-offers, RFC 8829 §5.2.2) and ``a=fingerprint`` from ``dtls_fingerprint`` ((hash
    name, hex) of our certificate). ``ValueError`` for another ``srtp``, a suite not in
    :data:`SRTP_KEY_LENGTHS`, or ``dtls`` without a fingerprint."""
    _check_srtp_mode(srtp)
    if srtp == "dtls" and dtls_fingerprint is None:
        raise ValueError("srtp dtls: a certificate fingerprint is needed for a=fingerprint")
    if codecs is None:
        codecs = _audio_codecs()
    formats = [(pt, pt) for pt in codecs]
    if telephone_event is not None:
        formats.append((telephone_event, TELEPHONE_EVENT_PT))
        wideband = any(c is not None and c.clock_rate == 48000 for c in map(_codecs.for_payload_type, codecs))
        if wideband and telephone_event_48k is not None and telephone_event_48k not in {pt for pt, _ in formats}:
            formats.append((telephone_event_48k, TELEPHONE_EVENT_48K_PT))
    offer = _offer_with(address, port, formats, session_id, direction, ptime, version)
    if srtp == "dtls" and dtls_fingerprint is not None:
        media = offer.media[0]
        media.proto = DTLS_PROTOS[0]
        media.attributes[-2:-2] = [("setup", "actpass"), ("fingerprint", " ".join(dtls_fingerprint))]
    elif srtp != "off":
        media = offer.media[0]
        media.proto = "RTP/SAVP" if srtp == "mandatory" else "RTP/AVP"
        suites = SRTP_SUITES if srtp_suites is None else srtp_suites
        lines = list(crypto) if crypto else [new_crypto(i, suite) for i, suite in enumerate(suites, 1)]
        media.attributes[-2:-2] = [("crypto", str(c)) for c in lines]
    return offer


def negotiate(offer: SessionDescription, answer: SessionDescription) -> AudioSession:
    """What our ``offer`` and the peer's ``answer`` settled (RFC 3264 §7): the codec is the
    first one in the answer that we offered (matched by rtpmap) and can run here, the
    telephone-event the answer's at that codec's clock rate if we offered one there; our
    direction is the reverse of the answer's
    combined with what we offered, without sending when the answer holds by address
    (:func:`held_by_address`); ``ptime`` the answer's wish when we can send it
    (:func:`agreed_ptime`). Raises ``ValueError`` if the answer has no audio stream,
    refused it, picked nothing we offered, or puts its media at an address of the other IP
    family than our offer's (:func:`same_family_remote`; an IPv4-mapped IPv6 address counts as
    IPv4).

    SRTP (RFC 4568 §7.1.2): if we offered ``a=crypto``, the answer's line with one of our
    tags gives the suite and the peer's key. :class:`SRTPRefused` (a ``ValueError``) when we
    offered RTP/SAVP and the answer has no such line or rejects the stream, or when the
    answer's line names another suite than ours under that tag. An RTP/AVP offer answered
    without crypto settles plain RTP."""
    ours = _audio(offer)
    m = _audio(answer)
    if ours is None or m is None:
        raise ValueError("no audio stream in the offer or the answer")
    ours_crypto = {c.tag: c for c in crypto_attributes(ours)}
    ours_dtls = ours.proto.upper() in DTLS_PROTOS
    secure = ours.proto.upper() in _SECURE_PROTOS and bool(ours_crypto)
    if m.port == 0:
        if secure or ours_dtls:
            raise SRTPRefused(f"the far end refused SRTP: it rejected our {ours.proto} audio stream")
        return AudioSession(None, 0, None, 0.02, "inactive", rejected=True)
    dtls: tuple[str, tuple[tuple[str, str], ...]] | None = None
    if ours_dtls:
        if m.proto.upper() not in DTLS_PROTOS:
            raise SRTPRefused(f"the far end refused SRTP: it answered our {ours.proto} offer with {m.proto[:40]}")
        theirs_fp = fingerprints(answer, m)
        if not theirs_fp:
            raise SRTPRefused("the far end refused SRTP: its DTLS-SRTP answer has no usable a=fingerprint (RFC 8122)")
        their_setup = setup_of(answer, m) or "passive"  # an answer's default (RFC 4145 §4.1)
        if their_setup not in ("active", "passive"):
            raise SRTPRefused(f"the far end refused SRTP: its answer has a=setup:{their_setup}, not active or "
                              "passive (RFC 5763 §5)")
        dtls = ("server" if their_setup == "active" else "client", theirs_fp)
    elif m.proto.upper() not in RTP_PROTOS:
        raise ValueError(f"the answer's audio stream is {m.proto[:40]}, not RTP over UDP ({', '.join(RTP_PROTOS)})")
    keys: tuple[str, bytes, bytes] | None = None
    if ours_crypto:
        theirs = [c for c in crypto_attributes(m) if c.tag in ours_crypto]
        if theirs:
            pick, mine_crypto = theirs[0], ours_crypto[theirs[0].tag]
            if pick.suite != mine_crypto.suite or not pick.usable:
                raise SRTPRefused(f"the far end refused SRTP: its a=crypto:{pick.tag} {pick.suite[:40]} does "
                                  f"not key our {mine_crypto.suite} (RFC 4568 §7.1.2)")
            keys = (pick.suite, mine_crypto.key, pick.key)
        elif secure:
            raise SRTPRefused("the far end refused SRTP: its answer has no a=crypto for our "
                              f"{ours.proto} offer")
    ours_maps = ours.rtpmaps()
    offered = [_codecs.matching(r.encoding, r.clock_rate, r.channels, _codecs.available())
               for r in (ours_maps.get(pt) for pt in ours.payload_types) if r is not None]
    agreed = _first_codec(m, tuple(c for c in offered if c is not None))
    if agreed is None:
        raise ValueError(f"the answer picked no codec we offered ({' '.join(m.formats)[:60]})")
    chosen, codec = agreed
    te = _telephone_event(m, codec.clock_rate) if _telephone_event(ours, codec.clock_rate) is not None else None
    mine = combine_directions(offer.direction_of(ours), reverse_direction(answer.direction_of(m)))
    mux = m.attribute("rtcp-mux") is not None and ours.attribute("rtcp-mux") is not None
    our_address = offer.connection_for(ours)
    remote, family_refusal = same_family_remote(_remote(answer, m), our_address.host if our_address else "")
    if family_refusal is not None:
        raise ValueError(family_refusal)
    session = AudioSession(remote, chosen, te, agreed_ptime(m.ptime, ours.ptime or 20, codec),
                           _what_we_do(mine, answer, m), mux,
                           encoding=codec.name, clock_rate=codec.clock_rate, fmtp=m.fmtps().get(chosen),
                           remote_rtcp=None if mux else rtcp_address(m, remote))
    if keys is not None:
        session.srtp_suite, session.srtp_local_key, session.srtp_remote_key = keys
    if dtls is not None:
        session.dtls_role, session.dtls_fingerprints = dtls
    session.ice_remote = ice_credentials(answer, m)
    return session
