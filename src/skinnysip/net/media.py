"""asyncio driver of one RTP/RTCP media stream (RFC 3550) carrying audio and RFC 4733 DTMF.

:class:`MediaStream` owns two UDP sockets (RTP on an even port, RTCP on the next one, RFC 3550
§11) and runs the sans-IO pieces of :mod:`skinnysip.rtp` on the event loop's clock:

* **one media clock**: every ``ptime`` seconds (absolute deadlines ``t0 + i × ptime`` from the
  loop's monotonic clock, so sleep jitter never accumulates) the stream reads one frame from its
  audio source, encodes and sends it, and plays one frame out of the
  :class:`~skinnysip.rtp.jitter.JitterBuffer` into the recordings.  If the loop stalls for more
  than one ``ptime`` the clock skips forward (RTP timestamps advance, nothing is burst) and the
  skipped packets are counted in ``late_sent``.  All the streams of one event loop share one
  timer (:class:`MediaClock`), which ticks together those due within 1 ms of each other.
* **sending** follows the negotiated :class:`MediaConfig` (RFC 3264 directions: only
  ``sendrecv``/``sendonly`` with a remote address send), from the socket we receive on
  (symmetric RTP, RFC 4961), to the address SDP gave (no latching).  A new remote, payload type
  or a resume after hold starts a talkspurt (marker bit, RFC 3551 §4.1).
* **DTMF** (:meth:`MediaStream.send_dtmf`): RFC 4733 events from
  :func:`~skinnysip.rtp.dtmf.dtmf_packets`, sent in the same schedule; audio pauses during an
  event (RFC 4733 §2.5.1.2).  Received events go through
  :class:`~skinnysip.rtp.dtmf.DTMFReceiver`; in-band tones are detected as a fallback when
  no telephone-event was negotiated.
* **RTCP** (RFC 3550 §6): SR when we sent since the last report, else RR, each with SDES CNAME,
  at the randomised :func:`~skinnysip.rtp.rtcp.rtcp_interval`; the peer's reports give the round
  trip time (LSR/DLSR, §6.4.1) and its view of our stream; BYE on :meth:`MediaStream.close`.
* **impairments** for testing: ``rx_drop``/``tx_drop`` drop that fraction of packets (seeded
  :class:`random.Random`), ``tx_jitter`` delays each sent packet by up to that many seconds.
* **SRTP** (RFC 3711, keys from SDES, RFC 4568): with ``MediaConfig.srtp`` set, every RTP and
  RTCP packet is protected on the way out and unprotected on the way in by libsrtp
  (:class:`SRTPContext`, through ``pylibsrtp``); a packet that fails authentication or the
  replay check is dropped and counted (``report()["srtp"]``), never raised.
* **listeners and outside sources**: :meth:`MediaStream.add_tap` gives a bounded
  :class:`AudioTap` of the decoded frames played out (what the far end is heard saying); any
  :class:`~skinnysip.rtp.audio.AudioSource` can be put in ``MediaStream.source`` while the stream
  runs, e.g. a :class:`PushSource` a microphone feeds (the web page's audio socket does both).
* **recordings** (``record_dir``): ``<name>-rx.wav`` (what was played out, silence for gaps, so it
  lasts as long as the call), ``<name>-tx.wav`` (what was sent) and ``<name>-mix.wav``.
* **codecs** (:mod:`skinnysip.rtp.codecs`): G.711 PCMU/PCMA, and G.722 (PT 9) and Opus
  (dynamic PT) where their bindings install.  Audio inside the stream is always 8000 Hz: sources
  give 8 kHz frames, recordings, echo and in-band DTMF detection are 8 kHz.  The wideband codecs
  convert at the edge inside their binding (libg722's 8 kHz mode, libopus's 8 kHz PCM API), so no
  resampler runs and a call is heard as narrowband whatever the codec.  RTP timestamps, the
  jitter buffer, the receiver statistics and RTCP run at the codec's RTP clock (G.711/G.722:
  8000 Hz, Opus: 48000 Hz); RFC 4733 events use that same clock (RFC 4733 §2.1: the SDP layer
  negotiates ``telephone-event/48000`` beside Opus, ``/8000`` beside the others).

Everything is bounded: a stream stops its media clock after :data:`MAX_CALL_SECONDS`, queues have
a size, datagrams a size cap; a datagram callback never raises (bad input is counted).
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import ipaddress
import itertools
import logging
import math
import random
import socket
import time
import weakref
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, NamedTuple

import numpy as np
import numpy.typing as npt
import pylibsrtp

from skinnysip.net import realtime
from skinnysip.net.dtls import HANDSHAKE_TIMEOUT, DTLSAssociation, is_dtls
from skinnysip.net.ice import ICECredentials, ICELiteResponder
from skinnysip.net.stun import DEFAULT_TIMEOUT as STUN_TIMEOUT
from skinnysip.net.stun import BindingClient, is_stun
from skinnysip.net.trace import wire_time
from skinnysip.rtp import codecs, g711
from skinnysip.rtp.audio import AudioSource, EchoSource, SilenceSource, WavRecorder, mix
from skinnysip.rtp.dtmf import DTMFReceiver, InBandDTMFDetector, dtmf_packets, dtmf_rtp_packet
from skinnysip.rtp.jitter import JitterBuffer
from skinnysip.rtp.packet import RTPPacket, RTPParseError
from skinnysip.rtp.quality import mos_from_r, r_factor
from skinnysip.rtp.rtcp import (
    Bye,
    ReceiverReport,
    ReceptionReporter,
    ReportBlock,
    RTCPParseError,
    SenderReport,
    SourceDescription,
    build_compound,
    ntp_timestamp,
    parse_compound,
    round_trip_time,
    rtcp_interval,
)
from skinnysip.rtp.stats import RTP_SEQ_MOD, RTPReceiverStats, RTPSender
from skinnysip.rtp.tones import DTMF_FREQUENCIES, ToneSource
from skinnysip.sdp import SRTP_KEY_LENGTHS

if TYPE_CHECKING:
    from skinnysip.sdp import AudioSession

__all__ = ["AudioTap", "MediaConfig", "MediaPacket", "MediaStream", "PacketLog", "PushSource", "ReceivedDTMF", "SRTPConfig", "DTLSConfig", "ICEConfig", "SRTPContext", "DIRECTIONS", "check_port_range",
           "MAX_CALL_SECONDS"]

log = logging.getLogger(__name__)

#: the audio sample rate inside a stream (sources, recordings), and G.711's RTP clock
CLOCK_RATE = 8000
#: RFC 3264 §5.1 media directions (from our side)
DIRECTIONS = ("sendrecv", "sendonly", "recvonly", "inactive")
#: the media clock of a stream stops after this many seconds, whatever happens
MAX_CALL_SECONDS = 4 * 3600.0
#: datagrams longer than this are not parsed (counted in ``parse_errors``)
MAX_DATAGRAM = 2048
#: attempts to find a free even/odd port pair
PORT_PAIR_ATTEMPTS = 64
#: bound of :attr:`MediaStream.dtmf_events` (the oldest event is dropped when full)
DTMF_QUEUE_SIZE = 256
#: received DTMF events kept for :meth:`MediaStream.report`
DTMF_KEEP = 1000
#: digits waiting to be sent, at most
DTMF_SEND_QUEUE = 64
#: audio between two RFC 4733 events we send (seconds)
DTMF_GAP = 0.06
#: seconds without packets from the current remote SSRC after which another SSRC takes over
SSRC_SWITCH_AFTER = 0.5
#: audio taps per stream (listeners such as the web page's audio sockets)
MAX_TAPS = 8
#: nominal session bandwidth of one G.711 direction with IP/UDP/RTP headers, octets per second
_G711_OCTETS_PER_S = 8000 + 40 * 50
_UDP_IP_OVERHEAD = 28
_RTP_TS_MOD = 1 << 32
_DTMF_KEYS = frozenset(DTMF_FREQUENCIES)

Samples = npt.NDArray[np.int16]
Address = tuple[str, int]

#: default bounds of a stream's :class:`PacketLog`: the first and the newest octets kept, and
#: at most this many packets each (6000: a minute of 20 ms packets both ways)
PACKET_LOG_HEAD_BYTES = 1 << 20
PACKET_LOG_TAIL_BYTES = 1 << 20
PACKET_LOG_PACKETS = 6000


class MediaPacket(NamedTuple):
    """One RTP or RTCP datagram as it crossed the wire (after SRTP protection, before
    unprotection). ``time``: :func:`~skinnysip.net.trace.wire_time` seconds (the clock of the
    exchange's ``WireMessage`` times); ``direction``: ``sent``/``received``; ``local``/``remote``:
    ``(ip, port)`` of our socket and of the peer; ``data``: the UDP payload."""

    time: float
    direction: Literal["sent", "received"]
    local: Address
    remote: Address
    data: bytes


class PacketLog:
    """A bounded record of a stream's datagrams (:class:`MediaPacket`), for a call's pcap.

    Keeps the first packets, up to ``head_bytes`` octets of payload and ``max_packets``
    packets (the call set-up, the first RTCP reports), and then the newest, up to
    ``tail_bytes`` and ``max_packets`` (the end: RTCP BYE); what falls between is counted in
    ``dropped``. With the defaults that is the first and the last minute of a G.711 20 ms
    call, both directions, at most 12 000 packets and 2 MiB. No parsing: appending is a tuple
    into a deque. ``enabled=False`` records nothing."""

    def __init__(self, head_bytes: int = PACKET_LOG_HEAD_BYTES, tail_bytes: int = PACKET_LOG_TAIL_BYTES,
                 max_packets: int = PACKET_LOG_PACKETS, enabled: bool = True) -> None:
        self.enabled = enabled
        self.head_bytes = head_bytes
        self.tail_bytes = tail_bytes
        self.max_packets = max(1, max_packets)
        self.head: list[MediaPacket] = []
        self.tail: deque[MediaPacket] = deque()
        self.dropped = 0
        self._head_size = 0
        self._tail_size = 0

    def add(self, direction: Literal["sent", "received"], local: Address, remote: Address, data: bytes) -> None:
        """Record one datagram now."""
        if not self.enabled:
            return
        packet = MediaPacket(wire_time(), direction, local, remote, data)
        if not self.tail and self._head_size + len(data) <= self.head_bytes and len(self.head) < self.max_packets:
            self.head.append(packet)
            self._head_size += len(data)
            return
        self.tail.append(packet)
        self._tail_size += len(data)
        while self.tail and (self._tail_size > self.tail_bytes or len(self.tail) > self.max_packets):
            self._tail_size -= len(self.tail.popleft().data)
            self.dropped += 1

    def packets(self) -> list[MediaPacket]:
        """The packets kept, in the order they crossed the wire."""
        return self.head + list(self.tail)

    def __len__(self) -> int:
        return len(self.head) + len(self.tail)


#: SDES crypto suites → libsrtp profiles: AES-CM with HMAC-SHA1 (RFC 4568 §6.2; both tag SRTCP
#: with 80 bits, §6.2.2) and AES-GCM (RFC 7714: 16-octet tags, no separate authentication).
#: Their key || salt lengths: :data:`skinnysip.sdp.SRTP_KEY_LENGTHS`.
_SRTP_PROFILES = {
    "AES_CM_128_HMAC_SHA1_80": pylibsrtp.Policy.SRTP_PROFILE_AES128_CM_SHA1_80,
    "AES_CM_128_HMAC_SHA1_32": pylibsrtp.Policy.SRTP_PROFILE_AES128_CM_SHA1_32,
    "AEAD_AES_128_GCM": pylibsrtp.Policy.SRTP_PROFILE_AEAD_AES_128_GCM,
    "AEAD_AES_256_GCM": pylibsrtp.Policy.SRTP_PROFILE_AEAD_AES_256_GCM,
}


@dataclass(frozen=True)
class SRTPConfig:
    """The SRTP keys of one stream (RFC 3711): ``suite`` an SDES suite name
    (``AES_CM_128_HMAC_SHA1_80``, ``AES_CM_128_HMAC_SHA1_32``, ``AEAD_AES_128_GCM`` or
    ``AEAD_AES_256_GCM``), ``tx_key`` our master key || master salt (30, 30, 28 or 44 octets:
    :data:`skinnysip.sdp.SRTP_KEY_LENGTHS`; protects what we send), ``rx_key`` the peer's
    (unprotects what we receive). Keys are left out of ``repr``."""

    suite: str
    tx_key: bytes = field(repr=False)
    rx_key: bytes = field(repr=False)

    def validate(self) -> None:
        """``ValueError`` for an unknown suite or a key that is not the suite's length."""
        if self.suite not in _SRTP_PROFILES:
            raise ValueError(f"srtp suite {self.suite!r}: one of {', '.join(_SRTP_PROFILES)}")
        length = SRTP_KEY_LENGTHS[self.suite]
        for name, key in (("tx_key", self.tx_key), ("rx_key", self.rx_key)):
            if not isinstance(key, bytes) or len(key) != length:
                raise ValueError(f"srtp {name}: {length} octets of master key || salt for {self.suite}")

    @classmethod
    def from_audio(cls, audio: AudioSession) -> SRTPConfig | None:
        """The keys an offer/answer settled (:class:`skinnysip.sdp.AudioSession`), or None
        for plain RTP."""
        if audio.srtp_suite is None or audio.srtp_local_key is None or audio.srtp_remote_key is None:
            return None
        return cls(audio.srtp_suite, audio.srtp_local_key, audio.srtp_remote_key)


class SRTPContext:
    """libsrtp sessions (``pylibsrtp``) for one stream: one outbound (any SSRC of ours), one
    inbound (any SSRC of the peer's, each with its own replay window, RFC 3711 §3.3.2).

    ``protect``/``protect_rtcp`` return the SRTP/SRTCP packet, or None if libsrtp refuses
    (counted in ``protect_errors``). ``unprotect``/``unprotect_rtcp`` return the plain packet,
    or None when it fails authentication or is too short or long (``auth_failures``) or is a
    replay (``replays``). Nothing raises on packet data. :meth:`update` re-keys only the side
    whose key changed, so an unchanged outbound key keeps its rollover counter (RFC 3711 §3.3.1:
    a key never encrypts two packets with the same index)."""

    def __init__(self, config: SRTPConfig) -> None:
        config.validate()
        self.config = config
        self._tx = self._session(config.tx_key, pylibsrtp.Policy.SSRC_ANY_OUTBOUND)
        self._rx = self._session(config.rx_key, pylibsrtp.Policy.SSRC_ANY_INBOUND)
        self.auth_failures = 0
        self.replays = 0
        self.protect_errors = 0

    def _session(self, key: bytes, ssrc_type: int) -> pylibsrtp.Session:
        return pylibsrtp.Session(pylibsrtp.Policy(key=key, ssrc_type=ssrc_type,
                                                  srtp_profile=_SRTP_PROFILES[self.config.suite]))

    def update(self, config: SRTPConfig) -> None:
        """New keys from a new offer/answer: a side whose suite and key are unchanged keeps its
        session (and packet index); the other starts afresh. ``ValueError`` for a bad config."""
        config.validate()
        old, self.config = self.config, config
        if (old.suite, old.tx_key) != (config.suite, config.tx_key):
            self._tx = self._session(config.tx_key, pylibsrtp.Policy.SSRC_ANY_OUTBOUND)
        if (old.suite, old.rx_key) != (config.suite, config.rx_key):
            self._rx = self._session(config.rx_key, pylibsrtp.Policy.SSRC_ANY_INBOUND)

    def protect(self, packet: bytes) -> bytes | None:
        """SRTP packet of an RTP packet (RFC 3711 §3.3)."""
        return self._out(self._tx.protect, packet)

    def protect_rtcp(self, packet: bytes) -> bytes | None:
        """SRTCP packet of an RTCP compound packet (RFC 3711 §3.4)."""
        return self._out(self._tx.protect_rtcp, packet)

    def unprotect(self, packet: bytes) -> bytes | None:
        """The RTP packet inside an SRTP packet, or None (counted)."""
        return self._in(self._rx.unprotect, packet)

    def unprotect_rtcp(self, packet: bytes) -> bytes | None:
        """The RTCP compound packet inside an SRTCP packet, or None (counted)."""
        return self._in(self._rx.unprotect_rtcp, packet)

    def _out(self, protect: Callable[[bytes], bytes], packet: bytes) -> bytes | None:
        try:
            return protect(packet)
        except (pylibsrtp.Error, ValueError):
            self.protect_errors += 1
            return None

    def _in(self, unprotect: Callable[[bytes], bytes], packet: bytes) -> bytes | None:
        try:
            return unprotect(packet)
        except pylibsrtp.Error as exc:
            if "replay" in str(exc):
                self.replays += 1
            else:
                self.auth_failures += 1
        except ValueError:  # longer than libsrtp's buffer
            self.auth_failures += 1
        return None

    def report(self) -> dict[str, Any]:
        """``{"suite", "auth_failures", "replays", "protect_errors"}``."""
        return {"suite": self.config.suite, "auth_failures": self.auth_failures, "replays": self.replays,
                "protect_errors": self.protect_errors}


@dataclass
class DTLSConfig:
    """DTLS-SRTP for one stream (RFC 5763, RFC 5764): the keys come from a DTLS handshake on the
    media port (:mod:`skinnysip.net.dtls`). ``role``: ``"client"`` (our SDP said
    ``a=setup:active``; we send the ClientHello) or ``"server"`` (``passive``);
    ``fingerprints``: the peer's ``a=fingerprint`` values as (hash name, hex), which its
    certificate must match; ``certificate``: ours (None: the process's,
    :func:`skinnysip.net.dtls.default_certificate`); ``handshake_timeout``: seconds before a
    handshake that has not finished fails. An association is kept across
    :meth:`MediaStream.apply` calls while role, fingerprints and ``rtcp_mux`` stay the same
    (RFC 8842 §5.5: a re-offer does not restart it)."""

    role: str
    fingerprints: tuple[tuple[str, str], ...]
    certificate: Any = field(default=None, compare=False)
    handshake_timeout: float = HANDSHAKE_TIMEOUT

    def validate(self) -> None:
        """``ValueError`` for a role other than client/server, no fingerprint or a timeout out
        of 0..120 s."""
        if self.role not in ("client", "server"):
            raise ValueError(f"dtls role {self.role!r}: client or server")
        if not self.fingerprints or not all(isinstance(f, tuple) and len(f) == 2 for f in self.fingerprints):
            raise ValueError("dtls fingerprints: at least one (hash name, hex) pair")
        if not 0 < self.handshake_timeout <= 120:
            raise ValueError(f"dtls handshake_timeout {self.handshake_timeout} s: within 0..120 s")


@dataclass(frozen=True)
class ICEConfig:
    """ICE lite on one stream (RFC 8445 §2.5; :mod:`skinnysip.net.ice`): ``local`` our
    credentials (in our SDP), ``remote_ufrag`` the peer's ``a=ice-ufrag`` (None: not checked).
    The stream answers the peer's connectivity checks on its RTP and RTCP ports and sends
    media where the peer nominated (``USE-CANDIDATE``)."""

    local: ICECredentials
    remote_ufrag: str | None = None


@dataclass
class MediaConfig:
    """What offer/answer negotiated for one audio stream (RFC 3264), from our side.

    ``payload_type``: 0 (PCMU), 8 (PCMA), 9 (G722) or a dynamic type (96..127) for Opus.
    ``codec``: the encoding name (``PCMU``, ``PCMA``, ``G722``, ``opus``, as
    :attr:`skinnysip.sdp.AudioSession.encoding` has it); None = the codec ``payload_type``
    means by itself: a static type, or for a dynamic one the only dynamic codec we have (Opus).
    A codec whose binding is not installed is a ``ValueError``.
    ``ptime``: packet duration in seconds, 0.01..0.06 (Opus: 0.01, 0.02, 0.04 or 0.06).
    ``telephone_event``: the RFC 4733 payload type (96..127) or None if not negotiated.
    ``direction``: ``sendrecv``, ``sendonly``, ``recvonly`` or ``inactive`` (ours).
    ``remote``: where to send RTP (IP literal, port); None = nowhere yet.
    ``remote_rtcp``: where to send RTCP; None = the remote RTP port + 1, or the RTP port itself
    with ``rtcp_mux`` (RFC 5761). ``srtp``: :class:`SRTPConfig` to protect RTP and RTCP with
    (RFC 3711), None = plain RTP. ``dtls``: :class:`DTLSConfig` when the SRTP keys come from
    DTLS instead (``srtp`` then None); nothing is sent or played until the handshake is done.
    ``ice``: :class:`ICEConfig` when both SDPs had ICE and we are a lite agent.
    """

    payload_type: int = g711.PT_PCMU
    ptime: float = 0.02
    telephone_event: int | None = 101
    direction: str = "sendrecv"
    remote: Address | None = None
    remote_rtcp: Address | None = None
    rtcp_mux: bool = False
    srtp: SRTPConfig | None = None
    codec: str | None = None
    dtls: DTLSConfig | None = None
    ice: ICEConfig | None = None

    def validate(self) -> None:
        """``ValueError`` naming the first field that is out of range."""
        codec = self.audio_codec
        if not isinstance(self.ptime, int | float):
            raise ValueError(f"ptime {self.ptime!r} s is not a number")
        problem = codec.ptime_problem(self.ptime)
        if problem is not None:
            raise ValueError(problem)
        te = self.telephone_event
        if te is not None and (isinstance(te, bool) or not isinstance(te, int) or not 96 <= te <= 127):
            raise ValueError(f"telephone_event {te!r}: a dynamic payload type 96..127 or None")
        if self.direction not in DIRECTIONS:
            raise ValueError(f"direction {self.direction!r}: one of {', '.join(DIRECTIONS)}")
        for name, addr in (("remote", self.remote), ("remote_rtcp", self.remote_rtcp)):
            if addr is not None:
                _check_address(name, addr)
        if self.srtp is not None:
            if not isinstance(self.srtp, SRTPConfig):
                raise ValueError(f"srtp {type(self.srtp).__name__}: an SRTPConfig or None")
            self.srtp.validate()
        if self.dtls is not None:
            if not isinstance(self.dtls, DTLSConfig):
                raise ValueError(f"dtls {type(self.dtls).__name__}: a DTLSConfig or None")
            if self.srtp is not None:
                raise ValueError("srtp and dtls are exclusive: DTLS-SRTP makes its own keys")
            self.dtls.validate()

    @property
    def sends(self) -> bool:
        """True if this direction sends media and there is somewhere to send it."""
        return self.direction in ("sendrecv", "sendonly") and self.remote is not None

    @property
    def rtcp_target(self) -> Address | None:
        """Where RTCP goes: ``remote_rtcp``, else the remote RTP port (mux) or port + 1."""
        if self.remote_rtcp is not None:
            return self.remote_rtcp
        if self.remote is None:
            return None
        host, port = self.remote
        return (host, port) if self.rtcp_mux else (host, port + 1)

    @property
    def samples_per_packet(self) -> int:
        """8000 Hz samples in one packet (the stream's audio rate, not the RTP clock)."""
        return int(round(self.ptime * CLOCK_RATE))

    @property
    def audio_codec(self) -> codecs.Codec:
        """The :class:`~skinnysip.rtp.codecs.Codec` of ``codec``/``payload_type``;
        ``ValueError`` if there is none or its binding is not installed here."""
        pt = self.payload_type
        if isinstance(pt, bool) or not isinstance(pt, int) or not 0 <= pt <= 127:
            raise ValueError(f"payload_type {pt!r}: 0..127")
        if self.codec is not None:
            codec = codecs.by_name(self.codec)
            if codec is None:
                raise ValueError(f"codec {self.codec!r}: one of {', '.join(c.name for c in codecs.KNOWN)}")
            if pt != codec.payload_type and (codec.static or not 96 <= pt <= 127):
                raise ValueError(f"payload_type {pt} is not {codec.name}'s")
        else:
            found = codecs.for_payload_type(pt)
            if found is None and 96 <= pt <= 127:
                found = next((c for c in codecs.available() if not c.static), None)
            if found is None:
                raise ValueError(f"payload_type {pt!r}: only PCMU (0), PCMA (8), G722 (9) or a dynamic one "
                                 "for opus")
            codec = found
        if not codec.is_available:
            raise ValueError(f"codec {codec.name}: its binding is not installed (pip install 'skinnysip[codecs]')")
        if pt == self.telephone_event:
            raise ValueError(f"payload_type {pt} is also the telephone-event type")
        return codec


def _check_address(name: str, addr: Address) -> None:
    try:
        host, port = addr
        ipaddress.ip_address(host)
    except (TypeError, ValueError):
        raise ValueError(f"{name} {addr!r}: must be (IP literal, port)") from None
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        raise ValueError(f"{name} port {port!r} is outside 1..65535")


@dataclass(frozen=True)
class ReceivedDTMF:
    """A DTMF digit heard by a stream.  ``duration`` in seconds (0.0 when detected in-band, where
    it is not measured); ``method`` ``"rfc4733"`` or ``"inband"``; ``time`` seconds since the
    stream opened."""

    digit: str
    duration: float
    method: str
    time: float

    def as_dict(self) -> dict[str, Any]:
        return {"digit": self.digit, "duration": self.duration, "method": self.method, "time": self.time}


@dataclass
class _PendingDigit:
    digit: str
    duration: float
    done: asyncio.Future[None]


@dataclass
class _ActiveEvent:
    digit: str
    plans: list[Any]
    timestamp: int
    start_tick: int
    tone: ToneSource
    done: asyncio.Future[None]
    sent: int = 0


@dataclass
class _PeerView:
    """What the peer's RTCP says (RFC 3550 §6.4)."""

    cname: str | None = None
    ssrc: int | None = None
    fraction_lost: float | None = None
    cumulative_lost: int | None = None
    jitter_ms: float | None = None
    sender_reports: int = 0
    receiver_reports: int = 0
    packets_sent: int | None = None
    octets_sent: int | None = None
    bye: bool = False
    bye_reason: str | None = None


class _Socket(asyncio.DatagramProtocol):
    def __init__(self, receive: Callable[[bytes, Address], None], errors: Callable[[Exception], None]):
        self.receive = receive
        self.errors = errors

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.receive(data, (str(addr[0]), int(addr[1])))

    def error_received(self, exc: Exception) -> None:
        self.errors(exc)


def check_port_range(ports: tuple[int, int], field: str | None = None) -> tuple[int, int]:
    """``ports`` (first, last) as an RTP port range: within 1..65535, first <= last, and at
    least one even RTP port whose RTCP port (+1) is in it too. Returns it; ``ValueError``
    saying what is wrong (after ``field: `` when a field name is given)."""
    first, last = ports
    lead = f"{field}: " if field else ""
    if not (isinstance(first, int) and isinstance(last, int) and 1 <= first <= last <= 65535):
        raise ValueError(f"{lead}RTP ports {first}-{last}: FIRST-LAST within 1-65535, FIRST <= LAST")
    if first + first % 2 + 1 > last:
        raise ValueError(f"{lead}RTP ports {first}-{last}: no even port with its RTCP port (+1) inside")
    return first, last


def _bind_pair(host: str, port: int, ports: tuple[int, int] | None = None) -> tuple[socket.socket, socket.socket]:
    """Two UDP sockets on ``host``: RTP on an even port, RTCP on the next (RFC 3550 §11).
    ``port`` 0 = any free pair (tried :data:`PORT_PAIR_ATTEMPTS` times), or with ``ports``
    (first, last: :func:`check_port_range`) a free pair inside that range, every pair tried
    once from a random one on.  ``OSError`` if none."""
    family = socket.AF_INET6 if ipaddress.ip_address(host).version == 6 else socket.AF_INET

    def bind(p: int) -> socket.socket:
        s = socket.socket(family, socket.SOCK_DGRAM)
        try:
            s.bind((host, p))
        except OSError:
            s.close()
            raise
        s.setblocking(False)
        return s

    def with_rtcp(rtp: socket.socket) -> tuple[socket.socket, socket.socket]:
        # RTCP on the port after RTP's; RTP's socket is closed when that one cannot be had
        try:
            return rtp, bind(rtp.getsockname()[1] + 1)
        except OSError:
            rtp.close()
            raise

    if port:
        if port % 2 or not 0 < port < 65535:
            raise ValueError(f"RTP port {port} must be even and below 65535 (RTCP takes port + 1)")
        return with_rtcp(bind(port))
    last: OSError | None = None
    if ports is not None:
        first, top = check_port_range(ports)
        first += first % 2
        pairs = (top - 1 - first) // 2 + 1  # even RTP ports p with p + 1 <= top
        start = random.randrange(pairs)  # concurrent streams do not all try the first pairs first
        for k in range(pairs):
            candidate = first + 2 * ((start + k) % pairs)
            try:
                return with_rtcp(bind(candidate))
            except OSError as exc:
                last = exc
        raise OSError(f"no free even/odd UDP port pair in {ports[0]}-{ports[1]} on {host} ({last})")
    for _ in range(PORT_PAIR_ATTEMPTS):
        rtp = bind(0)
        got = rtp.getsockname()[1]
        if got % 2:
            rtp.close()
            try:
                rtp = bind(got - 1)
            except OSError as exc:
                last = exc
                continue
        try:
            return with_rtcp(rtp)
        except OSError as exc:
            last = exc
    raise OSError(f"no free even/odd UDP port pair on {host} after {PORT_PAIR_ATTEMPTS} attempts ({last})")


class PushSource(EchoSource):
    """An outside audio source a stream can send from (``MediaStream.source = PushSource()``),
    e.g. a browser's microphone: :meth:`feed` int16 samples at 8000 Hz as they come; the media
    clock :meth:`read` s them one ``ptime`` at a time.

    A small jitter buffer: after start and after running dry it plays silence until ``prime``
    seconds are queued (counted in ``underruns``); it keeps at most ``max_seconds`` and drops the
    oldest audio beyond (``dropped`` samples), so a sender faster than the call never grows it.
    ``received``: samples fed in all."""

    def __init__(self, max_seconds: float = 0.5, prime: float = 0.06) -> None:
        super().__init__(max_seconds)
        if not 0 <= prime < max_seconds:
            raise ValueError("prime must be within 0..max_seconds")
        self.prime_samples = int(prime * CLOCK_RATE)
        self.playing = False
        self.received = 0
        self.underruns = 0

    def feed(self, samples: npt.ArrayLike) -> None:
        """Queue ``samples`` (int16, 8000 Hz mono)."""
        chunk = np.asarray(samples, dtype=np.int16).reshape(-1)
        self.received += len(chunk)
        self.write(chunk)

    def read(self, n: int) -> Samples:
        if not self.playing:
            if self.buffered < max(self.prime_samples, n):
                return np.zeros(n, dtype=np.int16)
            self.playing = True
        if self.buffered < n:
            self.playing = False
            self.underruns += 1
        return super().read(n)


class AudioTap:
    """A bounded copy of the audio a :class:`MediaStream` plays out: each frame is the decoded
    received audio of one ``ptime`` (int16, 8000 Hz mono, silence where nothing arrived), as
    the recordings get it.  Holds at most ``max_frames``; when a slow reader lets it fill up the
    oldest frame is dropped and counted in ``dropped`` (never grows).  Made by
    :meth:`MediaStream.add_tap`, ended by :meth:`MediaStream.remove_tap` (then :meth:`get`
    returns None at once)."""

    def __init__(self, max_frames: int = 25) -> None:
        if not 1 <= max_frames <= 1000:
            raise ValueError(f"max_frames {max_frames} must be within 1..1000")
        self.max_frames = max_frames
        self.rate = CLOCK_RATE
        self.frames: deque[Samples] = deque()
        self.delivered = 0
        self.dropped = 0
        self.closed = False
        self._ready = asyncio.Event()

    def put(self, frame: Samples) -> None:
        """Queue a copy of ``frame`` (called by the stream's media clock; never blocks)."""
        if self.closed:
            return
        if len(self.frames) >= self.max_frames:
            self.frames.popleft()
            self.dropped += 1
        self.frames.append(np.array(frame, dtype=np.int16, copy=True))
        self._ready.set()

    async def get(self, timeout: float) -> Samples | None:
        """The oldest queued frame, waiting up to ``timeout`` seconds for one; None on timeout
        or once the tap is closed."""
        if not self.frames and not self.closed:
            self._ready.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._ready.wait(), timeout)
        if not self.frames or self.closed:
            return None
        self.delivered += 1
        return self.frames.popleft()

    def close(self) -> None:
        self.closed = True
        self.frames.clear()
        self._ready.set()


