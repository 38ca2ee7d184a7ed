"""What a load run shows and writes: the per-interval CSV and the live rich view.

The CSV (``,``-separated, one header line, one row per interval: ``pandas.read_csv(path)``)
has SIPp's ``-trace_stat`` columns under SIPp's names where they exist — ``(P)`` for the
period, ``(C)`` cumulative — and skinnysip's own after them (:data:`CSV_COLUMNS`).
``StartTime``/``LastResetTime``/``CurrentTime`` are ISO 8601 UTC times (the run's start, the
period's start, now), ``ElapsedTime`` seconds (SIPp writes ``HH:MM:SS``), response times and
call lengths ms. The calls of the ``answer`` scenario are ``IncomingCall`` (SIPp's UAS
counts them so), every other scenario's ``OutgoingCall``. ``FailedByStatus(C)`` is
``code:count`` pairs joined by spaces (``401:2 timeout:1``).
"""

from __future__ import annotations

import contextlib
import csv
import datetime as dt
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from .runner import Interval
from .stats import FAILURE_KINDS, MAX_ERRORS, Counters, LatencyHistogram

__all__ = ["CALL_LENGTH_REPARTITION_MS", "CSV_COLUMNS", "MAX_ERRORS_LOGGED", "CsvSink", "ErrorLogSink", "LiveView",
           "MessageLog", "OutputFile", "ProgressLines", "REPARTITION_MS", "top_statuses"]

#: SIPp's ResponseTimeRepartition1 bucket edges (ms, its default), with the same column names
REPARTITION_MS = (10, 20, 30, 40, 50, 100, 150, 200)
#: SIPp's CallLengthRepartition bucket edges (ms, its default), with the same column names
CALL_LENGTH_REPARTITION_MS = (10, 50, 100, 500, 1000, 5000, 10000)


def _pc(name: str) -> list[str]:
    return [f"{name}(P)", f"{name}(C)"]


#: the CSV header: SIPp's names first, then skinnysip's
CSV_COLUMNS: list[str] = [
    "StartTime", "LastResetTime", "CurrentTime", *_pc("ElapsedTime"), "TargetRate", *_pc("CallRate"),
    *_pc("IncomingCall"), *_pc("OutgoingCall"), "TotalCallCreated", "CurrentCall", *_pc("SuccessfulCall"),
    *_pc("FailedCall"), *[column for kind in FAILURE_KINDS for column in _pc(kind)],
    *_pc("OutOfCallMsgs"), *_pc("DeadCallMsgs"), *_pc("Retransmissions"), *_pc("AutoAnswered"),
    *_pc("Warnings"), *_pc("WatchdogMajor"), *_pc("WatchdogMinor"),
    *_pc("ResponseTime1"), *_pc("ResponseTime1StDev"),
    *_pc("CallLength"), *_pc("CallLengthStDev"),
    *[f"ResponseTimeRepartition1_<{edge}" for edge in REPARTITION_MS],
    f"ResponseTimeRepartition1_>={REPARTITION_MS[-1]}",
    *[f"CallLengthRepartition_<{edge}" for edge in CALL_LENGTH_REPARTITION_MS],
    f"CallLengthRepartition_>={CALL_LENGTH_REPARTITION_MS[-1]}",
    # skinnysip's own
    *_pc("RequestsSent"), *_pc("ResponseTimeP50"), *_pc("ResponseTimeP90"), *_pc("ResponseTimeP95"),
    *_pc("ResponseTimeP99"), *_pc("MOS"), "MOSMin(C)", *_pc("Loss"), *_pc("JitterMs"), "FailedByStatus(C)",
    *_pc("LoopLagMaxMs"), *_pc("Refreshes"), *_pc("RefreshChallenges"), *_pc("LoopBusyWindows"),
]


def _ms(value: float | None) -> float | str:
    return "" if value is None else round(value, 3)


def _time(unix: float) -> str:
    return dt.datetime.fromtimestamp(unix, dt.UTC).isoformat(timespec="milliseconds")


def _repartition(row: dict[str, Any], name: str, histogram: LatencyHistogram, edges: tuple[int, ...]) -> None:
    """SIPp's repartition columns ``name_<edge`` … ``name_>=last``: how many of the
    ``histogram``'s samples fall in each bucket (ms), as SIPp counts them: cumulative."""
    below_prev = 0
    for edge in edges:
        below = histogram.below(edge)
        row[f"{name}_<{edge}"] = below - below_prev
        below_prev = below
    row[f"{name}_>={edges[-1]}"] = histogram.count - below_prev


