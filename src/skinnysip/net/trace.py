"""Cheap records of what crossed the wire, kept by the drivers (bounded, can be switched off).

A :class:`TraceRecord` is made per message sent or received: direction, wall-clock time,
local and remote ``host:port``, transport, a one-line summary, the raw bytes and the
Call-ID (to pick one call's messages out of a shared endpoint). Pydantic
``WireMessage`` objects are built from them only where a result is made
(:func:`to_wire_messages`).
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Literal

from skinnysip.result import WireMessage

__all__ = ["Trace", "TraceRecord", "to_wire_messages"]


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
    """A bounded log of :class:`TraceRecord` (oldest dropped beyond ``limit``).
    ``enabled=False`` records nothing (load generation)."""

    def __init__(self, limit: int = 10000, enabled: bool = True,
                 listener: Callable[[TraceRecord], None] | None = None) -> None:
        self.enabled = enabled
        #: called with each record as it is made (a live view: ``sip listen``)
        self.listener = listener
        self.records: deque[TraceRecord] = deque(maxlen=max(1, limit))
        self.dropped = 0

    def add(self, direction: Literal["sent", "received"], local: str, remote: str, transport: str,
            summary: str, raw: bytes, call_id: str | None = None) -> None:
        if not self.enabled:
            return
        if len(self.records) == self.records.maxlen:
            self.dropped += 1
        record = TraceRecord(direction, time.time(), local, remote, transport, summary, raw, call_id)
        self.records.append(record)
        if self.listener is not None:
            self.listener(record)

    def __iter__(self) -> Iterator[TraceRecord]:
        return iter(self.records)

    def __len__(self) -> int:
        return len(self.records)

    def mark(self) -> int:
        """A position to read from later with :meth:`since` (counts dropped records)."""
        return self.dropped + len(self.records)

    def since(self, mark: int) -> list[TraceRecord]:
        """The records added after :meth:`mark` returned ``mark`` (those still kept)."""
        skip = max(0, mark - self.dropped)
        return list(self.records)[skip:]

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
