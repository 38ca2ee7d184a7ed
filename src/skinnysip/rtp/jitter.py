"""An adaptive playout (jitter) buffer for one RTP audio stream, sans-IO.

The caller :meth:`JitterBuffer.put` s each packet with its arrival time and calls
:meth:`JitterBuffer.get` once per ``ptime`` with the current time; both times are seconds on
any monotonic clock.  ``get`` answers the payload to play now, or ``None`` where the caller
conceals a loss (or plays silence / comfort noise).

Model.  Each packet carries ``ptime`` of audio; its RTP timestamp (unwrapped, RFC 3550 §5.1)
names its *slot* = timestamp / (ptime · clock rate).  Its transit is ``arrival - timestamp /
clock_rate``; ``base`` is the smallest transit over the last 2 s (the network's fixed delay
plus clock offset).  Slot *s* is due at ``s·ptime + base + delay``.  ``delay`` adapts between
``min_delay`` and ``max_delay``: it follows ``3 ×`` the RFC 3550 A.8 interarrival jitter
estimate upwards at once, jumps up to cover a late packet, and comes down by one ``ptime`` per
second at most (at once at a talkspurt start, marker bit).  The playout pointer moves one slot
per ``get``; when it drifts from the schedule by a frame it waits one ``get`` (a concealed
frame) or skips one slot, so changes are heard as one frame at a time.
"""

from __future__ import annotations

import math
from collections import deque

from skinnysip.rtp.packet import RTPPacket

__all__ = ["JitterBuffer"]

_TS_MOD = 1 << 32
_SEQ_MOD = 1 << 16