class MediaClock:
    """The frame clock of every :class:`MediaStream` on one event loop: one timer (a
    ``loop.call_at`` handle) armed at the earliest stream's next frame time, instead of a task
    sleeping per stream.  When it fires it ticks every stream due within :attr:`BATCH` seconds
    (sending up to that much early; RTP receivers play out by timestamp, RFC 3550 §5.1), so N
    streams at random phases of a 20 ms ptime wake the loop at most ``ptime / BATCH`` times a
    frame, not N.  A stream's tick returns its next due time or ``None`` (it stopped); one that
    raises is logged, counted in its ``callback_errors`` and stops, and the others go on.
    Bounded: it holds one entry per open stream."""

    #: seconds: streams due this close to the earliest are ticked with it
    BATCH = 0.001
    _clocks: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, MediaClock] = weakref.WeakKeyDictionary()

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = weakref.ref(loop)  # the registry is keyed weakly by the loop: no cycle back
        self._heap: list[tuple[float, int, MediaStream]] = []
        self._order = itertools.count()
        self._handle: asyncio.TimerHandle | None = None
        self._armed_at = math.inf

    @classmethod
    def of(cls, loop: asyncio.AbstractEventLoop) -> MediaClock:
        """The clock of ``loop`` (made on first use)."""
        clock = cls._clocks.get(loop)
        if clock is None:
            clock = cls._clocks[loop] = cls(loop)
        return clock

    def __len__(self) -> int:
        """Streams scheduled."""
        return len(self._heap)

    def schedule(self, due: float, stream: MediaStream) -> None:
        """Tick ``stream`` at ``due`` (loop seconds)."""
        heapq.heappush(self._heap, (due, next(self._order), stream))
        if due < self._armed_at:
            self._arm(due)

    def _arm(self, due: float) -> None:
        if self._handle is not None:
            self._handle.cancel()
        loop = self._loop()
        if loop is None:
            return
        self._armed_at = due
        self._handle = loop.call_at(due, self._fire)

    def _fire(self) -> None:
        self._handle, self._armed_at = None, math.inf
        heap, loop = self._heap, self._loop()
        if loop is None:
            return
        horizon = loop.time() + self.BATCH
        while heap and heap[0][0] <= horizon:
            _, _, stream = heapq.heappop(heap)
            try:
                due = stream._clock_tick()
            except Exception:  # one stream's fault must not stop the others' media
                log.exception("media stream %s: media clock stopped", stream.name)
                stream.callback_errors += 1
                due = None
            if due is not None:
                heapq.heappush(heap, (due, next(self._order), stream))
        if heap:
            self._arm(heap[0][0])


