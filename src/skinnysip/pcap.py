"""Write a result's wire exchange as a pcapng file that Wireshark and tshark open.

Input is the ``exchange`` of any result (a list of :class:`~skinnysip.result.WireMessage`:
direction, time in s since the epoch, ``local``/``remote`` ``host:port``, transport,
``raw``). Output is pcapng bytes (``application/vnd.tcpdump.pcap``):

- ``udp``: one IPv4 or IPv6 (LINKTYPE_IPV4 228 / LINKTYPE_IPV6 229) + UDP packet per message, the real
  addresses and ports, checksums computed.
- ``tcp``: one IP + TCP segment (PSH|ACK) per message; sequence and acknowledgement numbers are
  synthesized per connection and direction, continuous from message to message, so
  tshark's TCP reassembly and its SIP/SKINNY dissectors see the streams as sent. The
  three-way handshake is not in the exchange and is not invented.
- ``tls``: the exchange holds the decrypted messages, not the TLS records, so they are written
  as Wireshark "exported PDUs" (LINKTYPE_WIRESHARK_UPPER_PDU, 252, the format of Wireshark's
  *File → Export PDUs*) naming the ``sip`` or ``skinny`` dissector and carrying the real
  addresses and ports; each packet's comment says it is TLS plaintext.

RTP and RTCP of a call (``media``: :class:`~skinnysip.net.media.MediaPacket` records of its
streams: time on the same clock, direction, local and remote ``(ip, port)``, the datagram as on
the wire, SRTP-protected when SRTP was on) are written beside the messages as IP/UDP packets,
everything in time order. tshark decodes them with ``-d udp.port==PORT,rtp`` or
``-o rtp.heur_rtp_udp:TRUE`` (RTCP on odd ports is found by its heuristic). At most
:data:`MAX_MEDIA_PACKETS` media packets are written.

Each packet has the pcapng direction flag (outbound for ``sent``, inbound for ``received``)
and the message summary as its comment. SIP ``raw`` is text (encoded back as UTF-8); SCCP
``raw`` is the frame in hex (length, header version, message ID, body).

Raises :class:`PcapError` (with the message index and field) on an exchange it cannot write:
a host that is not an IP address, a bad port, hex that is not hex.
"""

from __future__ import annotations

import ipaddress
import os
import struct
import tempfile
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from skinnysip.addresses import strip_brackets
from skinnysip.result import WireMessage

LINKTYPE_IPV4 = 228
LINKTYPE_IPV6 = 229
LINKTYPE_WIRESHARK_UPPER_PDU = 252
MAX_MESSAGES = 5000
#: media packets written at most (a stream's :class:`~skinnysip.net.media.PacketLog` keeps at
#: most 12 000 by default, an SCCP call's pcap four logs; the writer costs about 0.4 ms a packet)
MAX_MEDIA_PACKETS = 50000
_MAX_SEGMENT = 65000  # payload per IP packet (16-bit IP length; loopback MTU is 64 KiB)

# Wireshark exported-PDU tags (epan/exported_pdu.h); values are stable across versions.
_EXP_PDU_TAG_END_OF_OPT = 0
_EXP_PDU_TAG_DISSECTOR_NAME = 12
_EXP_PDU_TAG_IPV4_SRC = 20
_EXP_PDU_TAG_IPV4_DST = 21
_EXP_PDU_TAG_IPV6_SRC = 22
_EXP_PDU_TAG_IPV6_DST = 23
_EXP_PDU_TAG_PORT_TYPE = 24
_EXP_PDU_TAG_SRC_PORT = 25
_EXP_PDU_TAG_DST_PORT = 26
_EXP_PDU_PT_TCP = 2


class MediaRecord(Protocol):
    """What :func:`exchange_to_pcapng` reads of a media packet (see
    :class:`skinnysip.net.media.MediaPacket`)."""

    @property
    def time(self) -> float: ...
    @property
    def direction(self) -> str: ...
    @property
    def local(self) -> tuple[str, int]: ...
    @property
    def remote(self) -> tuple[str, int]: ...
    @property
    def data(self) -> bytes: ...


class PcapError(ValueError):
    """An exchange that cannot be written; ``str()`` names the message and field."""


IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def split_endpoint(value: str) -> tuple[IPAddress, int]:
    """``"127.0.0.1:5060"`` / ``"[::1]:5060"`` → (address, port). Raises ValueError."""
    host, sep, port_s = value.rpartition(":")
    if not sep or not (port_s.isascii() and port_s.isdigit() and len(port_s) <= 5) or not 0 < int(port_s) < 65536:
        raise ValueError(f"{value!r} is not host:port")
    try:
        addr = ipaddress.ip_address(strip_brackets(host))
    except ValueError:
        raise ValueError(f"{host!r} is not an IP address") from None
    return addr, int(port_s)