def _row(item: Interval, incoming: bool = False) -> dict[str, Any]:
    p, c = item.period, item.total
    calls = "IncomingCall" if incoming else "OutgoingCall"
    other = "OutgoingCall" if incoming else "IncomingCall"
    row: dict[str, Any] = {
        "StartTime": _time(item.start), "LastResetTime": _time(item.now - item.period_seconds),
        "CurrentTime": _time(item.now),
        "ElapsedTime(P)": round(item.period_seconds, 3), "ElapsedTime(C)": round(item.elapsed, 3),
        "TargetRate": item.target_rate,
        "CallRate(P)": round(p.attempted / item.period_seconds, 3) if item.period_seconds > 0 else 0,
        "CallRate(C)": round(c.attempted / item.elapsed, 3) if item.elapsed > 0 else 0,
        f"{calls}(P)": p.attempted, f"{calls}(C)": c.attempted, f"{other}(P)": 0, f"{other}(C)": 0,
        "TotalCallCreated": c.attempted,
        "CurrentCall": item.in_progress,
        "SuccessfulCall(P)": p.successful, "SuccessfulCall(C)": c.successful,
        "FailedCall(P)": p.failed, "FailedCall(C)": c.failed,
        "OutOfCallMsgs(P)": p.out_of_call_msgs, "OutOfCallMsgs(C)": c.out_of_call_msgs,
        "DeadCallMsgs(P)": p.dead_call_msgs, "DeadCallMsgs(C)": c.dead_call_msgs,
        "Retransmissions(P)": p.retransmissions, "Retransmissions(C)": c.retransmissions,
        "AutoAnswered(P)": p.auto_answered, "AutoAnswered(C)": c.auto_answered,
        "Warnings(P)": len(p.warnings), "Warnings(C)": len(c.warnings),
        "WatchdogMajor(P)": p.watchdog_major, "WatchdogMajor(C)": c.watchdog_major,
        "WatchdogMinor(P)": p.watchdog_minor, "WatchdogMinor(C)": c.watchdog_minor,
        "LoopLagMaxMs(P)": round(p.loop_lag_max * 1000, 1), "LoopLagMaxMs(C)": round(c.loop_lag_max * 1000, 1),
        "LoopBusyWindows(P)": p.busy_windows, "LoopBusyWindows(C)": c.busy_windows,
        "ResponseTime1(P)": _ms(p.response_time.mean_ms), "ResponseTime1(C)": _ms(c.response_time.mean_ms),
        "ResponseTime1StDev(P)": _ms(p.response_time.stdev_ms), "ResponseTime1StDev(C)": _ms(c.response_time.stdev_ms),
        "CallLength(P)": _ms(p.call_length.mean_ms), "CallLength(C)": _ms(c.call_length.mean_ms),
        "CallLengthStDev(P)": _ms(p.call_length.stdev_ms), "CallLengthStDev(C)": _ms(c.call_length.stdev_ms),
        "RequestsSent(P)": p.requests_sent, "RequestsSent(C)": c.requests_sent,
        "Refreshes(P)": p.refreshes, "Refreshes(C)": c.refreshes,
        "RefreshChallenges(P)": p.refresh_challenges, "RefreshChallenges(C)": c.refresh_challenges,
        "MOS(P)": _ms(p.mos), "MOS(C)": _ms(c.mos), "MOSMin(C)": _ms(c.mos_min),
        "Loss(P)": _ms(p.loss), "Loss(C)": _ms(c.loss), "JitterMs(P)": _ms(p.jitter_ms), "JitterMs(C)": _ms(c.jitter_ms),
        "FailedByStatus(C)": " ".join(f"{k}:{v}" for k, v in sorted(c.failed_by_status.items())),
    }
    for kind in FAILURE_KINDS:
        row[f"{kind}(P)"] = p.failed_by_kind.get(kind, 0)
        row[f"{kind}(C)"] = c.failed_by_kind.get(kind, 0)
    _repartition(row, "ResponseTimeRepartition1", c.response_time, REPARTITION_MS)
    _repartition(row, "CallLengthRepartition", c.call_length, CALL_LENGTH_REPARTITION_MS)
    for q in (50, 90, 95, 99):
        row[f"ResponseTimeP{q}(P)"] = _ms(p.response_time.percentile(q))
        row[f"ResponseTimeP{q}(C)"] = _ms(c.response_time.percentile(q))
    return row