class JitterBuffer:
    """Reorders, de-duplicates and times the payloads of one RTP stream for playout.

    ``clock_rate`` in Hz; ``ptime``, ``min_delay`` and ``max_delay`` in seconds.  Counters
    (attributes): ``played`` (payloads returned), ``concealed`` (``get`` answered ``None`` after
    playout started), ``late`` (arrived after their slot was played; dropped), ``duplicates``
    (same sequence number or slot again; dropped), ``reordered`` (arrived after a higher sequence
    number; kept), ``overflow`` (the buffer was full: the oldest payload, or a new one older than
    all held, was dropped), ``skipped`` (dropped
    to catch up with the schedule), ``resets``.  ``delay`` is the current playout delay above the
    fastest transit (s), ``jitter`` the interarrival jitter estimate (s).

    A new SSRC resets the buffer; so does a timestamp jump (transit changing by more than
    ``RESET_JUMP`` seconds) on a packet with the marker bit, or on three packets in a row.
    Memory: at most ``capacity`` = ceil(max_delay / ptime) + 10 payloads, plus a few hundred
    sequence numbers and transit samples.
    """

    #: Transit change (s) taken as a new timeline rather than network delay.
    RESET_JUMP = 1.0
    #: Window (s) of the minimum-transit (``base``) estimate.
    BASE_WINDOW = 2.0
    #: Seconds between two one-frame decreases of ``delay`` within a talkspurt.
    DECREASE_INTERVAL = 1.0
    #: ``delay`` target as a multiple of the jitter estimate.
    JITTER_FACTOR = 3.0

    def __init__(self, clock_rate: int = 8000, ptime: float = 0.02, min_delay: float = 0.02,
                 max_delay: float = 0.2):
        if clock_rate <= 0 or not ptime > 0 or not 0 <= min_delay <= max_delay:
            raise ValueError("clock_rate and ptime must be positive and 0 <= min_delay <= max_delay")
        self.clock_rate = clock_rate
        self.ptime = ptime
        self.min_delay = min_delay
        self.max_delay = max_delay
        self.frame = max(1, round(ptime * clock_rate))  # timestamp units per slot
        self._frame_s = self.frame / clock_rate
        self.capacity = math.ceil(max_delay / ptime - 1e-9) + 10
        self.played = self.concealed = self.late = self.duplicates = 0
        self.reordered = self.overflow = self.skipped = self.resets = 0
        self.delay = min_delay
        self.jitter = 0.0
        self._window_len = max(16, round(self.BASE_WINDOW / ptime))
        self._reset_stream()

    # ------------------------------------------------------------------ state
    def _reset_stream(self) -> None:
        self._ssrc: int | None = None
        self._last_ts = 0
        self._ts_u = 0
        self._slots: dict[int, bytes] = {}
        self._next: int | None = None
        self._count = 0
        self._window: deque[tuple[int, float]] = deque()
        self._prev_transit: float | None = None
        self._seen: deque[int] = deque(maxlen=4 * self.capacity)
        self._seen_set: set[int] = set()
        self._max_seq: int | None = None
        self._jumps = 0
        self._last_change: float | None = None

    @property
    def base(self) -> float | None:
        """Smallest transit (arrival - timestamp / clock rate, s) over the recent window."""
        return self._window[0][1] if self._window else None

    @property
    def buffered(self) -> int:
        """Payloads held now."""
        return len(self._slots)

    def _start(self, packet: RTPPacket) -> None:
        self._ssrc = packet.ssrc
        self._last_ts = packet.timestamp
        self._ts_u = 0

    def _unwrap(self, ts: int) -> int:
        step = (ts - self._last_ts) % _TS_MOD
        if step >= _TS_MOD // 2:
            step -= _TS_MOD
        self._last_ts = ts
        self._ts_u += step
        return self._ts_u

    def _remember(self, seq: int) -> None:
        if len(self._seen) == self._seen.maxlen:
            self._seen_set.discard(self._seen[0])
        self._seen.append(seq)
        self._seen_set.add(seq)

    def _push_transit(self, transit: float) -> None:
        # Sliding-window minimum over the last _window_len packets (monotonic deque).
        self._count += 1
        while self._window and self._window[-1][1] >= transit:
            self._window.pop()
        self._window.append((self._count, transit))
        while self._window[0][0] <= self._count - self._window_len:
            self._window.popleft()

    def _adapt(self, arrival: float, marker: bool) -> None:
        target = min(self.max_delay, max(self.min_delay, self.JITTER_FACTOR * self.jitter))
        if target > self.delay:
            self.delay = target
            self._last_change = arrival
        elif target < self.delay:
            if marker:
                self.delay = target
                self._last_change = arrival
            elif self._last_change is None or arrival - self._last_change >= self.DECREASE_INTERVAL:
                self.delay = max(target, self.delay - self._frame_s)
                self._last_change = arrival

    # ------------------------------------------------------------------ public
    def put(self, packet: RTPPacket, arrival: float) -> None:
        """Accept a packet that arrived at ``arrival`` seconds (or count why it is dropped)."""
        if self._ssrc is not None and packet.ssrc != self._ssrc:
            self._reset_stream()
            self.resets += 1
        if self._ssrc is None:
            self._start(packet)
        ts_u = self._unwrap(packet.timestamp)
        transit = arrival - ts_u / self.clock_rate
        base = self.base
        if base is not None and abs(transit - base) > self.RESET_JUMP:
            self._jumps += 1
            if not (packet.marker or self._jumps >= 3):
                if transit > base:
                    self.late += 1
                else:
                    self.overflow += 1
                return
            self._reset_stream()
            self.resets += 1
            self._start(packet)
            ts_u, transit = 0, arrival
        else:
            self._jumps = 0
        seq = packet.sequence_number
        if seq in self._seen_set:
            self.duplicates += 1
            return
        self._remember(seq)
        if self._max_seq is not None and (seq - self._max_seq) % _SEQ_MOD >= _SEQ_MOD // 2:
            self.reordered += 1
        else:
            self._max_seq = seq
        if self._prev_transit is not None:  # RFC 3550 A.8, in seconds
            self.jitter += (abs(transit - self._prev_transit) - self.jitter) / 16.0
        self._prev_transit = transit
        self._push_transit(transit)
        self._adapt(arrival, packet.marker)
        slot = round(ts_u / self.frame)
        if self._next is not None:
            if slot < self._next:
                self.late += 1
                # make a packet this late fit next time, with half a frame to spare
                needed = transit - self._window[0][1] + self._frame_s / 2
                if needed > self.delay:
                    self.delay = min(self.max_delay, needed)
                    self._last_change = arrival
                return
        if slot not in self._slots and len(self._slots) >= self.capacity:
            # full (a burst, or nobody is calling get): keep the newest, drop the oldest
            oldest = min(self._slots)
            self.overflow += 1
            if slot < oldest:
                return
            del self._slots[oldest]
        if slot in self._slots:
            self.duplicates += 1
            return
        self._slots[slot] = bytes(packet.payload)

    def get(self, now: float) -> bytes | None:
        """The payload to play at ``now`` (seconds), or ``None`` (nothing due yet before playout
        starts; afterwards a lost, late or not-yet-due frame: conceal).  Call once per ``ptime``."""
        base = self.base
        if base is None:
            return None
        due = (now - base - self.delay) / self._frame_s  # the slot due now, fractional
        if self._next is None:
            if not self._slots:
                return None
            first = min(self._slots)
            if first - due > 0.5:
                return None
            self._next = first
        drift = self._next - due
        if drift > 0.5:  # ahead of the schedule (delay grew): hold one frame
            self.concealed += 1
            return None
        if drift < -1.5:  # behind (delay shrank, or the caller stalled): skip
            behind = int(-drift - 0.5)
            if behind * self._frame_s > self.max_delay:  # far behind: jump to the schedule
                self._next += behind
                stale = [s for s in self._slots if s < self._next]
                for s in stale:
                    del self._slots[s]
                self.skipped += len(stale)
            else:  # one slot per get, heard as one frame
                if self._slots.pop(self._next, None) is not None:
                    self.skipped += 1
                self._next += 1
        payload = self._slots.pop(self._next, None)
        self._next += 1
        if payload is None:
            self.concealed += 1
        else:
            self.played += 1
        return payload