class MediaStream:
    """One RTP/RTCP audio stream on the event loop.  Create with :meth:`open`, configure with
    :meth:`apply`, always :meth:`close`.

    Attributes: ``local_ip``, ``local_port`` (RTP, even), ``rtcp_port`` (``local_port + 1``),
    ``config`` (the :class:`MediaConfig` in force), ``recordings`` (``{"rx"|"tx"|"mix": Path}``),
    ``dtmf_events`` (bounded :class:`asyncio.Queue` of :class:`ReceivedDTMF`), ``on_dtmf``
    (``callback(digit, duration_s)`` or None), ``inband_dtmf`` (whether digits are also
    looked for in the received audio when the peer sends no RFC 4733 events), ``muted``
    (while True, silence is sent in place of the source's audio — a microphone's mute: the
    source is still read, as a live microphone runs on, and RTP, RTCP and RFC 4733 digits go
    on, so the far end sees no gap and no re-INVITE is needed), ``stats``
    (:class:`RTPReceiverStats` of the current remote SSRC), ``ssrc`` (ours), and counters
    (``packets_received``, ``late_sent``, ``parse_errors``, …) that :meth:`report` gathers.
    """

    def __init__(self, *, source: AudioSource, record_dir: Path | None, name: str, rx_drop: float,
                 tx_drop: float, tx_jitter: float, jitter_min: float, jitter_max: float, echo: EchoSource | None,
                 echo_payload: bool, cname: str | None, seed: int | None, rtcp_scale: float,
                 on_dtmf: Callable[[str, float], None] | None, inband_dtmf: bool = True) -> None:
        self.local_ip = ""
        self.local_port = 0
        self.rtcp_port = 0
        #: (IP, RTP port, RTCP port) a STUN server saw our sockets at (:meth:`map_through_stun`)
        self.public: tuple[str, int, int] | None = None
        #: latching (RFC 7362 §4): after each :meth:`apply`, the source of the first RTP (and of
        #: the first RTCP) packet becomes where we send, when it differs from the configured
        #: remote — a far end behind a NAT that gave its private address in SDP. ``latch_refusal``
        #: (IP → why not, or None) vets such a source first (a target policy).
        self.latch = False
        self.latch_refusal: Callable[[str], str | None] | None = None
        #: the RTP and RTCP sources latched to, while the current config lasts
        self.latched: Address | None = None
        self.latched_rtcp: Address | None = None
        self._latch_tried = self._latch_rtcp_tried = False
        self._stun_clients: dict[str, BindingClient] = {}
        self.name = name
        self.config = MediaConfig()
        self.source = source
        self.muted = False
        self.echo = echo
        self.echo_payload = echo_payload
        self.taps: list[AudioTap] = []
        self.rx_drop = rx_drop
        self.tx_drop = tx_drop
        self.tx_jitter = tx_jitter
        self.jitter_min = jitter_min
        self.jitter_max = jitter_max
        self.rtcp_scale = rtcp_scale
        self.on_dtmf = on_dtmf
        # separate generators, so that RTCP timing never shifts which packets are dropped
        self._rng = random.Random(seed)
        self._rx_rng = random.Random(f"{seed}-rx") if seed is not None else random.Random()
        self._tx_rng = random.Random(f"{seed}-tx") if seed is not None else random.Random()
        self._sender = RTPSender(g711.PT_PCMU, clock_rate=CLOCK_RATE, rng=random.Random(self._rng.getrandbits(64))
                                 if seed is not None else None)
        self.cname = cname or f"{name}-{self._sender.ssrc:08x}@skinnysip"
        self.dtmf_events: asyncio.Queue[ReceivedDTMF] = asyncio.Queue(maxsize=DTMF_QUEUE_SIZE)
        self.dtmf_received: deque[ReceivedDTMF] = deque(maxlen=DTMF_KEEP)
        self.recordings: dict[str, Path] = {}
        self._recorders: dict[str, WavRecorder] = {}
        self._record_dir = record_dir
        # codec (the config's): its encoder, and a decoder per received payload type
        self._codec = self.config.audio_codec
        self._encoder = self._codec.encoder(CLOCK_RATE)
        self._decoders: dict[int, codecs.FrameDecoder] = {}
        # receive side
        self.stats = RTPReceiverStats(self._codec.clock_rate)
        self._reporter: ReceptionReporter | None = None
        self._jitter = self._new_jitter_buffer(self.config.ptime)
        self._jitter_retired: dict[str, float] = {}
        self._dtmf_rx = DTMFReceiver(self._codec.clock_rate)
        self._inband = InBandDTMFDetector(rate=CLOCK_RATE)
        self.inband_dtmf = inband_dtmf
        self._rfc4733_seen = False
        self._rx_pt = g711.PT_PCMU
        self._last_rx = -math.inf
        self.packets_received = 0
        self.octets_received = 0
        self.parse_errors = 0
        self.stun_received = 0  # STUN messages on the RTP or RTCP port: counted, not answered
        self.rx_dropped = 0
        self.foreign_packets = 0
        self.unknown_payload_types = 0
        self.decode_errors = 0
        self.callback_errors = 0
        self.socket_errors = 0
        self.remote_seen: Address | None = None
        self._srtp: SRTPContext | None = None  # RTP's (and RTCP's, unless DTLS keys RTCP apart)
        self._srtp_rtcp: SRTPContext | None = None
        # DTLS-SRTP (RFC 5764): an association per component ("rtp"; "rtcp" without rtcp-mux)
        self._dtls: dict[str, DTLSAssociation] = {}
        self._dtls_setup: tuple[Any, ...] | None = None  # (role, fingerprints, mux) they run for
        self._dtls_timers: dict[str, asyncio.TimerHandle] = {}
        self._dtls_peer: dict[str, Address] = {}  # where each component's DTLS last came from
        self._dtls_early: dict[str, deque[tuple[bytes, Address]]] = {}  # before apply() said how
        #: ``on_dtls(component, association)``: called when an association connects or fails
        self.on_dtls: Callable[[str, DTLSAssociation], None] | None = None
        self.unkeyed = 0  # packets not sent or not played: SRTP keys not there yet (DTLS)
        # ICE lite (RFC 8445 §2.5): a responder per component ("rtp"; "rtcp" without rtcp-mux)
        self._ice: dict[str, ICELiteResponder] = {}
        self._ice_setup: tuple[Any, ...] | None = None
        # send side
        self.late_sent = 0
        self.tx_dropped = 0
        self.dtmf_sent = 0
        self._new_spurt = True
        self._echo_offset: int | None = None  # echo_payload: our timestamp minus theirs
        # the media clock (_clock_tick): frame i is due at t0 + i * ptime, ptime the one it
        # ticks at (a new ptime from apply restarts it)
        self._clock_t0 = 0.0
        self._clock_i = 0
        self._clock_ptime = self.config.ptime
        self._tick = 0
        self._tick_time = 0.0
        self._tick_timestamp = self._sender.timestamp
        self._pending_digits: deque[_PendingDigit] = deque()
        self._event: _ActiveEvent | None = None
        self._gap_until = 0
        # RTCP
        self.rtt: float | None = None
        self.peer = _PeerView()
        self.rtcp_sent = 0
        self.rtcp_received = 0
        self.rtcp_parse_errors = 0
        self._avg_rtcp_size = 128.0
        self._sent_at_last_report = 0
        self._peer_sent_recently = False
        # lifecycle
        self._loop: asyncio.AbstractEventLoop | None = None
        self._rtp: asyncio.DatagramTransport | None = None
        self._rtcp: asyncio.DatagramTransport | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._opened = 0.0
        self._closed = False
        self._final: dict[str, Any] | None = None
        #: every RTP/RTCP datagram sent and received, bounded (for a call's pcap)
        self.packet_log = PacketLog()
        self._gc_held = False  # a realtime.acquire() to release at close

    # ---- lifecycle ----------------------------------------------------------------------

    @classmethod
    async def open(cls, local_ip: str, *, source: AudioSource | None = None,
                   record_dir: str | Path | None = None, name: str = "call", rx_drop: float = 0.0,
                   tx_drop: float = 0.0, tx_jitter: float = 0.0, jitter_min: float = 0.02,
                   jitter_max: float = 0.2, echo: bool = False, echo_payload: bool = False,
                   cname: str | None = None, port: int = 0, seed: int | None = None,
                   rtcp_scale: float = 1.0, on_dtmf: Callable[[str, float], None] | None = None,
                   ports: tuple[int, int] | None = None, inband_dtmf: bool = True) -> MediaStream:
        """Bind RTP on an even port of ``local_ip`` (IPv4 or IPv6 literal) and RTCP on the next,
        and start the media clock and the RTCP timer.  Nothing is sent before :meth:`apply`
        gives a remote address.

        ``source``: audio to send (``read(n)`` int16 at 8000 Hz; default silence).  ``echo``:
        send back what is played out (decoded audio); ``echo_payload``: send back each received
        audio payload byte for byte at once, with our SSRC/sequence numbers/timestamps (what
        SIPp's ``-rtp_echo`` check wants; RFC 4733 event packets are reflected too); in either
        mode ``source`` is ignored.  ``record_dir``: write
        ``<name>-rx.wav``, ``<name>-tx.wav``, ``<name>-mix.wav`` there.  ``rx_drop``/``tx_drop``:
        fraction 0..1 of received/sent packets dropped; ``tx_jitter``: up to that many seconds of
        extra delay per sent packet (may reorder); ``seed`` makes these and the SSRC repeatable.
        ``jitter_min``/``jitter_max``: jitter buffer delay bounds (s).  ``cname``: RTCP CNAME
        (default ``<name>-<ssrc>@skinnysip``).  ``port``: an even RTP port (0 = any free pair);
        ``ports``: (first, last), a free pair inside that range (as baresip's ``rtp_ports``;
        :func:`check_port_range`).  ``rtcp_scale``: multiplies the RFC 3550 report interval (tests use < 1).
        ``on_dtmf(digit, duration_s)``: called for every received digit. ``inband_dtmf``: when
        no telephone-event (RFC 4733) was negotiated and none arrived, find digits in the
        received audio (Goertzel, :class:`~skinnysip.rtp.dtmf.InBandDTMFDetector`; a few µs a
        frame); False listens for RFC 4733 events only (a load run's calls, as SIPp).

        While the stream is open the process's garbage collector runs rarely and not over what
        existed before (:mod:`skinnysip.net.realtime`; restored when the last stream or load run
        ends): :meth:`close` every stream you open.

        Raises ``ValueError`` for bad arguments and ``OSError`` if no port pair can be bound.
        """
        try:
            ipaddress.ip_address(local_ip)
        except ValueError:
            raise ValueError(f"local_ip {local_ip!r} is not an IP literal") from None
        for label, frac in (("rx_drop", rx_drop), ("tx_drop", tx_drop)):
            if not 0.0 <= frac <= 1.0:
                raise ValueError(f"{label} {frac} must be a fraction within 0..1")
        if not 0.0 <= tx_jitter <= 1.0:
            raise ValueError(f"tx_jitter {tx_jitter} s must be within 0..1 s")
        if not 0.0 <= jitter_min <= jitter_max <= 2.0:
            raise ValueError("jitter buffer bounds must satisfy 0 <= jitter_min <= jitter_max <= 2 s")
        if not 0.01 <= rtcp_scale <= 10.0:
            raise ValueError(f"rtcp_scale {rtcp_scale} must be within 0.01..10")
        if echo and echo_payload:
            raise ValueError("echo and echo_payload are exclusive")
        if ports is not None:
            check_port_range(ports)
        if not name or "/" in name or "\\" in name or name.startswith("."):
            raise ValueError(f"name {name!r} must be a plain file-name stem")
        echo_source = EchoSource() if echo else None
        stream = cls(source=echo_source or source or SilenceSource(),
                     record_dir=Path(record_dir) if record_dir is not None else None, name=name,
                     rx_drop=rx_drop, tx_drop=tx_drop, tx_jitter=tx_jitter, jitter_min=jitter_min,
                     jitter_max=jitter_max, echo=echo_source, echo_payload=echo_payload, cname=cname,
                     seed=seed, rtcp_scale=rtcp_scale, on_dtmf=on_dtmf, inband_dtmf=inband_dtmf)
        await stream._start(local_ip, port, ports)
        return stream

    async def _start(self, local_ip: str, port: int, ports: tuple[int, int] | None = None) -> None:
        loop = asyncio.get_running_loop()
        self._loop = loop
        rtp_sock, rtcp_sock = _bind_pair(local_ip, port, ports)
        try:
            self._rtp, _ = await loop.create_datagram_endpoint(
                lambda: _Socket(self._rtp_received, self._socket_error), sock=rtp_sock)
            self._rtcp, _ = await loop.create_datagram_endpoint(
                lambda: _Socket(self._rtcp_received, self._socket_error), sock=rtcp_sock)
            if self._record_dir is not None:
                self._record_dir.mkdir(parents=True, exist_ok=True)
                for kind in ("rx", "tx", "mix"):
                    path = self._record_dir / f"{self.name}-{kind}.wav"
                    self._recorders[kind] = WavRecorder(path, CLOCK_RATE)
                    self.recordings[kind] = path
        except BaseException:
            for transport in (self._rtp, self._rtcp):
                if transport is not None:
                    transport.close()
            rtp_sock.close()
            rtcp_sock.close()
            for rec in self._recorders.values():
                rec.close()
            raise
        name = self._rtp.get_extra_info("sockname")
        self.local_ip, self.local_port = str(name[0]), int(name[1])
        self.rtcp_port = int(self._rtcp.get_extra_info("sockname")[1])
        self._opened = loop.time()
        self._clock_t0 = self._opened
        MediaClock.of(loop).schedule(self._opened, self)
        self._tasks = [asyncio.create_task(self._rtcp_timer(), name=f"rtcp-{self.name}")]
        realtime.acquire()  # while media flows the collector runs rarely (net/realtime.py)
        self._gc_held = True

    @property
    def advertised(self) -> tuple[str, int, int]:
        """(IP, RTP port, RTCP port) for our SDP: where a STUN server saw the sockets
        (:attr:`public`, after :meth:`map_through_stun`), else where they are bound."""
        return self.public or (self.local_ip, self.local_port, self.rtcp_port)

    async def map_through_stun(self, server: Address, *, timeout: float = STUN_TIMEOUT) -> tuple[str, int, int]:
        """Ask the STUN server ``server`` (IP literal, port; of the stream's IP family) where
        it sees the RTP and the RTCP socket (RFC 8489 Binding, both at once), store the answer
        in :attr:`public` and return it: (IP, RTP port, RTCP port). Call it before the SDP is
        made; the NAT keeps the mappings while RTP and RTCP flow.

        Raises :class:`~skinnysip.net.stun.StunError` when either Binding fails (no answer
        within ``timeout`` s, an error response), ``ValueError`` for a ``server`` that is not
        an IP literal of the stream's family, ``RuntimeError`` after :meth:`close`."""
        if self._closed or self._rtp is None or self._rtcp is None:
            raise RuntimeError("the media stream is closed")
        if ipaddress.ip_address(server[0]).version != ipaddress.ip_address(self.local_ip).version:
            raise ValueError(f"STUN server {server[0]} is not of the stream's IP family ({self.local_ip})")
        rtp, rtcp = self._rtp, self._rtcp
        self._stun_clients = {"rtp": BindingClient(lambda data, remote: self._sendto(rtp, data, remote)),
                              "rtcp": BindingClient(lambda data, remote: self._sendto(rtcp, data, remote))}
        try:
            answers = await asyncio.gather(
                *(client.mapped_address(server, timeout=timeout) for client in self._stun_clients.values()),
                return_exceptions=True)
        finally:
            self._stun_clients = {}
        for answer in answers:
            if isinstance(answer, BaseException):
                raise answer
        (ip, rtp_port), (_, rtcp_port) = answers  # type: ignore[misc]
        self.public = (ip, rtp_port, rtcp_port)
        return self.public

    def apply(self, config: MediaConfig) -> None:
        """Start or change what the stream does, at once: start/stop sending by direction and
        remote (hold = ``recvonly``/``inactive``), switch remote address, payload type, ptime or
        telephone-event payload type or codec, start, re-key or stop SRTP.  A change of remote,
        payload type or codec starts a new talkspurt (marker bit); a codec of another RTP clock
        rate restarts the receive statistics and jitter buffer at that clock.  ``ValueError`` for a bad config or one whose addresses are of
        the other IP family; ``RuntimeError`` after :meth:`close`."""
        if self._closed:
            raise RuntimeError("the media stream is closed")
        config.validate()
        family = ipaddress.ip_address(self.local_ip).version
        for addr in (config.remote, config.remote_rtcp):
            if addr is not None and ipaddress.ip_address(addr[0]).version != family:
                raise ValueError(f"remote {addr[0]} is not IPv{family} like the local address {self.local_ip}")
        old = self.config
        config = replace(config)
        codec = config.audio_codec
        if (config.remote, config.payload_type) != (old.remote, old.payload_type):
            self._new_spurt = True
        if codec != self._codec:
            self._encoder = codec.encoder(CLOCK_RATE)
            self._decoders.clear()
            self._new_spurt = True
        clock_changed = codec.clock_rate != self._codec.clock_rate
        self._codec = codec
        if clock_changed:
            self.config = config
            self._new_remote_source()  # statistics, jitter buffer and DTMF timing at the new clock
        elif abs(config.ptime - old.ptime) > 1e-9:
            self._retire_jitter_buffer()
            self._jitter = self._new_jitter_buffer(config.ptime)
        if config.dtls is None and self._dtls_setup is not None:  # DTLS no more: its keys go with it
            self._stop_dtls()
            self._srtp = None
        if config.dtls is not None:
            pass  # the keys come from the handshake (_apply_dtls, below)
        elif config.srtp is None:
            self._srtp = None
        elif self._srtp is None:
            self._srtp = SRTPContext(config.srtp)
        else:
            self._srtp.update(config.srtp)
        if config.dtls is None:
            self._srtp_rtcp = self._srtp
        self.config = config
        self.latched = self.latched_rtcp = None
        self._latch_tried = self._latch_rtcp_tried = False
        if config.dtls is not None:
            self._apply_dtls(config)
        self._apply_ice(config)

    # ---- ICE lite (RFC 8445 §2.5) ------------------------------------------------------

    def _apply_ice(self, config: MediaConfig) -> None:
        """Answer connectivity checks as ``config.ice`` says (the same responders while the
        credentials and RTCP multiplexing stay: a re-INVITE is no ICE restart), or stop."""
        if config.ice is None:
            self._ice, self._ice_setup = {}, None
            return
        setup = (config.ice, config.rtcp_mux)
        if setup == self._ice_setup:
            for component, responder in self._ice.items():  # keep sending where the peer nominated
                if responder.nominated is not None:
                    self._ice_nominated(component, responder.nominated)
            return
        self._ice_setup = setup
        components = ("rtp",) if config.rtcp_mux else ("rtp", "rtcp")
        self._ice = {c: ICELiteResponder(config.ice.local, config.ice.remote_ufrag) for c in components}

    def _ice_request(self, component: str, data: bytes, addr: Address) -> bool:
        """A STUN message on a media port while ICE runs: a connectivity check is answered
        (True); anything else is for someone else (False)."""
        responder = self._ice.get(component) or self._ice.get("rtp")
        if responder is None:
            return False
        response, nominated = responder.request(data, addr)
        if response is None:
            return False
        self._sendto(self._rtp if component == "rtp" else self._rtcp, response, addr)
        if nominated:
            self._ice_nominated(component, addr)
        return True

    def _ice_nominated(self, component: str, addr: Address) -> None:
        """Send the component's media to ``addr``, which the full agent nominated (RFC 8445
        §8.2.2), unless it is of the other IP family, ``latch_refusal`` forbids it, or the
        SDP gives no remote (held with ``c=0.0.0.0``: nothing is sent, RFC 3264 §8.4)."""
        configured = self.config.remote if component == "rtp" else self.config.rtcp_target
        if configured is None or addr == configured:
            return
        if ipaddress.ip_address(addr[0]).version != ipaddress.ip_address(self.local_ip).version:
            return
        refused = self.latch_refusal(addr[0]) if self.latch_refusal is not None else None
        if refused is not None:
            log.info("media stream %s: not sending to the nominated %s: %s", self.name, addr, refused)
            return
        if component == "rtp":
            self.config = replace(self.config, remote=addr)
            self._new_spurt = True
        else:
            self.config = replace(self.config, remote_rtcp=addr)

    def ice_report(self) -> dict[str, Any] | None:
        """``{"rtp": {...}, "rtcp": {...}}`` (:meth:`ICELiteResponder.report` of each
        component; ``rtcp`` only without rtcp-mux), None without ICE."""
        if not self._ice:
            return None
        return {component: responder.report() for component, responder in self._ice.items()}

    # ---- DTLS-SRTP (RFC 5763, RFC 5764) -------------------------------------------------

    def _apply_dtls(self, config: MediaConfig) -> None:
        """Start the DTLS associations ``config.dtls`` asks for, unless the running ones
        already are (same role, fingerprints and RTCP multiplexing: a re-INVITE keeps them)."""
        assert config.dtls is not None
        setup = (config.dtls.role, config.dtls.fingerprints, config.rtcp_mux)
        if setup == self._dtls_setup:
            for component in self._dtls:  # a new remote (e.g. after a hold): go on from there
                self._dtls_schedule(component)
            return
        self._stop_dtls()
        self._dtls_setup = setup
        self._srtp = self._srtp_rtcp = None
        components = ("rtp",) if config.rtcp_mux else ("rtp", "rtcp")
        for component in components:
            association = DTLSAssociation(config.dtls.role, config.dtls.fingerprints, config.dtls.certificate,
                                          handshake_timeout=config.dtls.handshake_timeout)
            self._dtls[component] = association
            self._dtls_send(component, association.start())
            early = self._dtls_early.pop(component, ())
            for data, addr in early:  # a ClientHello that came before the SDP answer (RFC 5763 §5)
                self._dtls_datagram(component, data, addr)
            self._dtls_schedule(component)
        self._dtls_early.clear()

    def _stop_dtls(self) -> None:
        for handle in self._dtls_timers.values():
            handle.cancel()
        self._dtls_timers.clear()
        self._dtls.clear()
        self._dtls_peer.clear()
        self._dtls_setup = None

    def _dtls_target(self, component: str) -> Address | None:
        """Where a component's DTLS goes: the SDP's address, or where the peer's DTLS came from
        when the stream latches and would latch to it (a peer behind a NAT; as RTP does)."""
        configured = self.config.remote if component == "rtp" else self.config.rtcp_target
        peer = self._dtls_peer.get(component)
        if peer is not None and (peer == configured or (self.latch and self._latch_decision(peer, configured))):
            return peer
        return configured

    def _dtls_send(self, component: str, datagrams: list[bytes]) -> None:
        target = self._dtls_target(component)
        transport = self._rtp if component == "rtp" else self._rtcp
        if target is None:
            return
        for data in datagrams:
            self._sendto(transport, data, target)

    def _dtls_received(self, component: str, data: bytes, addr: Address) -> None:
        """A DTLS datagram on the RTP or RTCP port (RFC 7983 §7: first octet 20..63)."""
        if component == "rtcp" and "rtcp" not in self._dtls and "rtp" in self._dtls:
            return  # RTCP is multiplexed: its port carries no association
        if component not in self._dtls:
            if self.config.srtp is None:  # not told yet: keep a few for when the answer comes
                self._dtls_early.setdefault(component, deque(maxlen=8)).append((data, addr))
            return
        self._dtls_datagram(component, data, addr)

    def _dtls_datagram(self, component: str, data: bytes, addr: Address) -> None:
        association = self._dtls[component]
        self._dtls_peer[component] = addr
        before = association.state
        self._dtls_send(component, association.datagram_received(data))
        self._dtls_progress(component, before)
        self._dtls_schedule(component)

    def _dtls_schedule(self, component: str) -> None:
        old = self._dtls_timers.pop(component, None)
        if old is not None:
            old.cancel()
        association = self._dtls.get(component)
        wait = association.timeout() if association is not None else None
        if wait is not None and self._loop is not None and not self._closed:
            self._dtls_timers[component] = self._loop.call_later(wait, self._dtls_timer, component)

    def _dtls_timer(self, component: str) -> None:
        self._dtls_timers.pop(component, None)
        association = self._dtls.get(component)
        if association is None or self._closed:
            return
        before = association.state
        try:
            self._dtls_send(component, association.handle_timeout())
        except Exception:  # never let the timer break the loop
            self.callback_errors += 1
            log.debug("media stream %s: DTLS timer failed", self.name, exc_info=True)
        self._dtls_progress(component, before)
        self._dtls_schedule(component)

    def _dtls_progress(self, component: str, before: str) -> None:
        association = self._dtls[component]
        if association.state == before:
            return
        if association.state == "connected" and association.keys is not None:
            keys = association.keys
            context = SRTPContext(SRTPConfig(keys.suite, keys.tx_key, keys.rx_key))
            if component == "rtp":
                self._srtp = context
                if "rtcp" not in self._dtls:
                    self._srtp_rtcp = context
            else:
                self._srtp_rtcp = context
        elif association.state == "failed":
            log.info("media stream %s: DTLS-SRTP on %s failed: %s", self.name, component, association.error)
        if self.on_dtls is not None:
            try:
                self.on_dtls(component, association)
            except Exception:
                self.callback_errors += 1
                log.exception("media stream %s: on_dtls callback failed", self.name)

    def _srtp_report(self) -> dict[str, Any] | None:
        """The SRTP figures, those of RTCP's own context (DTLS without rtcp-mux) added in."""
        if self._srtp is None:
            return None
        report = self._srtp.report()
        if self._srtp_rtcp is not None and self._srtp_rtcp is not self._srtp:
            for key, value in self._srtp_rtcp.report().items():
                if key != "suite":
                    report[key] += value
        return report

    def dtls_report(self) -> dict[str, Any] | None:
        """``{"rtp": {...}, "rtcp": {...}}`` (:meth:`DTLSAssociation.report` of each
        association; ``rtcp`` only without rtcp-mux), None when DTLS does not key this stream."""
        if not self._dtls:
            return None
        return {component: association.report() for component, association in self._dtls.items()}

    @property
    def sending(self) -> bool:
        """True while the config says we send (direction and a remote) and the stream is open."""
        return not self._closed and self.config.sends

    @property
    def ssrc(self) -> int:
        """Our SSRC."""
        return self._sender.ssrc

    @property
    def packets_sent(self) -> int:
        return self._sender.packets_sent

    @property
    def octets_sent(self) -> int:
        return self._sender.octets_sent

    @property
    def elapsed(self) -> float:
        """Seconds since the stream opened."""
        return (self._loop.time() - self._opened) if self._loop is not None else 0.0

    async def close(self, reason: str = "bye") -> dict[str, Any]:
        """Send RTCP BYE (RFC 3550 §6.6), stop the media clock and timers, close the sockets and
        finish the WAV files.  Returns (and keeps) the final :meth:`report`.  Idempotent."""
        if self._final is not None:
            return self._final
        if self._gc_held:
            self._gc_held = False
            realtime.release()
        if not self._closed:
            with contextlib.suppress(Exception):
                self._send_rtcp(bye=reason)
            for component, association in list(self._dtls.items()):
                with contextlib.suppress(Exception):  # close_notify (RFC 5246 §7.2.1)
                    self._dtls_send(component, association.close())
            self._closed = True
        for handle in self._dtls_timers.values():
            handle.cancel()
        self._dtls_timers.clear()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(task, 2.0)
        for pending in self._pending_digits:
            if not pending.done.done():
                pending.done.set_exception(RuntimeError("the media stream was closed"))
        if self._event is not None and not self._event.done.done():
            self._event.done.set_exception(RuntimeError("the media stream was closed"))
        self._pending_digits.clear()
        self._event = None
        for transport in (self._rtp, self._rtcp):
            if transport is not None:
                transport.close()
        for rec in self._recorders.values():
            rec.close()
        for tap in self.taps:
            tap.close()
        self.taps.clear()
        if self._loop is not None:
            for event in self._dtmf_rx.flush(self._loop.time(), force=True):
                self._dtmf_heard(event.digit, event.duration, "rfc4733")
        self._final = self.report()
        self._final["final"] = True
        return self._final

    async def __aenter__(self) -> MediaStream:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # ---- DTMF sending -------------------------------------------------------------------

    async def send_dtmf(self, digits: str, duration: float = 0.1, timeout: float | None = None) -> None:
        """Send ``digits`` (``0-9 * # A-D``) as RFC 4733 telephone-events of ``duration`` seconds
        each (0.04..2 s), one after the other with :data:`DTMF_GAP` of audio between them, in
        the stream's send schedule; returns when the last end packet has gone out.

        Raises ``ValueError`` for an unknown digit or duration, ``RuntimeError`` if no
        telephone-event payload type is negotiated, the stream does not send (hold, no remote),
        too many digits are queued, or the stream closes first; ``TimeoutError`` after
        ``timeout`` seconds (default: long enough for the digits, plus 2 s).
        """
        if self.config.telephone_event is None:
            raise RuntimeError("no telephone-event payload type negotiated (RFC 4733)")
        if not self.sending:
            raise RuntimeError(f"the stream does not send (direction {self.config.direction}, "
                               f"remote {self.config.remote})")
        if self.echo_payload:
            raise RuntimeError("an echo_payload stream sends only what it reflects")
        if not 0.04 <= duration <= 2.0:
            raise ValueError(f"DTMF duration {duration} s is outside 0.04..2 s")
        keys = digits.upper()
        bad = [d for d in keys if d not in _DTMF_KEYS]
        if bad or not keys:
            raise ValueError(f"not DTMF digits: {digits!r} (use 0-9 * # A-D)")
        if len(self._pending_digits) + len(keys) > DTMF_SEND_QUEUE:
            raise RuntimeError(f"more than {DTMF_SEND_QUEUE} DTMF digits waiting to be sent")
        assert self._loop is not None
        futures = []
        for key in keys:
            fut: asyncio.Future[None] = self._loop.create_future()
            self._pending_digits.append(_PendingDigit(key, duration, fut))
            futures.append(fut)
        if timeout is None:
            backlog = len(self._pending_digits) + (1 if self._event else 0)
            timeout = backlog * (duration + DTMF_GAP + 4 * self.config.ptime) + 2.0
        try:
            await asyncio.wait_for(asyncio.gather(*futures), timeout)
        finally:  # on a timeout or cancellation, digits not yet started are not sent later
            mine = set(map(id, futures))
            self._pending_digits = deque(p for p in self._pending_digits if id(p.done) not in mine)

    # ---- listeners ----------------------------------------------------------------------

    def add_tap(self, max_frames: int = 25) -> AudioTap:
        """A new :class:`AudioTap` of the decoded audio played out from now on (``max_frames``
        frames of ``ptime`` kept for a slow reader).  ``ValueError`` beyond :data:`MAX_TAPS`
        taps or after :meth:`close`."""
        if self._closed:
            raise ValueError("the media stream is closed")
        if len(self.taps) >= MAX_TAPS:
            raise ValueError(f"at most {MAX_TAPS} audio taps per stream")
        tap = AudioTap(max_frames)
        self.taps.append(tap)
        return tap

    def remove_tap(self, tap: AudioTap) -> None:
        """Stop feeding ``tap`` and close it (idempotent)."""
        if tap in self.taps:
            self.taps.remove(tap)
        tap.close()

    # ---- the media clock ----------------------------------------------------------------

    def _clock_tick(self) -> float | None:
        """Called by the loop's :class:`MediaClock` at (or up to ``MediaClock.BATCH`` before)
        this stream's next frame time: send and play out that frame and return when the next
        one is due (loop seconds), or ``None`` to stop the clock (closed, or past
        :data:`MAX_CALL_SECONDS`).  Frames are due at ``t0 + i * ptime``; ``t0`` restarts when
        ``apply`` changes the ptime."""
        if self._closed:
            return None
        assert self._loop is not None
        now = self._loop.time()
        if now - self._opened >= MAX_CALL_SECONDS:
            log.info("media stream %s: media clock stopped after %.0f s", self.name, now - self._opened)
            return None
        ptime = self._clock_ptime
        if abs(self.config.ptime - ptime) > 1e-9:  # apply() changed it: restart at the new one
            ptime = self._clock_ptime = self.config.ptime
            self._clock_t0, self._clock_i = now, 0
        due = self._clock_t0 + self._clock_i * ptime
        behind = int((now - due) / ptime)
        if behind >= 1:
            # the loop stalled: play those frames out, but do not burst them onto the wire
            for _ in range(min(behind, int(5.0 / ptime))):
                self._media_tick(now, transmit=False)
            if self.sending:
                self.late_sent += behind
            self._clock_i += behind
        self._media_tick(now, transmit=True)
        self._clock_i += 1
        return self._clock_t0 + self._clock_i * ptime

    def _media_tick(self, now: float, transmit: bool) -> None:
        """One ptime: send one frame (or DTMF packets), play one frame out, record both."""
        n = self.config.samples_per_packet
        self._tick += 1
        self._tick_time = now
        self._tick_timestamp = self._sender.timestamp
        try:
            frame = self._transmit(n, transmit)
        except Exception:  # a source raising must not stop the call
            log.exception("media stream %s: audio source failed", self.name)
            self.callback_errors += 1
            frame = np.zeros(n, dtype=np.int16)
        received = self._play_out(now, n)
        if self._recorders:
            self._recorders["tx"].write(frame)
            self._recorders["rx"].write(received)
            self._recorders["mix"].write(mix(received, frame))
        for event in self._dtmf_rx.flush(now):
            self._dtmf_heard(event.digit, event.duration, "rfc4733")

    def _transmit(self, n: int, transmit: bool) -> Samples:
        if not self.sending:
            self._new_spurt = True
            if not self.echo_payload:
                self._sender.skip(self._ticks(n))
            return np.zeros(n, dtype=np.int16)
        if self.echo_payload:
            return np.zeros(n, dtype=np.int16)
        event = self._event
        if event is None and self._pending_digits and self._tick >= self._gap_until:
            event = self._event = self._start_event()
        if event is not None:
            return self._transmit_event(event, n, transmit)
        frame = np.asarray(self.source.read(n), dtype=np.int16).reshape(-1)
        if len(frame) != n:
            frame = np.resize(frame, n) if len(frame) else np.zeros(n, dtype=np.int16)
        if self.muted:
            frame = np.zeros(n, dtype=np.int16)
        if transmit:
            marker = self._new_spurt
            self._new_spurt = False
            self._send(self.config.payload_type, self._encoder.encode(frame), marker)
        self._sender.skip(self._ticks(n))
        return frame

    def _ticks(self, samples: int) -> int:
        """RTP timestamp units of ``samples`` 8000 Hz samples at the codec's clock."""
        return self._codec.ticks(samples, CLOCK_RATE)

    def _start_event(self) -> _ActiveEvent:
        pending = self._pending_digits.popleft()
        plans = list(dtmf_packets(pending.digit, duration=pending.duration, ptime=self.config.ptime,
                                  clock_rate=self._codec.clock_rate))
        low, high = DTMF_FREQUENCIES[pending.digit]
        return _ActiveEvent(pending.digit, plans, self._sender.timestamp, self._tick, ToneSource(low, high),
                            pending.done)

    def _transmit_event(self, event: _ActiveEvent, n: int, transmit: bool) -> Samples:
        """RFC 4733 §2.5.1: all packets of one event carry its start timestamp; audio pauses."""
        te = self.config.telephone_event
        elapsed = (self._tick - event.start_tick) * self.config.ptime + 1e-6
        while event.sent < len(event.plans) and event.plans[event.sent].offset <= elapsed:
            plan = event.plans[event.sent]
            event.sent += 1
            if te is not None and transmit:
                self._put_on_wire(dtmf_rtp_packet(self._sender, te, plan, event.timestamp))
        self._sender.skip(self._ticks(n))
        if event.sent >= len(event.plans):
            self._event = None
            self._new_spurt = True
            self.dtmf_sent += 1
            self._gap_until = self._tick + max(1, round(DTMF_GAP / self.config.ptime))
            if not event.done.done():
                event.done.set_result(None)
        return event.tone.read(n)

    def _send(self, payload_type: int, payload: bytes, marker: bool) -> None:
        """Number one audio packet with our sender state at its current timestamp (the caller
        advances the timestamp) and put it on the wire."""
        sender = self._sender
        packet = RTPPacket(payload_type, sender.sequence_number, sender.timestamp, sender.ssrc, payload, marker)
        sender.sequence_number = (sender.sequence_number + 1) % RTP_SEQ_MOD
        sender.packets_sent += 1
        sender.octets_sent += len(payload)
        self._put_on_wire(packet)

    def _put_on_wire(self, packet: RTPPacket) -> None:
        """Send from the RTP socket (symmetric RTP, RFC 4961) to the configured remote, through
        the tx impairments (a dropped packet still used its sequence number)."""
        remote = self.config.remote
        if remote is None or self._rtp is None:
            return
        if self.tx_drop and self._tx_rng.random() < self.tx_drop:
            self.tx_dropped += 1
            return
        data = packet.to_bytes()
        if self._srtp is not None:
            protected = self._srtp.protect(data)
            if protected is None:
                return
            data = protected
        elif self.config.dtls is not None:  # DTLS-SRTP: no keys yet, nothing in the clear
            self.unkeyed += 1
            return
        if self.tx_jitter and self._loop is not None:
            self._loop.call_later(self._tx_rng.uniform(0.0, self.tx_jitter), self._sendto, self._rtp, data, remote)
        else:
            self._sendto(self._rtp, data, remote)

    def _sendto(self, transport: asyncio.DatagramTransport | None, data: bytes, remote: Address) -> None:
        if transport is None or transport.is_closing():
            return
        try:
            transport.sendto(data, remote)
        except (OSError, ValueError, TypeError) as exc:
            self._socket_error(exc)
            return
        port = self.local_port if transport is self._rtp else self.rtcp_port
        self.packet_log.add("sent", (self.local_ip, port), remote, data)

    def _socket_error(self, exc: Exception) -> None:
        self.socket_errors += 1  # ICMP port unreachable and the like: the call goes on

    # ---- receiving ----------------------------------------------------------------------

    def _play_out(self, now: float, n: int) -> Samples:
        payload = self._jitter.get(now)
        received = self._decode(payload) if payload else None
        if received is None:
            received = np.zeros(n, dtype=np.int16)
        if self.echo is not None:
            self.echo.write(received)
        for tap in self.taps:
            tap.put(received)
        # in-band detection is the fallback for peers without RFC 4733 (it costs ~7-15 % of a
        # stream's CPU): only when no telephone-event was negotiated and none arrived
        if payload and self.inband_dtmf and self.config.telephone_event is None and not self._rfc4733_seen:
            for digit in self._inband.feed(received):
                self._dtmf_heard(digit, 0.0, "inband")
        return received

    def _decode(self, payload: bytes) -> Samples | None:
        """8000 Hz samples of a payload of the last received audio type; None (silence,
        counted in ``decode_errors``) if the codec refuses it."""
        decoder = self._decoders.get(self._rx_pt)
        if decoder is None:
            codec = self._codec if self._rx_pt == self.config.payload_type else codecs.for_payload_type(self._rx_pt)
            decoder = self._decoders[self._rx_pt] = (codec or self._codec).decoder(CLOCK_RATE)
        try:
            return decoder.decode(payload)
        except ValueError:
            self.decode_errors += 1
            return None

    def _receivable(self, payload_type: int) -> bool:
        """Audio we play: the negotiated type, and the static types of other codecs available
        here at the same RTP clock (a peer may switch between G.711 µ/A-law unannounced)."""
        if payload_type == self.config.payload_type:
            return True
        other = codecs.for_payload_type(payload_type)
        return (other is not None and other.static and other.clock_rate == self._codec.clock_rate
                and other.is_available)

    def _rtp_received(self, data: bytes, addr: Address) -> None:
        if not self._closed:
            self.packet_log.add("received", (self.local_ip, self.local_port), addr, data)
        try:
            self._rtp_datagram(data, addr)
        except Exception:  # never let a datagram break the loop; count it
            self.callback_errors += 1
            log.debug("media stream %s: RTP datagram from %s failed", self.name, addr, exc_info=True)

    def _rtp_datagram(self, data: bytes, addr: Address) -> None:
        if self._closed:
            return
        if len(data) > MAX_DATAGRAM:
            self.parse_errors += 1
            return
        if is_stun(data):  # a peer's ICE check or keep-alive on the media port (RFC 7983 §7)
            self.stun_received += 1  # or the answer to our own Binding (map_through_stun)
            if self._ice and self._ice_request("rtp", data, addr):
                return
            client = self._stun_clients.get("rtp")
            if client is not None:
                client.received(data, addr)
            return
        if is_dtls(data):  # DTLS-SRTP's handshake on the media port (RFC 7983 §7)
            self._dtls_received("rtp", data, addr)
            return
        if len(data) >= 2 and 192 <= data[1] <= 223:  # RTCP on the RTP port (RFC 5761 §4)
            self._rtcp_datagram(data, addr)
            return
        if self._srtp is not None:
            plain = self._srtp.unprotect(data)
            if plain is None:
                return
            data = plain
        elif self.config.dtls is not None:
            self.unkeyed += 1
            return
        try:
            packet = RTPPacket.parse(data)
        except RTPParseError:
            self.parse_errors += 1
            return
        if self.rx_drop and self._rx_rng.random() < self.rx_drop:
            self.rx_dropped += 1
            return
        # the arrival time at full resolution (the loop's own clock may step by 1 ms: uvloop)
        now = time.monotonic()
        if self.stats.ssrc is not None and packet.ssrc != self.stats.ssrc:
            if now - self._last_rx < SSRC_SWITCH_AFTER:
                self.foreign_packets += 1
                return
            self._new_remote_source()
        self.packets_received += 1
        self.octets_received += len(packet.payload)
        self.remote_seen = addr
        if self.latch and not self._latch_tried:
            decision = self._latch_decision(addr, self.config.remote)
            self._latch_tried = decision is not False
            if decision:
                self.latched = addr
                self.config = replace(self.config, remote=addr)
        self._last_rx = now
        self._peer_sent_recently = True
        self.stats.update(packet, now)
        te = self.config.telephone_event
        if te is not None and packet.payload_type == te:
            self._rfc4733_seen = True
            for event in self._dtmf_rx.feed(packet, now):
                self._dtmf_heard(event.digit, event.duration, "rfc4733")
            if self.echo_payload and self.sending:
                self._reflect(packet)
        elif self._receivable(packet.payload_type):
            self._rx_pt = packet.payload_type
            self._jitter.put(packet, now)
            if self.echo_payload and self.sending:
                self._reflect(packet)
        else:
            self.unknown_payload_types += 1

    def _latch_decision(self, source: Address, configured: Address | None) -> bool | None:
        """Latching on a packet from ``source``: True, send to it from now on; None, there is
        nothing to do (no remote configured — on hold —, or it is the source), latching is
        over until the next :meth:`apply`; False, refused (the other IP family, or
        ``latch_refusal`` names a reason): wait for a packet from elsewhere."""
        if configured is None or source == configured:
            return None
        if ipaddress.ip_address(source[0]).version != ipaddress.ip_address(self.local_ip).version:
            return False
        refused = self.latch_refusal(source[0]) if self.latch_refusal is not None else None
        if refused is not None:
            log.info("media stream %s: not latching to %s: %s", self.name, source, refused)
            return False
        return True

    def _reflect(self, packet: RTPPacket) -> None:
        """``echo_payload``: send ``packet``'s payload back at once under our SSRC and sequence
        numbers, its timestamp moved by one fixed offset per remote source — so audio and RFC
        4733 events (whose packets all carry the event's start timestamp, RFC 4733 §2.5.1.2)
        keep their timing relative to each other."""
        if self._echo_offset is None:
            self._echo_offset = (self._sender.timestamp - packet.timestamp) % _RTP_TS_MOD
        marker = self._new_spurt or packet.marker
        self._new_spurt = False
        self._sender.timestamp = (packet.timestamp + self._echo_offset) % _RTP_TS_MOD
        self._send(packet.payload_type, packet.payload, marker)

    def _new_remote_source(self) -> None:
        """Another SSRC took over after the current one fell silent (re-INVITE to a new peer,
        a restarted phone): start its statistics afresh."""
        self._echo_offset = None  # echo_payload: the new source's timestamps get their own offset
        self.stats = RTPReceiverStats(self._codec.clock_rate)
        self._reporter = None
        self._dtmf_rx = DTMFReceiver(self._codec.clock_rate)
        self._retire_jitter_buffer()
        self._jitter = self._new_jitter_buffer(self.config.ptime)

    def _dtmf_heard(self, digit: str, duration: float, method: str) -> None:
        heard = ReceivedDTMF(digit, float(duration), method, round(self.elapsed, 3))
        self.dtmf_received.append(heard)
        if self.dtmf_events.full():
            with contextlib.suppress(asyncio.QueueEmpty):
                self.dtmf_events.get_nowait()
        self.dtmf_events.put_nowait(heard)
        if self.on_dtmf is not None:
            try:
                self.on_dtmf(digit, float(duration))
            except Exception:
                self.callback_errors += 1
                log.exception("media stream %s: on_dtmf callback failed", self.name)

    def _new_jitter_buffer(self, ptime: float) -> JitterBuffer:
        return JitterBuffer(clock_rate=self._codec.clock_rate, ptime=ptime, min_delay=self.jitter_min,
                            max_delay=self.jitter_max)

    def _retire_jitter_buffer(self) -> None:
        for key, value in self._jitter_counters(self._jitter).items():
            if key != "delay":
                self._jitter_retired[key] = self._jitter_retired.get(key, 0) + value

    @staticmethod
    def _jitter_counters(jb: JitterBuffer) -> dict[str, float]:
        return {key: getattr(jb, key) for key in
                ("played", "late", "duplicates", "concealed", "reordered", "overflow", "skipped", "delay")}

    # ---- RTCP ---------------------------------------------------------------------------

    async def _rtcp_timer(self) -> None:
        assert self._loop is not None
        initial = True
        for _ in range(int(MAX_CALL_SECONDS)):  # at least 1 s apart: bounded by the call limit too
            members = 2 if self.stats.ssrc is not None else 1
            we_sent = self._sender.packets_sent > self._sent_at_last_report
            senders = int(we_sent) + int(self._peer_sent_recently)
            bandwidth = 0.05 * _G711_OCTETS_PER_S * 2  # RFC 3550 §6.2: 5 % of the session bandwidth
            interval = rtcp_interval(members, senders, bandwidth, we_sent, self._avg_rtcp_size, initial,
                                     rng=self._rng) * self.rtcp_scale
            initial = False
            await asyncio.sleep(max(0.05, interval))
            if self._closed or self._loop.time() - self._opened > MAX_CALL_SECONDS:
                return
            try:
                self._send_rtcp()
            except Exception:
                self.callback_errors += 1
                log.exception("media stream %s: RTCP report failed", self.name)

    def _send_rtcp(self, bye: str | None = None) -> None:
        target = self.config.rtcp_target
        transport = self._rtp if self.config.rtcp_mux else self._rtcp
        if target is None or transport is None:
            return
        now_unix = time.time()
        blocks: list[ReportBlock] = []
        if self.stats.ssrc is not None and self.stats.received:
            if self._reporter is None:
                self._reporter = ReceptionReporter(self.stats.ssrc)
            blocks.append(self._reporter.block(self.stats, now_unix))
        sender = self._sender
        report: SenderReport | ReceiverReport
        if sender.packets_sent > self._sent_at_last_report:
            rtp_now = self._tick_timestamp
            if self._loop is not None:
                rtp_now += int(round((self._loop.time() - self._tick_time) * self._codec.clock_rate))
            report = SenderReport(sender.ssrc, ntp_timestamp(now_unix), rtp_now % (1 << 32), sender.packets_sent,
                                  sender.octets_sent, tuple(blocks))
        else:
            report = ReceiverReport(sender.ssrc, tuple(blocks))
        packets: list[Any] = [report, SourceDescription(chunks=((sender.ssrc, self.cname),))]
        if bye is not None:
            packets.append(Bye((sender.ssrc,), bye))
        data = build_compound(packets)
        self._sent_at_last_report = sender.packets_sent
        self._peer_sent_recently = False
        if self._srtp_rtcp is not None:
            protected = self._srtp_rtcp.protect_rtcp(data)
            if protected is None:
                return
            data = protected
        elif self.config.dtls is not None:
            self.unkeyed += 1
            return
        self._avg_rtcp_size += (len(data) + _UDP_IP_OVERHEAD - self._avg_rtcp_size) / 16
        self.rtcp_sent += 1
        self._sendto(transport, data, target)

    def _rtcp_received(self, data: bytes, addr: Address) -> None:
        if not self._closed:
            self.packet_log.add("received", (self.local_ip, self.rtcp_port), addr, data)
        try:
            self._rtcp_datagram(data, addr)
        except Exception:
            self.callback_errors += 1
            log.debug("media stream %s: RTCP datagram from %s failed", self.name, addr, exc_info=True)

    def _rtcp_datagram(self, data: bytes, addr: Address) -> None:
        if self._closed:
            return
        arrival = time.time()
        if len(data) > MAX_DATAGRAM:
            self.rtcp_parse_errors += 1
            return
        if is_stun(data):
            self.stun_received += 1
            if self._ice and self._ice_request("rtcp", data, addr):
                return
            client = self._stun_clients.get("rtcp")
            if client is not None:
                client.received(data, addr)
            return
        if is_dtls(data):
            self._dtls_received("rtcp", data, addr)
            return
        if self._srtp_rtcp is not None:
            plain = self._srtp_rtcp.unprotect_rtcp(data)
            if plain is None:
                return
            data = plain
        elif self.config.dtls is not None:
            self.unkeyed += 1
            return
        try:
            packets = parse_compound(data)
        except RTCPParseError:
            self.rtcp_parse_errors += 1
            return
        self.rtcp_received += 1
        self._avg_rtcp_size += (len(data) + _UDP_IP_OVERHEAD - self._avg_rtcp_size) / 16
        if self.latch and not self._latch_rtcp_tried and not self.config.rtcp_mux:
            decision = self._latch_decision(addr, self.config.rtcp_target)
            self._latch_rtcp_tried = decision is not False
            if decision:
                self.latched_rtcp = addr
                self.config = replace(self.config, remote_rtcp=addr)
        for packet in packets:
            if isinstance(packet, SenderReport):
                self.peer.ssrc = packet.ssrc
                self.peer.sender_reports += 1
                self.peer.packets_sent = packet.packet_count
                self.peer.octets_sent = packet.octet_count
                if self.stats.ssrc is None or packet.ssrc == self.stats.ssrc:
                    if self._reporter is None:
                        self._reporter = ReceptionReporter(packet.ssrc)
                    self._reporter.sender_report_received(packet, arrival)
                self._peer_blocks(packet.reports, arrival)
            elif isinstance(packet, ReceiverReport):
                self.peer.ssrc = packet.ssrc
                self.peer.receiver_reports += 1
                self._peer_blocks(packet.reports, arrival)
            elif isinstance(packet, SourceDescription):
                for ssrc, cname in packet.chunks:
                    if self.peer.ssrc is None or ssrc == self.peer.ssrc:
                        self.peer.cname = cname
            elif isinstance(packet, Bye):
                self.peer.bye = True
                self.peer.bye_reason = packet.reason

    def _peer_blocks(self, blocks: Any, arrival: float) -> None:
        for block in blocks:
            if block.ssrc != self._sender.ssrc:
                continue
            self.peer.fraction_lost = block.fraction_lost / 256.0
            self.peer.cumulative_lost = int(block.cumulative_lost)
            self.peer.jitter_ms = block.jitter * 1000.0 / self._codec.clock_rate
            rtt = round_trip_time(arrival, block.lsr, block.dlsr)
            if rtt is not None:
                self.rtt = max(0.0, float(rtt))

    # ---- report -------------------------------------------------------------------------

    def report(self) -> dict[str, Any]:
        """The stream's figures now, JSON-ready (seconds unless a key ends in ``_ms``)::

            {"local": [ip, port], "rtcp_port", "remote": [ip, port] | None, "ssrc", "cname",
             "codec": "PCMU"|"PCMA"|"G722"|"opus", "payload_type", "ptime", "direction", "duration", "final",
             "sent": {"packets", "octets", "late", "dropped", "dtmf"},
             "received": {"packets", "octets", "expected", "lost", "loss", "duplicates",
                          "reordered", "jitter_ms", "dropped", "parse_errors", "stun", "foreign",
                          "unknown_payload_types", "decode_errors", "ssrc", "from": [ip, port] | None},
             "rtt_ms": float | None,
             "peer": {"cname", "ssrc", "fraction_lost", "cumulative_lost", "jitter_ms",
                      "sender_reports", "receiver_reports", "packets_sent", "octets_sent", "bye"},
             "jitter_buffer": {"played", "late", "duplicates", "concealed", "reordered",
                               "overflow", "skipped", "delay_ms"},
             "dtmf": [{"digit", "duration", "method", "time"}, ...],
             "quality": {"r", "mos", "delay_ms"} | None,   # None until audio was received
             "rtcp": {"sent", "received", "parse_errors"},
             "srtp": {"suite", "auth_failures", "replays", "protect_errors"} | None,  # None: plain RTP
             "dtls": {"rtp": {"role", "state", "profile", "error", "datagrams_sent",
                              "datagrams_received"}, "rtcp": {...}} | None,  # None: no DTLS-SRTP
             "unkeyed": int,  # packets neither sent nor played for want of DTLS keys
             "ice": {"rtp": {"requests", "answered", "refused", "nominations", "nominated"},
                     "rtcp": {...}} | None,  # None: no ICE
             "errors": {"socket", "callback", "recording": str | None},  # why a recording stopped
             "capture": {"packets", "dropped"},  # the PacketLog: datagrams kept / left out of a pcap
             "recordings": {"rx"|"tx"|"mix": path}}

        ``received.loss`` is lost / expected (0..1); ``peer.fraction_lost`` is the peer's
        8-bit fraction as 0..1.  Callable at any time; :meth:`close` returns the final one."""
        if self._final is not None:
            return dict(self._final)
        stats = self.stats
        expected = stats.expected
        lost = max(0, stats.lost)
        loss = lost / expected if expected > 0 else 0.0
        jb = self._jitter_counters(self._jitter)
        for key, value in self._jitter_retired.items():
            jb[key] = jb.get(key, 0) + value
        jitter_ms = stats.jitter_seconds * 1000.0
        rtt_ms = self.rtt * 1000.0 if self.rtt is not None else None
        quality = None
        if stats.received:
            # discards for lateness are lost to the listener too (G.107 Ppl)
            heard_loss = min(1.0, (lost + jb["late"]) / expected) if expected > 0 else 0.0
            # G.107 as skinnysip.rtp.quality.estimate does it, with the codec's Ie/Bpl (for
            # G.722 and Opus an assumption: skinnysip.rtp.codecs.IMPAIRMENT_NOTE)
            heard = self._codec if self._rx_pt == self.config.payload_type else codecs.for_payload_type(self._rx_pt)
            heard = heard or self._codec
            delay_ms = (rtt_ms / 2 if rtt_ms is not None else 0.0) + float(jb["delay"]) * 1000.0 \
                + self.config.ptime * 1000.0
            r = r_factor(ie=heard.ie, bpl=heard.bpl, loss=heard_loss, delay_ms=delay_ms)
            quality = {"r": round(float(r), 2), "mos": round(float(mos_from_r(r)), 2), "delay_ms": round(delay_ms, 1)}
        peer = self.peer
        return {
            "local": [self.local_ip, self.local_port],
            "rtcp_port": self.rtcp_port,
            "remote": list(self.config.remote) if self.config.remote else None,
            "ssrc": self._sender.ssrc,
            "cname": self.cname,
            "codec": self._codec.name,
            "payload_type": self.config.payload_type,
            "ptime": self.config.ptime,
            "direction": self.config.direction,
            "duration": round(self.elapsed, 3),
            "final": False,
            "sent": {"packets": self._sender.packets_sent, "octets": self._sender.octets_sent,
                     "late": self.late_sent, "dropped": self.tx_dropped, "dtmf": self.dtmf_sent},
            "received": {"packets": self.packets_received, "octets": self.octets_received,
                         "expected": expected, "lost": lost, "loss": round(loss, 4),
                         "duplicates": stats.duplicates, "reordered": stats.reordered,
                         "jitter_ms": round(jitter_ms, 3), "dropped": self.rx_dropped,
                         "parse_errors": self.parse_errors, "stun": self.stun_received,
                         "foreign": self.foreign_packets + stats.foreign_packets,
                         "unknown_payload_types": self.unknown_payload_types,
                         "decode_errors": self.decode_errors, "ssrc": stats.ssrc,
                         "from": list(self.remote_seen) if self.remote_seen else None},
            "rtt_ms": round(rtt_ms, 3) if rtt_ms is not None else None,
            "peer": {"cname": peer.cname, "ssrc": peer.ssrc, "fraction_lost": peer.fraction_lost,
                     "cumulative_lost": peer.cumulative_lost,
                     "jitter_ms": round(peer.jitter_ms, 3) if peer.jitter_ms is not None else None,
                     "sender_reports": peer.sender_reports, "receiver_reports": peer.receiver_reports,
                     "packets_sent": peer.packets_sent, "octets_sent": peer.octets_sent, "bye": peer.bye},
            "jitter_buffer": {"played": jb["played"], "late": jb["late"], "duplicates": jb["duplicates"],
                              "concealed": jb["concealed"], "reordered": jb["reordered"],
                              "overflow": jb["overflow"], "skipped": jb["skipped"], "delay_ms": round(float(jb["delay"]) * 1000.0, 1)},
            "dtmf": [d.as_dict() for d in self.dtmf_received],
            "quality": quality,
            "rtcp": {"sent": self.rtcp_sent, "received": self.rtcp_received,
                     "parse_errors": self.rtcp_parse_errors},
            "srtp": self._srtp_report(),
            "dtls": self.dtls_report(),
            "ice": self.ice_report(),
            "unkeyed": self.unkeyed,
            "errors": {"socket": self.socket_errors, "callback": self.callback_errors,
                       "recording": next((r.error for r in self._recorders.values() if r.error), None)},
            "capture": {"packets": len(self.packet_log), "dropped": self.packet_log.dropped},
            "recordings": {kind: str(path) for kind, path in self.recordings.items()},
        }