class OutputFile:
    """A file a load run writes as it goes (``--csv``, ``--trace-err``, ``--trace-msg``).

    A write that fails during the run (disk full, a file that refuses writes) stops the
    writing, not the run: :attr:`error` then says, in one line naming ``flag`` and the file,
    what happened, and later writes are dropped (each kind of file counts what it left out),
    as are writes after :meth:`close`. ``OSError`` from the constructor when the file cannot
    be created (checked before the run starts). ``on_error`` is called once with
    :attr:`error`."""

    def __init__(self, path: str | Path, flag: str, *, binary: bool = False,
                 on_error: Callable[[str], None] | None = None) -> None:
        self.path = str(path)
        self.flag = flag
        self.error: str | None = None
        self.on_error = on_error
        if binary:
            self._file: IO[Any] = open(path, "wb")  # noqa: SIM115 - closed by close()
        else:
            self._file = open(path, "w", newline="", encoding="utf-8")  # noqa: SIM115 - closed by close()

    def _write(self, data: str | bytes, *, flush: bool = False) -> bool:
        """Write ``data`` (then flush, if asked); False when it was not written."""
        if self.error is not None or self._file.closed:
            return False
        try:
            self._file.write(data)
            if flush:
                self._file.flush()
        except OSError as exc:
            self._failed(exc)
            return False
        return True

    def _failed(self, exc: Exception) -> None:
        self.error = (f"{self.flag}: writing {self.path!r} stopped: "
                      f"{getattr(exc, 'strerror', None) or exc}")
        with contextlib.suppress(OSError, ValueError):
            self._file.close()  # what is still buffered is lost with the writing
        if self.on_error is not None:
            self.on_error(self.error)

    def close(self) -> None:
        """Flush and close (a failure then sets :attr:`error`, as a write's would)."""
        if self._file.closed:
            return
        try:
            self._file.close()
        except OSError as exc:
            self._failed(exc)


class CsvSink(OutputFile):
    """Writes one CSV row per interval to ``path`` (flushed each row, so it can be read
    while the run goes on). Use as a sink, then :meth:`close`. ``incoming``: the run answers
    calls (``answer``): its instances are counted as ``IncomingCall``. ``OSError`` from the
    constructor when the file cannot be created or its header line written."""

    def __init__(self, path: str | Path, *, incoming: bool = False) -> None:
        super().__init__(path, "--csv")
        self.incoming = incoming  # the answer scenario: its calls are SIPp's IncomingCall
        self.left_out = 0  # rows not written
        self._writer = csv.DictWriter(self, fieldnames=CSV_COLUMNS)  # it calls self.write once a row
        try:
            self._file.write(",".join(CSV_COLUMNS) + "\r\n")  # the header (no column needs quotes)
            self._file.flush()
        except OSError:
            with contextlib.suppress(OSError):
                self._file.close()
            raise

    def write(self, line: str) -> None:
        """The csv writer's output: one row, written and flushed at once."""
        if not self._write(line, flush=True):
            self.left_out += 1

    def __call__(self, item: Interval) -> None:
        self._writer.writerow(_row(item, self.incoming))


#: failure details one ``--trace-err`` file holds at most
MAX_ERRORS_LOGGED = 1000


class ErrorLogSink(OutputFile):
    """Writes what failed attempts were to ``path`` as text, as SIPp's ``-trace_err`` does:
    one block per failure (a ``-----`` line with the time, then :attr:`Counters.errors`'s
    text: status, SIPp failure kind, the request sent and the answer received, or the user
    scenario's exception). The first :data:`~skinnysip.load.stats.MAX_ERRORS` failures of
    each interval, :data:`MAX_ERRORS_LOGGED` in all; the last line counts the failures left
    out. Flushed every interval. ``OSError`` from the constructor when the file cannot be
    created."""

    def __init__(self, path: str | Path) -> None:
        super().__init__(path, "--trace-err")
        self.logged = 0
        self.left_out = 0  # failures not written

    def __call__(self, item: Interval) -> None:
        stamp = dt.datetime.fromtimestamp(item.now).isoformat(sep=" ", timespec="milliseconds")
        room = max(0, MAX_ERRORS_LOGGED - self.logged)
        written = 0
        for text in item.period.errors[:room]:
            if self._write(f"----- {stamp} (+{item.elapsed:.3f} s) failure {self.logged + 1}\n{text}\n\n"):
                self.logged += 1
                written += 1
        self.left_out += item.period.failed - written
        if written:
            self._write("", flush=True)

    def close(self) -> None:
        if self.left_out and self.error is None:
            self._write(f"----- {self.left_out} more failures not written (at most {MAX_ERRORS} an "
                        f"interval, {MAX_ERRORS_LOGGED} in all)\n")
        super().close()


