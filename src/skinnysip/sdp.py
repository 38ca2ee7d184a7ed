"""SDP session descriptions (RFC 4566) for offers and answers (RFC 3264), sans-IO.

What a softphone or a probe needs: parse any description without losing lines,
read the media sections (port, payload types, ``rtpmap``/``fmtp``, direction, ptime,
connection address), and build a G.711 audio offer with :func:`audio_offer`.

``SessionDescription.parse(data)`` accepts ``str`` or ``bytes`` (UTF-8; undecodable
bytes survive via ``surrogateescape``), CRLF or bare LF line ends, and raises
:class:`SDPParseError` — and nothing else — on malformed input. ``to_bytes()`` writes
CRLF lines in the order RFC 4566 §5 prescribes.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass, field

__all__ = [
    "Connection",
    "MediaDescription",
    "Origin",
    "RtpMap",
    "SDPParseError",
    "SessionDescription",
    "audio_offer",
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
    port. Static types 0 (PCMU), 3, 8 (PCMA), 9, 18 get an ``rtpmap``; 101 is
    ``telephone-event/8000`` with ``fmtp:101 0-16`` (RFC 4733). ``ptime`` in ms.
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
        if pt in STATIC_PAYLOAD_TYPES:
            enc, rate = STATIC_PAYLOAD_TYPES[pt]
            attributes.append(("rtpmap", f"{pt} {enc}/{rate}"))
        elif pt == 101:
            attributes.append(("rtpmap", "101 telephone-event/8000"))
            attributes.append(("fmtp", "101 0-16"))
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