def _payload(msg: WireMessage) -> bytes:
    if msg.decoded is not None:  # SCCP frames (binary) are carried as hex
        try:
            return bytes.fromhex(msg.raw)
        except ValueError:
            raise _FieldError("raw", "not hex (an SCCP frame)") from None
    return msg.raw.encode("utf-8")


@dataclass
class _Packet:
    data: bytes
    linktype: int  # LINKTYPE_IPV4, LINKTYPE_IPV6 or LINKTYPE_WIRESHARK_UPPER_PDU
    time: float
    direction: int  # pcapng epb_flags: 1 inbound, 2 outbound
    comment: str


def _initial_seq(endpoint: tuple[IPAddress, int]) -> int:
    # Deterministic per endpoint, so the same exchange always gives the same file.
    return zlib.crc32(f"{endpoint[0]}:{endpoint[1]}".encode()) | 0x1000


def _ip_packet(src: IPAddress, dst: IPAddress, l4: Any) -> tuple[bytes, int]:
    from scapy.layers.inet import IP
    from scapy.layers.inet6 import IPv6

    if src.version != dst.version:
        raise _FieldError("remote", "local and remote are of different IP versions")
    if src.version == 4:
        return bytes(IP(src=str(src), dst=str(dst), ttl=64) / l4), LINKTYPE_IPV4
    return bytes(IPv6(src=str(src), dst=str(dst)) / l4), LINKTYPE_IPV6


def _exported_pdu(dissector: str, src: tuple[IPAddress, int], dst: tuple[IPAddress, int],
                  payload: bytes) -> bytes:
    def tag(kind: int, value: bytes) -> bytes:
        value += b"\x00" * (-len(value) % 4)
        return struct.pack(">HH", kind, len(value)) + value

    v4 = src[0].version == 4
    out = tag(_EXP_PDU_TAG_DISSECTOR_NAME, dissector.encode())
    out += tag(_EXP_PDU_TAG_IPV4_SRC if v4 else _EXP_PDU_TAG_IPV6_SRC, src[0].packed)
    out += tag(_EXP_PDU_TAG_IPV4_DST if v4 else _EXP_PDU_TAG_IPV6_DST, dst[0].packed)
    out += tag(_EXP_PDU_TAG_PORT_TYPE, struct.pack(">I", _EXP_PDU_PT_TCP))
    out += tag(_EXP_PDU_TAG_SRC_PORT, struct.pack(">I", src[1]))
    out += tag(_EXP_PDU_TAG_DST_PORT, struct.pack(">I", dst[1]))
    out += struct.pack(">HH", _EXP_PDU_TAG_END_OF_OPT, 0)
    return out + payload


class _FieldError(ValueError):
    def __init__(self, name: str, reason: str) -> None:
        super().__init__(f"{name}: {reason}")


def _endpoint(msg: WireMessage, name: str) -> tuple[IPAddress, int]:
    try:
        return split_endpoint(getattr(msg, name))
    except ValueError as exc:
        raise _FieldError(name, str(exc)) from None