#: octets one ``--trace-msg`` file holds at most
MAX_MESSAGE_LOG_BYTES = 256 << 20


class MessageLog(OutputFile):
    """Every SIP message of a load run written to ``path`` as text, as SIPp's
    ``-trace_msg``: per message a ``-----`` line with the wall-clock time, ``sent`` or
    ``received``, the transport, our address, the peer's and the size, then the message
    (UTF-8, undecodable octets replaced). A :class:`~skinnysip.net.trace.Trace` listener. At
    most ``max_bytes`` octets are written; later messages are only counted and :meth:`close`
    says how many were left out. ``OSError`` from the constructor when the file cannot be
    created; a write that fails later is :class:`OutputFile`'s ``error``."""

    def __init__(self, path: str | Path, max_bytes: int = MAX_MESSAGE_LOG_BYTES, *,
                 on_error: Callable[[str], None] | None = None) -> None:
        super().__init__(path, "--trace-msg", binary=True, on_error=on_error)
        self.max_bytes = max_bytes
        self.written = 0
        self.left_out = 0  # messages not written

    def __call__(self, record: Any) -> None:
        """Write one :class:`~skinnysip.net.trace.TraceRecord`."""
        if self.written >= self.max_bytes or self.error is not None:
            self.left_out += 1
            return
        stamp = dt.datetime.fromtimestamp(record.time).isoformat(sep=" ", timespec="microseconds")
        arrow = "->" if record.direction == "sent" else "<-"
        data = (f"----- {stamp} {record.direction} {record.transport.upper()} {record.local} {arrow} "
                f"{record.remote} ({len(record.raw)} bytes)\n"
                f"{record.raw.decode('utf-8', 'replace')}\n\n").encode()
        if self._write(data):
            self.written += len(data)
        else:
            self.left_out += 1

    def close(self) -> None:
        if self.left_out and self.error is None:
            self._write(f"----- {self.left_out} more messages not written (the file holds at most "
                        f"{self.max_bytes} octets)\n".encode())
        super().close()


def _fmt(value: float | None, unit: str = "") -> str:
    return "-" if value is None else f"{value:g}{unit}"


def top_statuses(failed_by_status: dict[str, int], most: int = 3) -> str:
    """The commonest failure statuses, ``"503: 2, timeout: 1"`` (``, …`` when there are more
    than ``most``); empty when nothing failed."""
    ranked = sorted(failed_by_status.items(), key=lambda kv: -kv[1])
    return ", ".join(f"{status}: {n}" for status, n in ranked[:most]) + (", …" if len(ranked) > most else "")


class ProgressLines:
    """For a log rather than a terminal: one line of the run so far every ``every`` seconds
    (elapsed, attempted, successful, failed with the top statuses, rate, p50/p99, for calls
    MOS/loss), handed to ``write`` (a function taking the line). ``answering``: the ``answer``
    scenario's run (users registered instead of a target rate: the callers set the pace);
    ``listening``: where it answers without registering (``--no-register``)."""

    def __init__(self, write: Callable[[str], None], every: float = 10.0, *, answering: bool = False,
                 listening: str | None = None) -> None:
        self.write = write
        self.every = every
        self.answering = answering
        self.listening = listening
        self._next = every

    def __call__(self, item: Interval) -> None:
        if item.elapsed < self._next:
            return
        self._next = item.elapsed + self.every
        c = item.total
        statuses = top_statuses(c.failed_by_status)
        p50, p99 = c.response_time.percentile(50), c.response_time.percentile(99)
        times = f"p50 {p50:.3g} ms p99 {p99:.3g} ms" if p50 is not None and p99 is not None else "no response times"
        media = f", MOS {c.mos} loss {c.loss * 100:.2g} %" if c.mos is not None and c.loss is not None else ""
        rate = c.finished / item.elapsed if item.elapsed > 0 else 0.0
        pace = (f"listening on {self.listening}" if self.listening else registered_text(c) if self.answering
                else f"target {item.target_rate:g}/s")
        self.write(f"{item.elapsed:7.1f} s  {c.attempted} attempted, {c.successful} successful, {c.failed} failed"
                   f"{f' ({statuses})' if statuses else ''}, {item.in_progress} in progress, {rate:.1f}/s "
                   f"({pace}), {times}{media}")


def registered_text(c: Counters) -> str:
    """``N users registered`` (and how many not) of the ``answer`` scenario's counters."""
    return f"{c.registered} users registered" + (f", {c.not_registered_count} not" if c.not_registered_count else "")


