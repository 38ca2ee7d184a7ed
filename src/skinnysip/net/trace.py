"""Cheap records of what crossed the wire, kept by the drivers (bounded, can be switched off).

A :class:`TraceRecord` is made per message sent or received: direction, time, local and
remote ``host:port``, transport, a one-line summary, the raw bytes and the Call-ID (to pick
one call's messages out of a shared endpoint). Pydantic ``WireMessage`` objects are built
from them only where a result is made (:func:`to_wire_messages`).

Times come from :func:`wire_time`: seconds since the epoch, but advancing with the monotonic
clock (set from the wall clock), so differences between records are true durations and a
round trip measured from two records is the one the ladder shows. When the wall clock gets
ahead of it by more than :data:`RESYNC_AFTER` (the machine was suspended, or its clock was
stepped forward) the stamps catch up with the wall clock; a clock stepped back is not
followed, so stamps never go back.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Literal

from skinnysip.result import ExchangeLimit, WireMessage

__all__ = ["Trace", "TraceRecord", "to_wire_messages", "wire_time"]

RESYNC_AFTER = 1.0
"""Seconds the wall clock may run ahead of :func:`wire_time` before the stamps catch up."""

_epoch_offset = time.time() - time.monotonic()


def wire_time() -> float:
    """Seconds since the epoch on the monotonic clock (set from the wall clock at import, moved
    forward when the wall clock gets :data:`RESYNC_AFTER` ahead, never back): the time stamp
    of every :class:`TraceRecord` and of ``Request.sent_at``/``received_at``."""
    global _epoch_offset
    monotonic = time.monotonic()
    now = _epoch_offset + monotonic
    wall = time.time()
    if wall - now > RESYNC_AFTER:
        # set, not added to: two threads catching up at once must not move it twice
        _epoch_offset = max(_epoch_offset, wall - monotonic)
        now = _epoch_offset + monotonic
    return now


@dataclass(frozen=True, slots=True)
class TraceRecord:
    """One message on the wire. ``time``: seconds since the epoch; ``local``/``remote``:
    ``host:port`` (IPv6 bracketed); ``transport``: ``udp``/``tcp``/``tls``; ``raw``: the
    bytes as sent or received; ``call_id``: the message's Call-ID (None if unparseable)."""

    direction: Literal["sent", "received"]
    time: float
    local: str
    remote: str
    transport: str
    summary: str
    raw: bytes
    call_id: str | None = None

    @property
    def unparseable(self) -> bool:
        """True for a received message that did not parse (summary ``unparseable (…)``)."""
        return self.summary.startswith(UNPARSEABLE)


#: summary prefix of a received message that did not parse
UNPARSEABLE = "unparseable ("


class Trace:
    """A bounded log of :class:`TraceRecord`. ``enabled=False`` records nothing (load
    generation).

    Two bounds: without ``exchange`` the newest records are kept, at most ``limit`` of them
    and ``max_bytes`` octets of raw bytes (a long-running phone or listener: a flood of
    64 KiB datagrams cannot hold more than ``max_bytes``); with an
    :class:`~skinnysip.result.ExchangeLimit` (an operation's exchange) the first messages that
    fit its message and byte budget are kept and the rest only counted. ``dropped`` counts
    the records not kept either way; ``listener`` sees every record."""

    def __init__(self, limit: int = 10000, enabled: bool = True,
                 listener: Callable[[TraceRecord], None] | None = None,
                 exchange: ExchangeLimit | None = None, max_bytes: int = 8 << 20) -> None:
        self.enabled = enabled
        #: called with each record as it is made (a live view: ``sip listen``)
        self.listener = listener
        self.exchange = exchange
        self.max_bytes = max_bytes
        self.records: deque[TraceRecord] = deque()
        self._seq: deque[int] = deque()
        self._limit = max(1, limit)
        self._bytes = 0
        self._added = 0
        self.dropped = 0

    def add(self, direction: Literal["sent", "received"], local: str, remote: str, transport: str,
            summary: str, raw: bytes, call_id: str | None = None, at: float | None = None) -> float:
        """Record one message (``at``: its :func:`wire_time`, now if None); returns the time
        stamp used."""
        stamp = wire_time() if at is None else at
        if not self.enabled:
            return stamp
        seq = self._added
        self._added += 1
        if self.exchange is not None:
            if not self.exchange.admit(len(raw)):
                self.dropped += 1
                if self.listener is not None:
                    self.listener(TraceRecord(direction, stamp, local, remote, transport, summary, raw, call_id))
                return stamp
        record = TraceRecord(direction, stamp, local, remote, transport, summary, raw, call_id)
        self.records.append(record)
        self._seq.append(seq)
        if self.exchange is None:  # newest kept: evict the oldest beyond either bound
            self._bytes += len(raw)
            while len(self.records) > 1 and (len(self.records) > self._limit or self._bytes > self.max_bytes):
                self._bytes -= len(self.records.popleft().raw)
                self._seq.popleft()
                self.dropped += 1
        if self.listener is not None:
            self.listener(record)
        return stamp

    def __iter__(self) -> Iterator[TraceRecord]:
        return iter(self.records)

    def __len__(self) -> int:
        return len(self.records)

    def mark(self) -> int:
        """A position to read from later with :meth:`since` (counts every record added)."""
        return self._added

    def since(self, mark: int) -> list[TraceRecord]:
        """The records added after :meth:`mark` returned ``mark`` (those still kept)."""
        return [r for s, r in zip(self._seq, self.records, strict=True) if s >= mark]

    def for_call(self, call_id: str) -> list[TraceRecord]:
        """The records of one Call-ID."""
        return [r for r in self.records if r.call_id == call_id]


def to_wire_messages(records: Iterable[TraceRecord]) -> list[WireMessage]:
    """The API/CLI form of trace records (raw decoded as UTF-8 with replacement)."""
    return [
        WireMessage(direction=r.direction, time=r.time, local=r.local, remote=r.remote, transport=r.transport,
                    summary=r.summary, raw=r.raw.decode("utf-8", errors="replace"))
        for r in records
    ]