def _packets(exchange: Iterable[WireMessage]) -> list[_Packet]:
    from scapy.layers.inet import TCP, UDP
    from scapy.packet import Raw

    next_seq: dict[tuple[IPAddress, int, IPAddress, int], int] = {}  # (src, dst) -> next seq of src
    out: list[_Packet] = []
    for i, msg in enumerate(exchange):
        if i >= MAX_MESSAGES:
            raise PcapError(f"exchange: more than {MAX_MESSAGES} messages")
        try:
            local, remote = _endpoint(msg, "local"), _endpoint(msg, "remote")
            src, dst = (local, remote) if msg.direction == "sent" else (remote, local)
            direction = 2 if msg.direction == "sent" else 1
            payload = _payload(msg)
            transport = msg.transport.lower()
            if transport == "tls":
                if src[0].version != dst[0].version:
                    raise _FieldError("remote", "local and remote are of different IP versions")
                dissector = "skinny" if msg.decoded is not None else "sip"
                out.append(_Packet(_exported_pdu(dissector, src, dst, payload), LINKTYPE_WIRESHARK_UPPER_PDU,
                                   msg.time, direction, f"{msg.summary} (TLS plaintext)"))
            elif transport == "udp":
                data, linktype = _ip_packet(src[0], dst[0], UDP(sport=src[1], dport=dst[1]) / Raw(payload))
                out.append(_Packet(data, linktype, msg.time, direction, msg.summary))
            elif transport == "tcp":
                seq = next_seq.get((*src, *dst), _initial_seq(src))
                ack = next_seq.get((*dst, *src), _initial_seq(dst))
                for off in range(0, max(len(payload), 1), _MAX_SEGMENT):
                    chunk = payload[off:off + _MAX_SEGMENT]
                    seg = TCP(sport=src[1], dport=dst[1], seq=seq, ack=ack, flags="PA", window=65535) / Raw(chunk)
                    data, linktype = _ip_packet(src[0], dst[0], seg)
                    out.append(_Packet(data, linktype, msg.time, direction, msg.summary))
                    seq = (seq + len(chunk)) & 0xFFFFFFFF
                next_seq[(*src, *dst)] = seq
            else:
                raise _FieldError("transport", f"{msg.transport!r} is not udp, tcp or tls")
        except _FieldError as exc:
            raise PcapError(f"exchange[{i}].{exc}") from None
    return out


def _media_packets(media: Iterable[MediaRecord]) -> list[_Packet]:
    from scapy.layers.inet import UDP
    from scapy.packet import Raw

    out: list[_Packet] = []
    addresses: dict[tuple[str, int], tuple[IPAddress, int]] = {}

    def address(value: tuple[str, int], name: str) -> tuple[IPAddress, int]:
        found = addresses.get(value)
        if found is None:
            try:
                host, port = value
                if not 0 < int(port) < 65536:
                    raise ValueError(f"port {port!r} is not a UDP port")
                found = addresses[value] = (ipaddress.ip_address(strip_brackets(str(host))), int(port))
            except (TypeError, ValueError) as exc:
                raise _FieldError(name, str(exc)) from None
        return found

    for i, pkt in enumerate(media):
        if i >= MAX_MEDIA_PACKETS:
            raise PcapError(f"media: more than {MAX_MEDIA_PACKETS} packets")
        try:
            local, remote = address(pkt.local, "local"), address(pkt.remote, "remote")
            sent = pkt.direction == "sent"
            src, dst = (local, remote) if sent else (remote, local)
            data, linktype = _ip_packet(src[0], dst[0], UDP(sport=src[1], dport=dst[1]) / Raw(bytes(pkt.data)))
        except _FieldError as exc:
            raise PcapError(f"media[{i}].{exc}") from None
        out.append(_Packet(data, linktype, pkt.time, 2 if sent else 1, ""))
    return out


_IFNAMES = {LINKTYPE_IPV4: "ipv4", LINKTYPE_IPV6: "ipv6", LINKTYPE_WIRESHARK_UPPER_PDU: "tls-plaintext"}


class _Frame(bytes):
    """One link-layer frame for scapy's writer, which reads these attributes off the packet."""

    time: float
    direction: int
    comments: list[bytes]
    sniffed_on: str | None


def exchange_to_pcapng(exchange: Iterable[WireMessage], media: Sequence[MediaRecord] = ()) -> bytes:
    """Return the pcapng bytes of ``exchange`` and of a call's ``media`` packets, in time order
    (see the module docstring). Raises PcapError."""
    from scapy.utils import PcapNgWriter

    packets = _packets(exchange)
    if media:
        packets = sorted(packets + _media_packets(media), key=lambda p: p.time)  # stable: ties keep order
    # scapy's writer takes a file name only; the file lives for the duration of this call.
    with tempfile.TemporaryDirectory(prefix="skinnysip-pcap-") as tmp:
        path = os.path.join(tmp, "exchange.pcapng")
        with PcapNgWriter(path) as writer:
            first = packets[0].linktype if packets else LINKTYPE_IPV4
            writer.linktype = first
            writer.write_header(None)  # section header + interface 0 (unnamed) of the first link type
            for pkt in packets:
                frame = _Frame(pkt.data)
                frame.time = pkt.time
                frame.direction = pkt.direction
                frame.comments = [pkt.comment.encode()] if pkt.comment else []
                # One interface per link type: a frame's bytes take the writer's current link
                # type, which scapy records in the interface block it adds for a new name.
                frame.sniffed_on = None if pkt.linktype == first else _IFNAMES[pkt.linktype]
                writer.linktype = pkt.linktype
                writer.write_packet(frame)
        with open(path, "rb") as f:
            return f.read()