class LiveView:
    """The live view (rich): rate, attempts, successes, failures by status, retransmissions,
    response-time percentiles, and for calls MOS/loss/jitter. Use as a sink inside
    ``rich.live.Live(view.render())``; ``view.live`` is updated when set. ``answering``: the
    ``answer`` scenario's run (its users registered instead of a target rate; ``listening``:
    where it answers without registering)."""

    def __init__(self, title: str, calls: bool, *, answering: bool = False, listening: str | None = None) -> None:
        self.title = title
        self.calls = calls
        self.answering = answering
        self.listening = listening
        self.last: Interval | None = None
        self.live: Any = None
        self.note = ""  # what just happened (a rate change, stopping), shown under the table
        self.hint = ""  # what the keys do, under the note

    def __call__(self, item: Interval) -> None:
        self.last = item
        if self.live is not None:
            self.live.update(self.render())

    def render(self) -> Any:
        from rich.table import Table

        caption = "\n".join(line for line in (self.note, self.hint) if line)
        table = Table(title=self.title, caption=caption or None, show_header=True, expand=False)
        table.add_column("")
        table.add_column("period", justify="right")
        table.add_column("total", justify="right")
        item = self.last
        if item is None:
            table.add_row("starting…", "", "")
            return table
        p, c = item.period, item.total

        def pct(counters: Counters, q: float) -> str:
            return _fmt(counters.response_time.percentile(q), " ms")

        rate_p = p.attempted / item.period_seconds if item.period_seconds > 0 else 0.0
        rate_c = c.finished / item.elapsed if item.elapsed > 0 else 0.0
        table.add_row("elapsed", f"{item.period_seconds:.1f} s", f"{item.elapsed:.1f} s")
        if self.answering:
            table.add_row("rate", f"{rate_p:.1f}/s", f"{rate_c:.1f}/s")
            table.add_row("listening" if self.listening else "users", "", self.listening or registered_text(c))
        else:
            table.add_row("rate (target)", f"{rate_p:.1f}/s", f"{rate_c:.1f}/s ({item.target_rate:g}/s)")
        table.add_row("attempted", str(p.attempted), str(c.attempted))
        table.add_row("in progress", "", str(item.in_progress))
        table.add_row("successful", f"[green]{p.successful}", f"[green]{c.successful}")
        table.add_row("failed", f"[red]{p.failed}" if p.failed else "0", f"[red]{c.failed}" if c.failed else "0")
        for status in sorted(c.failed_by_status):
            table.add_row(f"  {status}", str(p.failed_by_status.get(status, 0)), str(c.failed_by_status[status]))
        table.add_row("retransmissions", str(p.retransmissions), str(c.retransmissions))
        if c.refreshes or c.refresh_challenges:  # register --refreshes: how many needed a new challenge
            table.add_row("refreshes", str(p.refreshes), str(c.refreshes))
            table.add_row("  challenged again", str(p.refresh_challenges), str(c.refresh_challenges))
        for q in (50, 90, 99):
            table.add_row(f"response p{q}", pct(p, q), pct(c, q))
        if self.calls:
            table.add_row("MOS", _fmt(p.mos), _fmt(c.mos))
            table.add_row("loss", _fmt(None if p.loss is None else round(p.loss * 100, 2), " %"),
                          _fmt(None if c.loss is None else round(c.loss * 100, 2), " %"))
            table.add_row("jitter", _fmt(p.jitter_ms, " ms"), _fmt(c.jitter_ms, " ms"))
        if c.dead_call_msgs or c.out_of_call_msgs:  # SIPp's screen lines for messages of no running call
            table.add_row("dead call msgs", str(p.dead_call_msgs), str(c.dead_call_msgs))
            table.add_row("out-of-call msgs", str(p.out_of_call_msgs), str(c.out_of_call_msgs))
        if c.watchdog_minor or c.watchdog_major:  # this process could not keep up: say so where it shows
            table.add_row("[yellow]loop late", f"[yellow]{p.watchdog_minor + p.watchdog_major}",
                          f"[yellow]{c.watchdog_minor + c.watchdog_major} (max {c.loop_lag_max * 1000:.0f} ms)")
        elif p.busy_windows:  # never late, but never waiting either: at its limit now
            table.add_row("[yellow]loop busy", f"[yellow]{p.busy_windows} of {p.loop_windows} windows",
                          f"[yellow]{c.busy_windows} of {c.loop_windows}")
        return table
