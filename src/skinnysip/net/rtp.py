"""asyncio RTP endpoint (RFC 3550): one UDP socket that sends paced G.711 and counts what arrives.

Shared by the SCCP station, the lab call manager and (later) the SIP softphone. Sending is
paced in real time by absolute deadlines (packet *i* leaves at ``t0 + i × ptime``, so sleep
jitter never accumulates) and always bounded by a duration and a packet count. Receiving
parses every datagram with :meth:`RTPPacket.parse`, feeds :class:`RTPReceiverStats`
(RFC 3550 A.1/A.8), and keeps payloads and decoded audio up to a cap.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

from skinnysip.net.stun import is_stun
from skinnysip.rtp.packet import RTPPacket, RTPParseError
from skinnysip.rtp.stats import RTPReceiverStats, RTPSender

if TYPE_CHECKING:  # numpy and G.711 load when audio is decoded, not when a probe binds a port
    import numpy as np

PT_PCMU, PT_PCMA = 0, 8  # RFC 3551 §6 (as skinnysip.rtp.g711 names them)

CLOCK_RATE = 8000
MAX_DATAGRAM = 2048
#: hard ceiling on one sending run whatever the caller asks (seconds)
MAX_SEND_SECONDS = 3600.0
#: default cap on audio kept from received packets (seconds of 8 kHz audio)
DEFAULT_KEEP_SECONDS = 60.0
#: default cap on payloads kept (for comparisons) per direction
DEFAULT_KEEP_PAYLOADS = 3000

PayloadSource = Callable[[int], bytes]


def looping_source(encoded: bytes, packet_bytes: int) -> PayloadSource:
    """A payload source cycling through ``encoded`` audio, ``packet_bytes`` per packet."""
    if not encoded or packet_bytes <= 0:
        raise ValueError("need audio and a positive packet size")

    def payload(i: int) -> bytes:
        start = (i * packet_bytes) % len(encoded)
        chunk = encoded[start : start + packet_bytes]
        while len(chunk) < packet_bytes:
            chunk += encoded[: packet_bytes - len(chunk)]
        return chunk

    return payload


P = TypeVar("P", bound=asyncio.DatagramProtocol)


async def bind_even_port(host: str, factory: Callable[[], P], attempts: int = 10) -> tuple[P, int]:
    """Bind a UDP socket on ``host`` (IPv4 or IPv6 literal) with ``factory``'s protocol on an
    even port, as an RTP port should be (RFC 3550 §11); after ``attempts`` odd ports the last
    one is kept. Returns (protocol, port); the transport is ``protocol``'s. ``OSError`` if
    nothing can be bound."""
    loop = asyncio.get_running_loop()
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    for attempt in range(attempts):
        transport, protocol = await loop.create_datagram_endpoint(factory, local_addr=(host, 0), family=family)
        port = int(transport.get_extra_info("sockname")[1])
        if port % 2 == 0 or attempt == attempts - 1:
            return protocol, port
        transport.close()
    raise OSError("no port bound")  # pragma: no cover - attempts >= 1


@dataclass
class SendReport:
    """What one sending run did."""

    packets: int = 0
    octets: int = 0
    stopped_by: str = ""


class RTPEndpoint(asyncio.DatagramProtocol):
    """A bound UDP socket speaking RTP. Create with :meth:`open`; always :meth:`close`.

    ``on_packet(packet, addr)`` (optional) is called for every valid packet received — the
    lab call manager uses it to reflect audio.
    """

    def __init__(self, keep_seconds: float = DEFAULT_KEEP_SECONDS, keep_payloads: int = DEFAULT_KEEP_PAYLOADS) -> None:
        self.transport: asyncio.DatagramTransport | None = None
        self.local_ip = ""
        self.local_port = 0
        self.stats = RTPReceiverStats()
        self.packets_received = 0
        self.octets_received = 0
        self.parse_errors = 0
        self.packets_sent = 0
        self.octets_sent = 0
        self.received_payloads: list[bytes] = []
        self.sent_payloads: list[bytes] = []
        self.remote_ssrcs: set[int] = set()
        self.last_source: tuple[str, int] | None = None
        self.on_packet: Callable[[RTPPacket, tuple[str, int]], None] | None = None
        self._keep_samples = int(keep_seconds * CLOCK_RATE)
        self._keep_payloads = keep_payloads
        self._audio: list[np.ndarray] = []
        self._audio_samples = 0
        self._send_task: asyncio.Task[SendReport] | None = None

    # ---- lifecycle ----------------------------------------------------------------------

    @classmethod
    async def open(cls, host: str = "127.0.0.1", port: int = 0, *, keep_seconds: float = DEFAULT_KEEP_SECONDS,
                   keep_payloads: int = DEFAULT_KEEP_PAYLOADS) -> RTPEndpoint:
        """Bind UDP on ``host`` (IPv4 or IPv6 literal) and ``port`` (0 = any free port).

        Raises ``OSError`` if the address cannot be bound.
        """
        loop = asyncio.get_running_loop()
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        _, proto = await loop.create_datagram_endpoint(
            lambda: cls(keep_seconds, keep_payloads), local_addr=(host, port), family=family
        )
        assert isinstance(proto, RTPEndpoint)
        return proto

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # a datagram transport
        sock = transport.get_extra_info("sockname")
        self.local_ip, self.local_port = str(sock[0]), int(sock[1])

    async def close(self) -> None:
        """Stop sending and close the socket (idempotent)."""
        await self.stop_sending()
        if self.transport is not None:
            self.transport.close()
            self.transport = None

    # ---- receiving ----------------------------------------------------------------------

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:  # type: ignore[override]
        if len(data) > MAX_DATAGRAM:
            self.parse_errors += 1
            return
        if is_stun(data):  # a peer's STUN on the media port (RFC 7983 §7): not RTP, not an error
            return
        try:
            packet = RTPPacket.parse(data)
        except RTPParseError:
            self.parse_errors += 1
            return
        arrival = time.monotonic()  # full resolution on any loop (uvloop's loop.time() steps by 1 ms)
        self.stats.update(packet, arrival)
        self.packets_received += 1
        self.octets_received += len(packet.payload)
        self.remote_ssrcs.add(packet.ssrc)
        self.last_source = (str(addr[0]), int(addr[1]))
        if len(self.received_payloads) < self._keep_payloads:
            self.received_payloads.append(packet.payload)
        if self._audio_samples < self._keep_samples:
            if packet.payload_type in (PT_PCMU, PT_PCMA):
                from skinnysip.rtp import g711

                samples = g711.decode(packet.payload_type, packet.payload)
                self._audio.append(samples)
                self._audio_samples += len(samples)
        if self.on_packet is not None:
            self.on_packet(packet, self.last_source)

    def error_received(self, exc: Exception) -> None:  # ICMP port unreachable etc.: keep going
        pass

    def received_audio(self) -> np.ndarray:
        """Decoded audio received so far (int16, up to the keep cap)."""
        import numpy as np

        if not self._audio:
            return np.zeros(0, dtype=np.int16)
        return np.concatenate(self._audio)[: self._keep_samples]

    # ---- sending ------------------------------------------------------------------------

    def send_packet(self, packet: RTPPacket, remote: tuple[str, int]) -> None:
        """Send one packet now (no pacing)."""
        if self.transport is None:
            return
        self.transport.sendto(packet.to_bytes(), remote)
        self.packets_sent += 1
        self.octets_sent += len(packet.payload)
        if len(self.sent_payloads) < self._keep_payloads:
            self.sent_payloads.append(packet.payload)

    def start_sending(
        self,
        remote: tuple[str, int],
        source: PayloadSource,
        *,
        payload_type: int = PT_PCMU,
        packet_ms: int = 20,
        duration: float | None = None,
        max_packets: int | None = None,
        sender: RTPSender | None = None,
    ) -> asyncio.Task[SendReport]:
        """Start sending ``source(i)`` every ``packet_ms`` ms to ``remote`` (paced by absolute
        deadlines) until ``duration`` seconds or ``max_packets`` packets — whichever first,
        and never past :data:`MAX_SEND_SECONDS`. Replaces a running send."""
        if not 1 <= packet_ms <= 1000:
            raise ValueError(f"packet size {packet_ms} ms is out of range 1-1000")
        if self._send_task is not None and not self._send_task.done():
            self._send_task.cancel()
        samples_per_packet = CLOCK_RATE * packet_ms // 1000
        rtp = sender or RTPSender(payload_type=payload_type, clock_rate=CLOCK_RATE,
                                  samples_per_packet=samples_per_packet)
        limit_s = min(duration if duration is not None else MAX_SEND_SECONDS, MAX_SEND_SECONDS)
        limit_n = int(limit_s * 1000 // packet_ms)
        if max_packets is not None:
            limit_n = min(limit_n, max_packets)
        self._send_task = asyncio.create_task(self._send_loop(remote, source, rtp, packet_ms / 1000.0, limit_n))
        return self._send_task

    async def _send_loop(self, remote: tuple[str, int], source: PayloadSource, rtp: RTPSender,
                         ptime: float, count: int) -> SendReport:
        loop = asyncio.get_running_loop()
        report = SendReport()
        t0 = loop.time()
        try:
            for i in range(count):
                due = t0 + i * ptime
                delay = due - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                if self.transport is None:
                    report.stopped_by = "closed"
                    return report
                packet = rtp.packet(source(i))
                self.send_packet(packet, remote)
                report.packets += 1
                report.octets += len(packet.payload)
            report.stopped_by = "limit"
        except asyncio.CancelledError:
            report.stopped_by = "stopped"
        return report

    @property
    def sending(self) -> bool:
        return self._send_task is not None and not self._send_task.done()

    async def stop_sending(self) -> SendReport | None:
        """Stop a running send (bounded) and return its report."""
        task = self._send_task
        if task is None:
            return None
        if not task.done():
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            return await asyncio.wait_for(task, 2.0)
        return None

    async def wait_sent(self, timeout: float) -> SendReport | None:
        """Wait up to ``timeout`` seconds for the current send to finish by itself."""
        task = self._send_task
        if task is None:
            return None
        with contextlib.suppress(TimeoutError):
            return await asyncio.wait_for(asyncio.shield(task), timeout)
        return None
