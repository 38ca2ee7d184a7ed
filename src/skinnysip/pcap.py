"""Write a result's wire exchange as a pcapng file that Wireshark and tshark open.

Input is the ``exchange`` of any result (a list of :class:`~skinnysip.result.WireMessage`:
direction, time in s since the epoch, ``local``/``remote`` ``host:port``, transport,
``raw``). Output is pcapng bytes (``application/vnd.tcpdump.pcap``):

- ``udp``: one IPv4 or IPv6 + UDP packet per message (LINKTYPE_RAW 101, raw IP: the version
  nibble tells the two apart, and libpcap-based readers such as tcpdump and sngrep read it,
  which LINKTYPE_IPV4/IPV6, 228/229, they do not), the real addresses and ports, checksums
  computed.
- ``tcp``: one IP + TCP segment (PSH|ACK) per message; sequence and acknowledgement numbers are
  synthesized per connection and direction, continuous from message to message, so
  tshark's TCP reassembly and its SIP/SKINNY dissectors see the streams as sent. The
  three-way handshake is not in the exchange and is not invented.
- ``tls``: the exchange holds the decrypted messages, not the TLS records, so they are written
  as Wireshark "exported PDUs" (LINKTYPE_WIRESHARK_UPPER_PDU, 252, the format of Wireshark's
  *File → Export PDUs*) naming the ``sip`` or ``skinny`` dissector and carrying the real
  addresses and ports; each packet's comment says it is TLS plaintext.
- ``ws``/``wss`` (SIP over WebSocket, RFC 7118): the exchange holds the SIP messages the
  WebSocket messages carried, not the frames (nor the handshake), so they are exported PDUs
  for the ``sip`` dissector too; each packet's comment names the WebSocket.

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

import io
import ipaddress
import struct
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from skinnysip.addresses import strip_brackets
from skinnysip.result import WireMessage

LINKTYPE_RAW = 101
LINKTYPE_WIRESHARK_UPPER_PDU = 252
MAX_MESSAGES = 5000
#: media packets written at most (a stream's :class:`~skinnysip.net.media.PacketLog` keeps at
#: most 12 000 by default, an SCCP call's pcap four logs; the writer costs about 25 µs a packet)
MAX_MEDIA_PACKETS = 50000
_MAX_SEGMENT = 65000  # payload per IP packet (16-bit IP length; loopback MTU is 64 KiB)
#: the largest UDP payload of one IPv4 / IPv6 datagram (16-bit length fields, RFC 768, RFC 8200)
_MAX_UDP_PAYLOAD = {4: 65535 - 20 - 8, 6: 65535 - 8}
_EPB_FLAGS = 2  # pcapng option code of epb_flags (direction in the two low bits)

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
    linktype: int  # LINKTYPE_RAW or LINKTYPE_WIRESHARK_UPPER_PDU
    time: float
    direction: int  # pcapng epb_flags: 1 inbound, 2 outbound
    comment: str


def _initial_seq(endpoint: tuple[IPAddress, int]) -> int:
    # Deterministic per endpoint, so the same exchange always gives the same file.
    return zlib.crc32(f"{endpoint[0]}:{endpoint[1]}".encode()) | 0x1000


def _ip_packet(src: IPAddress, dst: IPAddress, l4: Any) -> tuple[bytes, int]:
    """``l4`` (a dpkt UDP or TCP packet) in an IPv4 or IPv6 packet from ``src`` to ``dst``;
    dpkt fills in the lengths and checksums (the transport's over the pseudo-header)."""
    import dpkt

    if src.version != dst.version:
        raise _FieldError("remote", "local and remote are of different IP versions")
    proto = dpkt.ip.IP_PROTO_UDP if isinstance(l4, dpkt.udp.UDP) else dpkt.ip.IP_PROTO_TCP
    if src.version == 4:
        return bytes(dpkt.ip.IP(src=src.packed, dst=dst.packed, ttl=64, p=proto, data=l4)), LINKTYPE_RAW
    packet = dpkt.ip6.IP6(src=src.packed, dst=dst.packed, hlim=64, nxt=proto, plen=len(l4), data=l4)
    return bytes(packet), LINKTYPE_RAW


def _udp(src: tuple[IPAddress, int], dst: tuple[IPAddress, int], payload: bytes, field: str) -> Any:
    """A dpkt UDP datagram; :class:`_FieldError` on ``field`` when ``payload`` does not fit in one."""
    import dpkt

    limit = _MAX_UDP_PAYLOAD[src[0].version]
    if len(payload) > limit:
        raise _FieldError(field, f"{len(payload)} octets do not fit in one UDP datagram over "
                                 f"IPv{src[0].version} (at most {limit})")
    return dpkt.udp.UDP(sport=src[1], dport=dst[1], ulen=8 + len(payload), data=payload)


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
    import dpkt

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
            if transport in ("tls", "ws", "wss"):
                if src[0].version != dst[0].version:
                    raise _FieldError("remote", "local and remote are of different IP versions")
                dissector = "skinny" if msg.decoded is not None else "sip"
                carried = {"tls": "TLS plaintext", "ws": "WebSocket payload", "wss": "WebSocket payload, over TLS"}
                out.append(_Packet(_exported_pdu(dissector, src, dst, payload), LINKTYPE_WIRESHARK_UPPER_PDU,
                                   msg.time, direction, f"{msg.summary} ({carried[transport]})"))
            elif transport == "udp":
                data, linktype = _ip_packet(src[0], dst[0], _udp(src, dst, payload, "raw"))
                out.append(_Packet(data, linktype, msg.time, direction, msg.summary))
            elif transport == "tcp":
                seq = next_seq.get((*src, *dst), _initial_seq(src))
                ack = next_seq.get((*dst, *src), _initial_seq(dst))
                for off in range(0, max(len(payload), 1), _MAX_SEGMENT):
                    chunk = payload[off:off + _MAX_SEGMENT]
                    seg = dpkt.tcp.TCP(sport=src[1], dport=dst[1], seq=seq, ack=ack, win=65535, data=chunk,
                                       flags=dpkt.tcp.TH_PUSH | dpkt.tcp.TH_ACK)
                    data, linktype = _ip_packet(src[0], dst[0], seg)
                    out.append(_Packet(data, linktype, msg.time, direction, msg.summary))
                    seq = (seq + len(chunk)) & 0xFFFFFFFF
                next_seq[(*src, *dst)] = seq
            else:
                raise _FieldError("transport", f"{msg.transport!r} is not udp, tcp, tls, ws or wss")
        except _FieldError as exc:
            raise PcapError(f"exchange[{i}].{exc}") from None
    return out


def _media_packets(media: Iterable[MediaRecord]) -> list[_Packet]:
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
            data, linktype = _ip_packet(src[0], dst[0], _udp(src, dst, bytes(pkt.data), "data"))
        except _FieldError as exc:
            raise PcapError(f"media[{i}].{exc}") from None
        out.append(_Packet(data, linktype, pkt.time, 2 if sent else 1, ""))
    return out


_IFNAMES = {LINKTYPE_RAW: "ip", LINKTYPE_WIRESHARK_UPPER_PDU: "tls-plaintext"}


def exchange_to_pcapng(exchange: Iterable[WireMessage], media: Sequence[MediaRecord] = ()) -> bytes:
    """Return the pcapng bytes of ``exchange`` and of a call's ``media`` packets, in time order
    (see the module docstring). Raises PcapError."""
    from dpkt import pcapng

    packets = _packets(exchange)
    if media:
        packets = sorted(packets + _media_packets(media), key=lambda p: p.time)  # stable: ties keep order
    # one interface per link type, in the order they first appear (interface 0: the first packet's)
    interfaces: dict[int, int] = {}
    for pkt in packets:
        interfaces.setdefault(pkt.linktype, len(interfaces))
    if not interfaces:
        interfaces[LINKTYPE_RAW] = 0
    end = pcapng.PcapngOptionLE(code=pcapng.PCAPNG_OPT_ENDOFOPT)
    blocks = [pcapng.InterfaceDescriptionBlockLE(
        linktype=linktype, snaplen=0,  # 0: no limit (an exported PDU may exceed 64 KiB)
        opts=[pcapng.PcapngOptionLE(code=pcapng.PCAPNG_OPT_IF_NAME, data=_IFNAMES[linktype].encode()), end])
        for linktype in interfaces]
    out = io.BytesIO()
    writer = pcapng.Writer(out, shb=pcapng.SectionHeaderBlockLE(), idb=blocks)
    for pkt in packets:
        opts = [pcapng.PcapngOptionLE(code=pcapng.PCAPNG_OPT_COMMENT, data=pkt.comment.encode())] if pkt.comment else []
        opts += [pcapng.PcapngOptionLE(code=_EPB_FLAGS, data=struct.pack("<I", pkt.direction)), end]
        writer.writepkt(pcapng.EnhancedPacketBlockLE(iface_id=interfaces[pkt.linktype], pkt_data=pkt.data,
                                                     caplen=len(pkt.data), pkt_len=len(pkt.data), opts=opts),
                        ts=pkt.time)
    return out.getvalue()
