"""The cyclic garbage collector while real-time work runs in this process.

CPython's collector runs its youngest generation every 700 net allocations and, now and then,
a full collection that walks every tracked object of the process — tens of milliseconds once
numpy, the SIP core and a web server are loaded. A media stream must hand a packet to the
kernel every 20 ms (RFC 3551 §4.5 ptime), and a load run starts thousands of transactions a
second, each allocating hundreds of short-lived objects that reference counting frees anyway:
with the default settings, 150 media streams in one process skipped ~2 % of their frames
(the media clock fell a whole ptime behind during collections) at half a core of CPU, and
collection was ~15–19 % of a REGISTER load's CPU (``benchmarks/bench_media_calls.py``,
``benchmarks/bench_load_register.py``).

While at least one holder is active (:func:`acquire`/:func:`release`, or :func:`tuned`):

* what exists when the first holder arrives (modules, classes, sockets, tables) is moved out
  of the collector's scans (:func:`gc.freeze`), so a full collection walks only what was made
  since;
* the youngest generation is collected every :data:`GC_GEN0_THRESHOLD` allocations instead
  of 700 (older generations keep their thresholds).

Cycles are still collected, only less often. When the last holder leaves, the thresholds are
restored, and the objects are unfrozen if nothing had frozen any before the first holder
(another library's freeze is left alone). Holders are counted, not nested scopes: a phone
with three calls holds three times. Call from the event loop's thread (a lock keeps the count
right if a thread does too).
"""

from __future__ import annotations

import contextlib
import gc
import threading
from collections.abc import Iterator

__all__ = ["GC_GEN0_THRESHOLD", "acquire", "collector_paused", "holders", "release", "tuned"]

#: the youngest generation's threshold while a holder is active (CPython's default: 700)
GC_GEN0_THRESHOLD = 20_000

_lock = threading.Lock()
_holders = 0
_saved_threshold: tuple[int, ...] = gc.get_threshold()
_unfreeze_after = False


def acquire() -> None:
    """One more holder: the first one freezes what exists and raises the youngest generation's
    threshold to :data:`GC_GEN0_THRESHOLD` (never lowers it)."""
    global _holders, _saved_threshold, _unfreeze_after
    with _lock:
        _holders += 1
        if _holders == 1:
            _saved_threshold = gc.get_threshold()
            _unfreeze_after = gc.get_freeze_count() == 0
            gc.freeze()
            gc.set_threshold(max(_saved_threshold[0], GC_GEN0_THRESHOLD), *_saved_threshold[1:])


def release() -> None:
    """One holder less: after the last, the thresholds of before the first are restored and the
    freeze undone (if it was ours). ``RuntimeError`` when there is no holder."""
    global _holders
    with _lock:
        if _holders == 0:
            raise RuntimeError("realtime.release() without a matching acquire()")
        _holders -= 1
        if _holders == 0:
            gc.set_threshold(*_saved_threshold)
            if _unfreeze_after:
                gc.unfreeze()


def holders() -> int:
    """How many holders are active now (0: the collector runs as it was configured)."""
    return _holders


@contextlib.contextmanager
def tuned() -> Iterator[None]:
    """:func:`acquire` for the ``with`` block, :func:`release` after it (also on errors)."""
    acquire()
    try:
        yield
    finally:
        release()


@contextlib.contextmanager
def collector_paused() -> Iterator[None]:
    """No cyclic garbage collection inside the block; the collector is as it was after it.
    For what makes objects that live to the end (imports) or ends soon and lets everything go
    (a command line probe's one bounded run): the collector's passes would only walk them
    (~1 ms each of ``skinnysip sip options``' start-up, issue 12)."""
    collecting = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if collecting:
            gc.enable()
