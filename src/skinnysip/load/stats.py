"""Counters of a load run, mergeable across tasks, processes and machines.

:class:`Counters` is what one worker counts between two snapshots (an *interval*); the
driver adds the workers' intervals up (:meth:`Counters.merge`) into the run's interval and
its cumulative totals. Everything in it is plain data (ints, floats, dicts), so it pickles
for Ray and serialises to JSON. Response times are kept in a :class:`LatencyHistogram`
(log buckets 2 % wide, so percentiles merge exactly and memory is bounded whatever the
count). Python units: seconds for times handed in; the reported percentiles are ms.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = ["FAILURE_KINDS", "MAX_ERRORS", "MAX_WARNINGS", "WATCHDOG_INTERVAL", "WATCHDOG_MAJOR",
           "WATCHDOG_MINOR", "Counters", "LatencyHistogram"]

#: failure details (``Counters.errors``) one counters object keeps: the first ones
MAX_ERRORS = 20
#: distinct warnings (``Counters.warnings``) one counters object keeps
MAX_WARNINGS = 20

#: SIPp's watchdog (its defaults, seconds): it runs every ``WATCHDOG_INTERVAL``; a run more
#: than ``WATCHDOG_MINOR`` after the previous one is a minor trip, more than ``WATCHDOG_MAJOR``
#: a major one (``-watchdog_interval``, ``-watchdog_minor_threshold``, ``-watchdog_major_threshold``)
WATCHDOG_INTERVAL = 0.4
WATCHDOG_MINOR = 0.5
WATCHDOG_MAJOR = 3.0
#: a watchdog window in which the event loop's thread was runnable (on a CPU or waiting for
#: one) for at least this share of the time is a busy one: the loop never waited for input,
#: so the load generator itself set the pace then (not SIPp's; :meth:`Counters.watchdog`)
BUSY_SHARE = 0.95

#: why an attempt failed, by SIPp's failure counter names (``-trace_stat`` columns, in its order)
FAILURE_KINDS = (
    "FailedCannotSendMessage",   # a send failed (socket error, connection gone)
    "FailedMaxUDPRetrans",       # UDP: no answer once the retransmissions ran out (Timer B/F, RFC 3261 §17.1)
    "FailedTcpConnect",          # TCP/TLS: no connection (refused, handshake failed)
    "FailedTcpClosed",           # TCP/TLS: the server closed or reset the connection before the answer
    "FailedUnexpectedMessage",   # a final response other than the one the scenario waits for
    "FailedCallRejected",        # the user scenario raised or returned False
    "FailedTimeoutOnRecv",       # TCP/TLS: no final response before Timer B/F; a --timeout shorter than it
)

_BASE_MS = 0.01  # smallest bucket edge: 10 µs
_GROWTH = 1.02   # each bucket 2 % wider than the previous
_LOG_GROWTH = math.log(_GROWTH)
_MAX_BUCKET = 1200  # 0.01 ms x 1.02^1200 ≈ 2e8 ms: anything longer goes in the last bucket


@dataclass
class LatencyHistogram:
    """Durations in log buckets (each 2 % wide): bounded memory, exact merge, percentiles
    within 2 %. ``buckets`` maps bucket index → count; ``total_ms``/``total_sq_ms`` give the
    mean and standard deviation exactly."""

    buckets: dict[int, int] = field(default_factory=dict)
    count: int = 0
    total_ms: float = 0.0
    total_sq_ms: float = 0.0
    max_ms: float = 0.0

    def add(self, seconds: float) -> None:
        """Record one duration (seconds; negative taken as 0)."""
        ms = seconds * 1000.0 if seconds > 0 else 0.0
        if ms <= _BASE_MS:
            index = 0
        else:
            index = int(math.log(ms / _BASE_MS) / _LOG_GROWTH) + 1
            if index > _MAX_BUCKET:
                index = _MAX_BUCKET
        buckets = self.buckets
        buckets[index] = buckets.get(index, 0) + 1
        self.count += 1
        self.total_ms += ms
        self.total_sq_ms += ms * ms
        if ms > self.max_ms:
            self.max_ms = ms

    def merge(self, other: LatencyHistogram) -> None:
        for index, n in other.buckets.items():
            self.buckets[index] = self.buckets.get(index, 0) + n
        self.count += other.count
        self.total_ms += other.total_ms
        self.total_sq_ms += other.total_sq_ms
        self.max_ms = max(self.max_ms, other.max_ms)

    def percentile(self, q: float) -> float | None:
        """The ``q``-th percentile (0-100) in ms (the bucket's upper edge, at most the
        largest value seen), None when empty."""
        if self.count == 0:
            return None
        rank = max(1, math.ceil(self.count * q / 100.0))
        seen = 0
        for index in sorted(self.buckets):
            seen += self.buckets[index]
            if seen >= rank:
                edge = _BASE_MS * _GROWTH ** index
                return round(min(edge, self.max_ms), 3)
        return round(self.max_ms, 3)

    @property
    def mean_ms(self) -> float | None:
        return self.total_ms / self.count if self.count else None

    @property
    def stdev_ms(self) -> float | None:
        if not self.count:
            return None
        mean = self.total_ms / self.count
        return math.sqrt(max(0.0, self.total_sq_ms / self.count - mean * mean))

    def below(self, ms: float) -> int:
        """How many durations were below ``ms`` (to bucket precision)."""
        return sum(n for index, n in self.buckets.items() if _BASE_MS * _GROWTH ** index <= ms)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LatencyHistogram:
        return cls({int(k): int(v) for k, v in data["buckets"].items()}, int(data["count"]),
                   float(data["total_ms"]), float(data["total_sq_ms"]), float(data["max_ms"]))


@dataclass
class Counters:
    """What happened in one interval (or a whole run).

    ``attempted``: scenario instances started (SIPp's OutgoingCall); ``successful`` /
    ``failed``: ended so (SIPp's SuccessfulCall/FailedCall); ``failed_by_status``: final
    status code (as a string, ``"timeout"``, ``"transport"`` or ``"error"`` when there was
    none) → count; ``failed_by_kind``: the same failures by SIPp counter name
    (:data:`FAILURE_KINDS`); ``retransmissions``: requests and responses sent again by our
    transactions (RFC 3261 §17, Timers A/E/G); ``requests_sent``: requests sent by the
    scenario (digest retries included, retransmissions not); ``response_time``: first
    request sent → final response of the scenario's main transaction (a digest
    retry included: the whole exchange up to the final response that decides the attempt);
    ``call_length``: start → end of each successful instance; ``alerting_time``: a call's
    INVITE → its first 18x with a To tag (the post-dial delay; calls that were alerted);
    for calls the media: ``mos_sum``/``mos_count`` (G.107 MOS of our receive direction),
    ``rtp_expected``/``rtp_lost`` (RFC 3550 §6.4.1) and ``jitter_ms_sum``/``jitter_count``
    (interarrival jitter at the end of each call).
    ``finished``: instances that ended (either way) — ``attempted - finished`` are still
    running. ``errors``: what the first :data:`MAX_ERRORS` failures were (text: the status,
    the request sent and the answer, or the user scenario's exception), for
    ``--trace-err``. ``warnings``: problems of the run that are no attempt's failure (a
    ``--trace-msg`` file that could no longer be written), one line each, each once.
    ``registered``/``registration_failures``: the ``answer`` scenario's users that registered,
    and one line (``user: reason``) for each that could not (at most :data:`MAX_WARNINGS`
    kept; ``not_registered_count`` counts them all). ``malformed``: messages received and
    dropped as malformed (RFC 3261 §18.1.2: a response without a usable Via, CSeq…),
    ``last_malformed`` what the last one was (``unparseable (reason)``).
    ``watchdog_minor``/``watchdog_major``: SIPp's watchdog trips — our own event loop ran its
    watchdog more than 0.5 s / 3 s apart instead of every 0.4 s (the load generator was
    overloaded or stalled); ``loop_lag_max``: the longest such delay beyond 0.4 s, seconds;
    ``loop_windows``/``busy_windows``: the watchdog's windows, and those in which the event
    loop's thread was runnable for at least :data:`BUSY_SHARE` of the window (the generator
    at its own limit even when it was not late).
    ``out_of_call_msgs``/``dead_call_msgs``: SIPp's counters of messages that belong to no
    running attempt — a response matching no transaction of ours (RFC 3261 §17.1.3) or an
    in-dialog request for no call of ours — whose Call-ID was never ours (``OutOfCallMsgs``),
    or is that of an attempt that ended at most 33 s before (``DeadCallMsgs``, SIPp's
    ``-deadcall_wait``). ``auto_answered``: out-of-dialog OPTIONS our endpoint answered 200 by
    itself (a registrar's keep-alive pings; SIPp's ``AutoAnswered`` under ``-aa``).
    ``refreshes``: REGISTER refreshes answered 2xx (``register`` with refreshes);
    ``refresh_challenges``: refreshes whose cached credentials (RFC 3261 §22.3) drew a new
    challenge — the server took the nonce only once, or not at all."""

    attempted: int = 0
    successful: int = 0
    failed: int = 0
    finished: int = 0
    failed_by_status: dict[str, int] = field(default_factory=dict)
    failed_by_kind: dict[str, int] = field(default_factory=dict)
    retransmissions: int = 0
    requests_sent: int = 0
    response_time: LatencyHistogram = field(default_factory=LatencyHistogram)
    call_length: LatencyHistogram = field(default_factory=LatencyHistogram)
    alerting_time: LatencyHistogram = field(default_factory=LatencyHistogram)
    mos_sum: float = 0.0
    mos_count: int = 0
    mos_min: float | None = None
    rtp_expected: int = 0
    rtp_lost: int = 0
    jitter_ms_sum: float = 0.0
    jitter_count: int = 0
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    registered: int = 0
    not_registered_count: int = 0
    registration_failures: list[str] = field(default_factory=list)
    malformed: int = 0
    last_malformed: str | None = None
    watchdog_minor: int = 0
    watchdog_major: int = 0
    loop_lag_max: float = 0.0
    loop_windows: int = 0
    busy_windows: int = 0
    out_of_call_msgs: int = 0
    dead_call_msgs: int = 0
    auto_answered: int = 0
    refreshes: int = 0
    refresh_challenges: int = 0

    # -- recording -------------------------------------------------------------------------
    def success(self, response_time: float | None, length: float) -> None:
        """One instance succeeded; ``response_time``/``length`` in seconds."""
        self.successful += 1
        self.finished += 1
        if response_time is not None:
            self.response_time.add(response_time)
        self.call_length.add(length)

    def failure(self, status: str, kind: str, response_time: float | None = None) -> None:
        """One instance failed with ``status`` (a code, ``timeout``, ``transport``…) of
        ``kind`` (one of :data:`FAILURE_KINDS`)."""
        self.failed += 1
        self.finished += 1
        self.failed_by_status[status] = self.failed_by_status.get(status, 0) + 1
        self.failed_by_kind[kind] = self.failed_by_kind.get(kind, 0) + 1
        if response_time is not None:
            self.response_time.add(response_time)

    def warn(self, text: str) -> None:
        """Record a warning (one line; kept once, at most :data:`MAX_WARNINGS`)."""
        if text not in self.warnings and len(self.warnings) < MAX_WARNINGS:
            self.warnings.append(text)

    def dropped(self, count: int, last: str | None) -> None:
        """``count`` malformed messages were received and dropped, the last described by
        ``last`` (a transport's ``malformed_count``/``last_malformed``)."""
        if count:
            self.malformed += count
            self.last_malformed = last

    def watchdog(self, gap: float, runnable: float) -> None:
        """The watchdog ran ``gap`` seconds after its previous run (due every
        :data:`WATCHDOG_INTERVAL`): count SIPp's minor/major trips and the lag; ``runnable``:
        the seconds the loop's thread was on a CPU or waiting for one in that window (a busy
        window from :data:`BUSY_SHARE` of ``gap`` on)."""
        self.loop_windows += 1
        if runnable >= BUSY_SHARE * gap:
            self.busy_windows += 1
        self.loop_lag_max = max(self.loop_lag_max, gap - WATCHDOG_INTERVAL)
        if gap > WATCHDOG_MAJOR:
            self.watchdog_major += 1
        elif gap > WATCHDOG_MINOR:
            self.watchdog_minor += 1

    def not_registered(self, reason: str) -> None:
        """One user of the ``answer`` scenario could not register: ``reason`` is ``user: why``."""
        self.not_registered_count += 1
        if len(self.registration_failures) < MAX_WARNINGS:
            self.registration_failures.append(reason)

    @property
    def wants_error(self) -> bool:
        """True while :attr:`errors` has room: build a failure's text only then."""
        return len(self.errors) < MAX_ERRORS

    def media(self, report: dict[str, Any] | None) -> None:
        """Add one call's final media report (:meth:`skinnysip.net.media.MediaStream.report`)."""
        if not report:
            return
        received = report.get("received") or {}
        self.rtp_expected += int(received.get("expected") or 0)
        self.rtp_lost += int(received.get("lost") or 0)
        if received.get("jitter_ms") is not None and received.get("packets"):
            self.jitter_ms_sum += float(received["jitter_ms"])
            self.jitter_count += 1
        quality = report.get("quality")
        if quality and quality.get("mos") is not None:
            mos = float(quality["mos"])
            self.mos_sum += mos
            self.mos_count += 1
            self.mos_min = mos if self.mos_min is None else min(self.mos_min, mos)

    # -- combining ---------------------------------------------------------------------------
    def merge(self, other: Counters) -> Counters:
        """Add ``other`` into this one (returns self)."""
        for name in ("attempted", "successful", "failed", "finished", "retransmissions", "requests_sent",
                     "mos_count", "rtp_expected", "rtp_lost", "jitter_count", "registered", "not_registered_count",
                     "malformed", "watchdog_minor", "watchdog_major", "loop_windows", "busy_windows",
                     "out_of_call_msgs", "dead_call_msgs",
                     "auto_answered", "refreshes", "refresh_challenges"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.loop_lag_max = max(self.loop_lag_max, other.loop_lag_max)
        self.last_malformed = other.last_malformed or self.last_malformed
        self.mos_sum += other.mos_sum
        self.jitter_ms_sum += other.jitter_ms_sum
        if other.mos_min is not None:
            self.mos_min = other.mos_min if self.mos_min is None else min(self.mos_min, other.mos_min)
        for mine, theirs in ((self.failed_by_status, other.failed_by_status),
                             (self.failed_by_kind, other.failed_by_kind)):
            for key, n in theirs.items():
                mine[key] = mine.get(key, 0) + n
        self.response_time.merge(other.response_time)
        self.call_length.merge(other.call_length)
        self.alerting_time.merge(other.alerting_time)
        if other.errors and self.wants_error:
            self.errors.extend(other.errors[:MAX_ERRORS - len(self.errors)])
        for text in other.warnings:
            self.warn(text)
        self.registration_failures.extend(other.registration_failures[:MAX_WARNINGS - len(self.registration_failures)])
        return self

    # -- figures ---------------------------------------------------------------------------
    @property
    def mos(self) -> float | None:
        return round(self.mos_sum / self.mos_count, 2) if self.mos_count else None

    @property
    def loss(self) -> float | None:
        """RTP packets lost / expected (0..1) over the calls, None without media."""
        return round(self.rtp_lost / self.rtp_expected, 4) if self.rtp_expected else None

    @property
    def jitter_ms(self) -> float | None:
        return round(self.jitter_ms_sum / self.jitter_count, 3) if self.jitter_count else None

    def to_dict(self) -> dict[str, Any]:
        """Plain data (for Ray/JSON); :meth:`from_dict` reverses it."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Counters:
        values = dict(data)
        values["response_time"] = LatencyHistogram.from_dict(values["response_time"])
        values["call_length"] = LatencyHistogram.from_dict(values["call_length"])
        if "alerting_time" in values:
            values["alerting_time"] = LatencyHistogram.from_dict(values["alerting_time"])
        values["failed_by_status"] = dict(values["failed_by_status"])
        values["failed_by_kind"] = dict(values["failed_by_kind"])
        values["errors"] = [str(e) for e in values.get("errors", ())][:MAX_ERRORS]
        values["warnings"] = [str(w) for w in values.get("warnings", ())][:MAX_WARNINGS]
        values["registration_failures"] = [str(r) for r in values.get("registration_failures", ())][:MAX_WARNINGS]
        return cls(**values)
