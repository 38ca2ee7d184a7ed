"""The wire trace is bounded both ways (issue 11: floods do not eat memory): an operation's
exchange keeps its first messages within an ExchangeLimit and counts the rest; a long-running
endpoint keeps its newest messages within a message count and a byte budget."""

from __future__ import annotations

import pytest

from skinnysip.net.trace import Trace, to_wire_messages, wire_time
from skinnysip.result import ExchangeLimit


def _fill(trace: Trace, n: int, size: int) -> None:
    for i in range(n):
        trace.add("received", "127.0.0.1:5060", "127.0.0.1:5070", "udp", f"m{i}", b"x" * size)


def test_an_operations_exchange_keeps_the_first_messages_and_counts_the_rest() -> None:
    trace = Trace(exchange=ExchangeLimit(max_messages=10, max_bytes=1_000_000))
    _fill(trace, 10_000, 100)
    assert [r.summary for r in trace] == [f"m{i}" for i in range(10)] and trace.dropped == 9_990
    by_bytes = Trace(exchange=ExchangeLimit(max_messages=1000, max_bytes=1000))
    _fill(by_bytes, 100, 300)
    assert len(by_bytes) == 3 and by_bytes.dropped == 97
    assert sum(len(m.raw) for m in to_wire_messages(by_bytes)) <= 1000


def test_a_long_running_trace_keeps_the_newest_within_count_and_bytes() -> None:
    trace = Trace(limit=100, max_bytes=10_000)
    _fill(trace, 1000, 65_000)  # a flood of near-maximal datagrams
    assert len(trace) == 1 and trace.dropped == 999 and next(iter(trace)).summary == "m999"
    small = Trace(limit=100, max_bytes=10_000_000)
    _fill(small, 1000, 10)
    assert [r.summary for r in small][0] == "m900" and small.dropped == 900
    assert [r.summary for r in small.since(998)] == ["m998", "m999"]


def test_listener_sees_every_record_even_those_not_kept() -> None:
    seen: list[str] = []
    trace = Trace(exchange=ExchangeLimit(max_messages=2), listener=lambda r: seen.append(r.summary))
    _fill(trace, 5, 10)
    assert seen == ["m0", "m1", "m2", "m3", "m4"] and len(trace) == 2


def test_wire_time_is_epoch_seconds_that_never_go_back() -> None:
    import time

    stamps = [wire_time() for _ in range(1000)]
    assert stamps == sorted(stamps) and abs(stamps[0] - time.time()) < 5.0


def test_wire_time_catches_up_with_a_wall_clock_that_jumped_ahead_but_never_goes_back(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import time

    from skinnysip.net import trace

    wall = time.time()
    monkeypatch.setattr(trace, "_epoch_offset", wall - time.monotonic())
    before = wire_time()
    # the machine slept for a minute: the monotonic clock did not count it, the wall clock did
    monkeypatch.setattr(time, "time", lambda: wall + 60.0)
    after = wire_time()
    assert 59.0 < after - before < 61.0
    # the clock is stepped back by an hour: the stamps go on from where they were
    monkeypatch.setattr(time, "time", lambda: wall - 3600.0)
    later = [wire_time() for _ in range(100)]
    assert later == sorted(later) and later[0] >= after
    # a wall clock a little ahead (less than RESYNC_AFTER) is not followed
    now = wire_time()
    monkeypatch.setattr(time, "time", lambda: now + trace.RESYNC_AFTER / 2)
    assert wire_time() - now < trace.RESYNC_AFTER / 2
