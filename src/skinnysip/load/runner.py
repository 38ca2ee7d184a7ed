"""The load runner: starts attempts at a rate, keeps at most ``limit`` in progress, stops by
itself, and hands out its counters interval by interval.

:class:`LoadRunner` runs one scenario in one event loop (one process, or one worker of a
distributed run). :class:`Monitor` is the driver's side: every ``interval`` seconds it takes
an interval from a source (a local runner, or the Ray workers summed up: ``distributed.py``),
adds it to the run's totals and hands both to its sinks (the live view, the CSV). The final
summary is :func:`summary`. Python units: seconds; rates per second.

Bounded: no more than ``count`` attempts (:data:`MAX_ATTEMPTS` when only a duration is
given; a run with neither ``count`` nor ``duration`` lasts :data:`DEFAULT_DURATION` seconds);
no new attempt after ``duration``; in-flight attempts get ``timeout`` + their hold
(:attr:`LoadConfig.attempt_hold`: a call's, a registration's refreshes) + :data:`DRAIN_GRACE`
seconds to end, then are cancelled and counted as failed (``aborted``).

The ``answer`` scenario (the called side) starts no attempts: the calls the server brings
are its attempts (:meth:`LoadRunner.admit`), counted, limited and ended the same way; it
waits for them ``duration`` seconds, else until ``count`` calls or :data:`ANSWER_DURATION`.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, Protocol

from skinnysip.addresses import hostport
from skinnysip.net import realtime

from .scenarios import InlineAttempt, LoadConfig, Scenario, exception_note, make_scenario, record_failure
from .stats import WATCHDOG_INTERVAL, Counters

__all__ = ["ANSWER_DURATION", "DEFAULT_DURATION", "Interval", "LoadRunner", "Monitor", "RateStep",
           "raise_open_files_limit", "run_local", "runnable_clock", "summary"]

DEFAULT_DURATION = 10.0  # seconds, when neither count nor duration is given
ANSWER_DURATION = 3600.0  # seconds the answer scenario waits for calls without a duration
DRAIN_GRACE = 10.0  # seconds beyond timeout + hold for the last attempts to end
MIN_RAMP_SHARE = 0.05  # the ramp starts at 5 % of the rate
MAX_BURST = 1.0  # seconds of attempts started at once to catch up after a stall, at most
MAX_ATTEMPTS = 1_000_000_000  # the count bound of a run given by its duration only
PACE_QUANTUM = 0.005  # s, the shortest sleep between starts (an attempt starts at most this late)
PAUSE_POLL = 0.05  # s, how often a paused runner looks whether it was resumed or stopped
TICK_SLACK = 0.06  # s, how early a statistics interval may end against a step's due time (the poll's 0.05 s)


def _schedstat_runnable() -> float:
    with open("/proc/thread-self/schedstat", "rb") as file:
        on_cpu, waiting, _ = file.read(256).split(maxsplit=2)
    return (int(on_cpu) + int(waiting)) / 1e9


def runnable_clock() -> Callable[[], float]:
    """A clock of the seconds the calling thread has been runnable: on a CPU, or waiting in
    a run queue for one (Linux: ``/proc/thread-self/schedstat``, its first two fields, ns) —
    so a loop that shares the cores with the server it loads still counts as never waiting
    for input. Where that file cannot be read: the thread's CPU time (:func:`time.thread_time`).
    Chosen once, so one watchdog never mixes the two."""
    try:
        _schedstat_runnable()
    except (OSError, ValueError):
        return time.thread_time
    return _schedstat_runnable


class LoadRunner:
    """One scenario at a rate, in this event loop. ``await runner.run()`` returns when the
    run is over; meanwhile :meth:`take_interval`, :meth:`set_rate` and :meth:`stop` may be
    called (from the same loop). ``counters`` is the interval being counted now.

    Raises from :meth:`run` only what the scenario's ``open`` raises (the server cannot be
    reached: ``SIPTransportError``/``PhoneError``/``ValueError`` with one line)."""

    def __init__(self, config: LoadConfig) -> None:
        config.validate()
        self.config = config
        self.counters = Counters()
        self.rate = config.rate
        self.scenario: Scenario = make_scenario(config, lambda: self.counters)
        self.started: float | None = None  # loop time of the first attempt
        self.done = False
        self.issued = 0
        self._stop = asyncio.Event()
        self.paused = False
        self._retrans_seen = 0
        self._tasks: set[asyncio.Task[None]] = set()
        # attempts running by callbacks, with no task (Scenario.inline; InlineAttempt)
        self._inline: set[InlineAttempt] = set()
        self._slots: asyncio.Semaphore | None = None
        self._idle: asyncio.Event | None = None  # set when the last inline attempt ends (_drain)

    @property
    def count(self) -> int:
        """Attempts to start at most: ``config.count``, else :data:`MAX_ATTEMPTS` (the
        duration ends the run; the rate may be raised while it runs)."""
        return self.config.count if self.config.count is not None else MAX_ATTEMPTS

    @property
    def duration(self) -> float:
        """Seconds to start attempts for: ``config.duration``; with a count only, no time
        bound (the count ends the run); else :data:`DEFAULT_DURATION`, or with rate steps up
        to ``rate_max`` their time (:meth:`LoadConfig.stepped_duration`) and one interval
        more: the monitor ends the steps, this is the bound behind it."""
        c = self.config
        if c.duration is not None:
            return c.duration
        if c.scenario == "answer":
            return ANSWER_DURATION
        if c.count is not None:
            return math.inf
        stepped = c.stepped_duration()
        return stepped + c.rate_interval if stepped is not None else DEFAULT_DURATION

    def set_rate(self, rate: float) -> None:
        """A new target rate (attempts per second, > 0), effective from the next attempt."""
        if rate > 0 and math.isfinite(rate):
            self.rate = rate

    def stop(self) -> None:
        """Start no more attempts; the running ones end as they would."""
        self._stop.set()

    def pause(self, paused: bool) -> None:
        """Start no attempts while ``paused`` (SIPp's ``p`` key); then go on at the rate from
        the moment it is resumed (no burst to catch up). The run's duration and deadline go
        on meanwhile."""
        self.paused = paused

    def abort(self) -> None:
        """Start no more attempts and cancel the running ones now: each is counted failed
        (``aborted``) and ends as a cancelled attempt does, a call by hanging up (BYE, or
        CANCEL while it rings; each bounded), as SIPp sends when it aborts a call. The run
        then closes as usual."""
        self._stop.set()
        for task in list(self._tasks):
            task.cancel()
        for attempt in list(self._inline):
            attempt.abort()

    def in_progress(self) -> int:
        return len(self._tasks) + len(self._inline)

    def _inline_done(self, attempt: InlineAttempt) -> None:
        """An inline attempt ended: its slot is free."""
        self._inline.discard(attempt)
        if self._slots is not None:
            self._slots.release()
        if not self._inline and self._idle is not None:
            self._idle.set()

    def take_interval(self) -> Counters:
        """The counters since the last call (retransmissions included), and a new interval."""
        snapshot, self.counters = self.counters, Counters()
        total = self.scenario.retransmissions()
        snapshot.retransmissions += total - self._retrans_seen
        self._retrans_seen = total
        return snapshot

    def _current_rate(self, now: float) -> float:
        ramp = self.config.ramp_up
        if ramp > 0 and self.started is not None and now - self.started < ramp:
            return self.rate * max(MIN_RAMP_SHARE, (now - self.started) / ramp)
        return self.rate

    def admit(self, attempt: Coroutine[Any, Any, None]) -> int | None:
        """Run ``attempt``, one the far end started (a call brought to the answer
        scenario), as an attempt of this run: None when it runs; else the SIP status to
        refuse the call with — 480 (Temporarily Unavailable) once the run takes no more
        (stopped, paused, ``count`` reached; not counted), 486 (Busy Here) when ``limit``
        attempts are running (counted failed, ``limit``). The run stops once ``count``
        were admitted."""
        if self._stop.is_set() or self.paused or self.done or self.issued >= self.count:
            attempt.close()
            return 480
        self.issued += 1
        self.counters.attempted += 1
        if self.issued >= self.count:
            self._stop.set()
        if len(self._tasks) >= self.config.limit:
            attempt.close()
            record_failure(self.counters, "limit", "FailedCallRejected",
                           note=f"refused 486: {self.config.limit} calls at once already (-l)")
            return 486
        task = asyncio.get_running_loop().create_task(self._attempt(attempt, None))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return None

    async def _attempt(self, attempt: Awaitable[None], slots: asyncio.Semaphore | None) -> None:
        try:
            await attempt
        except asyncio.CancelledError:
            self.counters.failure("aborted", "FailedTimeoutOnRecv")
            raise
        except Exception as exc:  # a bug in a scenario must not stop the run; count it
            record_failure(self.counters, f"error: {type(exc).__name__}", "FailedCallRejected",
                           note=exception_note(exc))
        finally:
            if slots is not None:
                slots.release()

    async def run(self) -> None:
        """Open the scenario, start attempts until ``count``/``duration``/:meth:`stop`, wait
        for the last ones (bounded), close."""
        loop = asyncio.get_running_loop()
        c = self.config
        slots = self._slots = asyncio.Semaphore(c.limit)
        self.scenario.admit = self.admit
        self.scenario.halted = self._stop.is_set
        await self.scenario.open()
        watchdog = loop.create_task(self._watchdog(loop))
        try:
            with realtime.tuned():  # the collector rarely, and not over what existed before the run
                await self._run(loop, slots)
        finally:
            watchdog.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watchdog

    async def _watchdog(self, loop: asyncio.AbstractEventLoop) -> None:
        """SIPp's watchdog: wake every :data:`WATCHDOG_INTERVAL` and count in the interval's
        counters how late this event loop let it run (:meth:`Counters.watchdog`): a late
        watchdog means late attempts, late retransmissions and response times that measure
        this process, not the server; with the loop thread's :func:`runnable_clock` in each
        window, whether the loop ever waited for input in it. Ends when cancelled."""
        clock = runnable_clock()
        last, runnable = loop.time(), clock()
        while True:
            await asyncio.sleep(WATCHDOG_INTERVAL)
            now, runnable_now = loop.time(), clock()
            self.counters.watchdog(now - last, runnable_now - runnable)
            last, runnable = now, runnable_now

    async def _run(self, loop: asyncio.AbstractEventLoop, slots: asyncio.Semaphore) -> None:
        c = self.config
        try:
            self.started = loop.time()
            end = self.started + self.duration
            if self.scenario.answers:
                await self._serve(loop, end)
                await self._drain()
                return
            next_at = self.started
            count = self.count
            while self.issued < count and not self._stop.is_set():
                now = loop.time()
                if now >= end:
                    break
                if self.paused:
                    await asyncio.sleep(min(PAUSE_POLL, end - now))
                    next_at = loop.time()
                    continue
                if next_at > now:  # a plain sleep (no task per attempt); stop() is seen within 0.25 s
                    # at least PACE_QUANTUM: at thousands per second the attempts due are started
                    # in small bursts, not one loop round (a timer, a wake-up) per attempt
                    await asyncio.sleep(max(PACE_QUANTUM, min(next_at, end, now + 0.25) - now))
                    continue
                if slots.locked():  # at the concurrency limit: wait for a slot (the schedule slips, as SIPp's -l)
                    try:
                        await asyncio.wait_for(slots.acquire(), max(0.001, end - loop.time()))
                    except TimeoutError:
                        break
                else:
                    await slots.acquire()
                if self._stop.is_set():
                    slots.release()
                    break
                self.counters.attempted += 1
                index = c.index_start + self.issued * c.index_step
                self.issued += 1
                if self.scenario.inline:  # no task: the attempt runs from the receive path
                    attempt = self.scenario.start(index, self._inline_done)
                    if not attempt.ended:
                        self._inline.add(attempt)
                else:
                    task = loop.create_task(self._attempt(self.scenario.attempt(index), slots))
                    self._tasks.add(task)
                    task.add_done_callback(self._tasks.discard)
                now = loop.time()
                next_at = max(next_at + 1.0 / self._current_rate(now), now - MAX_BURST)
            await self._drain()
        finally:
            await self.scenario.close()
            self.done = True

    async def _serve(self, loop: asyncio.AbstractEventLoop, end: float) -> None:
        """The answer scenario's run: its calls come through :meth:`admit` until the end,
        ``count`` calls or :meth:`stop`."""
        while not self._stop.is_set():
            left = end - loop.time()
            if left <= 0:
                break
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), min(left, 1.0))

    async def _drain(self) -> None:
        """Wait for the attempts in progress (bounded), then end what is left as aborted."""
        grace = self.config.timeout + self.config.attempt_hold + DRAIN_GRACE
        loop = asyncio.get_running_loop()
        end = loop.time() + grace
        if self._inline:
            self._idle = asyncio.Event()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._idle.wait(), grace)
            self._idle = None
            for attempt in list(self._inline):
                attempt.abort()
        if not self._tasks:
            return
        _, pending = await asyncio.wait(set(self._tasks), timeout=max(0.0, end - loop.time()))
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending, timeout=5.0)


class IntervalSource(Protocol):
    """Where a :class:`Monitor` takes intervals from."""

    def take(self) -> Awaitable[tuple[Counters, int]]:
        """(the interval's counters, attempts in progress now)."""
        ...

    @property
    def finished(self) -> bool: ...

    def set_rate(self, rate: float) -> None: ...

    def stop(self) -> None: ...

    def pause(self, paused: bool) -> None: ...

    def abort(self) -> None: ...


@dataclass
class Interval:
    """One period of a run as the sinks see it: ``period`` and cumulative ``total`` counters,
    ``elapsed`` seconds since the start, ``period_seconds``, the ``target_rate`` and the
    attempts ``in_progress``; ``start`` is the wall-clock start of the run (Unix seconds)."""

    period: Counters
    total: Counters
    elapsed: float
    period_seconds: float
    target_rate: float
    in_progress: int
    start: float
    now: float


Sink = Callable[[Interval], None]


@dataclass
class RateStep:
    """One step of a stepped run (SIPp ``-rate_increase``): the target ``rate`` (per
    second; a rate set by hand during the step replaces it) from ``started`` (seconds since
    the run's start) for ``seconds``, and the
    ``counters`` of the statistics intervals taken while it was the target (attempts that
    end in a later step, a timeout say, count there: SIPp's per-period counters do alike)."""

    rate: float
    started: float
    seconds: float = 0.0
    counters: Counters = field(default_factory=Counters)

    def to_api(self) -> dict[str, Any]:
        """The summary's ``rateSteps`` entry (camelCase, times in ms)."""
        c = self.counters
        return {"rate": round(self.rate, 3), "startedMs": round(self.started * 1000),
                "elapsedMs": round(self.seconds * 1000), "attempted": c.attempted, "successful": c.successful,
                "failed": c.failed, "failedByStatus": dict(sorted(c.failed_by_status.items())),
                "retransmissions": c.retransmissions,
                "attemptRate": round(c.attempted / self.seconds, 2) if self.seconds > 0 else 0.0,
                "responseTimeMs": {"p50": c.response_time.percentile(50), "p99": c.response_time.percentile(99)}}


@dataclass
class Monitor:
    """The driver: every ``interval`` seconds takes an interval from ``source``, adds it to
    :attr:`total` and calls each sink with it; stops when the source has finished (and one
    last interval is taken). ``rate`` is the target rate shown (kept in step with
    :meth:`set_rate`).

    Rate steps (``rate_increase`` > 0; SIPp ``-rate_increase``, ``-rate_interval``,
    ``-rate_max``, ``-no_rate_quit``): every ``rate_interval`` seconds the current rate (a
    rate changed by hand included) grows by ``rate_increase``; past ``rate_max`` it stays
    there and, with ``rate_quit``, the source is told to stop (:attr:`quit_at_max` is set).
    A step is taken as the statistics interval during which it falls due ends, so each
    step's counters are whole intervals (a ``rate_interval`` shorter than ``interval``
    steps once per interval). :attr:`steps` lists the steps taken (at most
    ``max_history``)."""

    source: IntervalSource
    rate: float
    interval: float = 1.0
    sinks: list[Sink] = field(default_factory=list)
    total: Counters = field(default_factory=Counters)
    started_wall: float = field(default_factory=time.time)
    history: list[Interval] = field(default_factory=list)
    max_history: int = 100_000
    rate_increase: float = 0.0
    rate_interval: float = 1.0
    rate_max: float | None = None
    rate_quit: bool = True
    steps: list[RateStep] = field(default_factory=list)
    quit_at_max: bool = False
    paused: bool = False
    stopped: str | None = None

    @classmethod
    def for_config(cls, source: IntervalSource, config: LoadConfig, interval: float,
                   sinks: list[Sink]) -> Monitor:
        """A monitor of a run of ``config`` (its rate and rate steps)."""
        return cls(source, config.rate, interval, list(sinks), rate_increase=config.rate_increase,
                   rate_interval=config.rate_interval, rate_max=config.rate_max, rate_quit=config.rate_quit)

    def set_rate(self, rate: float) -> None:
        """A new target rate (per second, > 0; else ignored) for the source; during rate
        steps it is the current step's rate from now on."""
        if rate > 0 and math.isfinite(rate):
            self.rate = rate
            self.source.set_rate(rate)
            if self.steps and not self.quit_at_max:
                self.steps[-1].rate = rate

    def pause(self, paused: bool) -> None:
        """No new attempts while ``paused`` (SIPp's ``p``); rate steps wait for the resume."""
        self.paused = paused
        self.source.pause(paused)

    def stop(self) -> None:
        """No new attempts; the running ones end as they would (SIPp's ``q``, the first
        Ctrl-C). :attr:`stopped` becomes ``"stop"``."""
        self.stopped = self.stopped or "stop"
        self.source.stop()

    def abort(self) -> None:
        """No new attempts, and the running ones are cancelled (:meth:`LoadRunner.abort`;
        the second Ctrl-C). :attr:`stopped` becomes ``"abort"``."""
        self.stopped = "abort"
        self.source.abort()

    def _step(self, elapsed: float) -> bool:
        """Close the current step at ``elapsed`` seconds and take the next one; False when
        there is no next one (the rate passed ``rate_max`` and the run stops)."""
        rate = self.rate + self.rate_increase
        if self.rate_max is not None and rate > self.rate_max * (1 + 1e-9):
            if self.rate_quit:
                self._close_step(elapsed)
                self.quit_at_max = True
                self.source.stop()
                return False
            rate = self.rate_max
            if rate == self.rate:
                return True  # it stays at rate_max: the same step goes on
        self._close_step(elapsed)
        if len(self.steps) < self.max_history:
            self.steps.append(RateStep(rate, elapsed))
        self.set_rate(rate)
        return True

    def _close_step(self, elapsed: float) -> None:
        if self.steps:
            self.steps[-1].seconds = elapsed - self.steps[-1].started

    async def tick(self, elapsed: float, period_seconds: float) -> Interval:
        period, in_progress = await self.source.take()
        self.total.merge(period)
        item = Interval(period, self.total, elapsed, period_seconds, self.rate, in_progress, self.started_wall,
                        time.time())
        if len(self.history) < self.max_history:
            self.history.append(item)
        if self.steps:  # after the last step (rate_max passed), what ends still counts there
            self.steps[-1].counters.merge(period)
        for sink in self.sinks:
            sink(item)
        return item

    async def run(self, deadline: float) -> None:
        """Tick until the source has finished or ``deadline`` (loop time) passes."""
        loop = asyncio.get_running_loop()
        t0 = last = loop.time()
        stepping = self.rate_increase > 0
        next_step = t0 + self.rate_interval if stepping else math.inf
        if stepping:
            self.steps.append(RateStep(self.rate, 0.0))
        while True:
            next_tick = last + self.interval
            while loop.time() < next_tick and not self.source.finished and loop.time() < deadline:
                await asyncio.sleep(min(0.05, max(0.0, next_tick - loop.time())))
            now = loop.time()
            finished = self.source.finished
            await self.tick(now - t0, now - last)  # the interval's target rate is the one it ran at
            last = now
            if finished or now >= deadline:
                if not self.quit_at_max:
                    self._close_step(now - t0)
                return
            # steps are taken as a statistics interval ends, so each step's counters are
            # whole intervals; a step falls due at most once per interval (no burst)
            if self.paused:  # the step falls due at the first interval's end after the resume
                next_step = max(next_step, now)
            elif now >= next_step - TICK_SLACK:
                next_step = math.inf if not self._step(now - t0) else max(next_step + self.rate_interval,
                                                                           now + TICK_SLACK)


class LocalSource:
    """A :class:`LoadRunner` in this loop as an :class:`IntervalSource`."""

    def __init__(self, runner: LoadRunner) -> None:
        self.runner = runner

    async def take(self) -> tuple[Counters, int]:
        return self.runner.take_interval(), self.runner.in_progress()

    @property
    def finished(self) -> bool:
        return self.runner.done

    def set_rate(self, rate: float) -> None:
        self.runner.set_rate(rate)

    def stop(self) -> None:
        self.runner.stop()

    def pause(self, paused: bool) -> None:
        self.runner.pause(paused)

    def abort(self) -> None:
        self.runner.abort()


def raise_open_files_limit() -> int:
    """Raise this process's soft limit of open files (``RLIMIT_NOFILE``) to its hard limit, as
    SIPp does at start: a load holds a socket per user or connection and two per call's
    media. Returns the soft limit now (unchanged where the platform has no ``resource``)."""
    try:
        import resource
    except ImportError:  # not POSIX
        return -1
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            return hard
    return soft


def run_deadline(config: LoadConfig, started: float) -> float:
    """The loop time by which a run must be over, whatever happens (the monitor's bound)."""
    duration = config.duration
    if duration is None and config.scenario == "answer":  # and its users' first registrations
        duration = ANSWER_DURATION + max(1, len(config.users)) / config.rate / max(1, config.index_step)
    if duration is None:
        if config.count is not None:
            duration = config.count / config.rate
        else:
            duration = config.stepped_duration() or DEFAULT_DURATION
        duration = duration * 3 + 30.0  # a count at a slipping rate: generous but finite
    return started + duration + config.ramp_up + config.timeout + config.attempt_hold + DRAIN_GRACE + 30.0


async def run_local(config: LoadConfig, sinks: list[Sink], *, interval: float = 1.0,
                    on_monitor: Callable[[Monitor], None] | None = None) -> Monitor:
    """Run ``config`` in this event loop with a :class:`Monitor` feeding ``sinks``; returns
    the monitor (its ``total`` and ``history``). ``on_monitor`` is called with the monitor
    once it exists (to change the rate while running). Raises what the scenario's ``open``
    raises."""
    runner = LoadRunner(config)
    monitor = Monitor.for_config(LocalSource(runner), config, interval, sinks)
    if on_monitor is not None:
        on_monitor(monitor)
    loop = asyncio.get_running_loop()
    task = loop.create_task(runner.run())
    watcher = loop.create_task(monitor.run(run_deadline(config, loop.time())))
    try:
        await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_EXCEPTION)
        if task.done() and task.exception() is not None:
            watcher.cancel()
            raise task.exception()  # type: ignore[misc]
        await watcher
    finally:
        for t in (task, watcher):
            if not t.done():
                t.cancel()
                with contextlib.suppress(BaseException):
                    await t
    return monitor


def summary(monitor: Monitor, config: LoadConfig, *, workers: int = 1) -> dict[str, Any]:
    """The final JSON summary (camelCase; times in ms; ``rate`` is successful+failed
    attempts per second over the run, ``targetRate`` what was asked)::

        {"scenario", "target", "transport", "attempted", "successful", "failed",
         "failedByStatus": {"401": n, "timeout": n, …}, "failedByKind": {SIPp name: n},
         "retransmissions", "requestsSent", "rate", "targetRate", "elapsedMs", "workers",
         "responseTimeMs": {"p50", "p90", "p95", "p99", "max", "mean", "stdev"},
         "callLengthMs": {"mean", "p50", "max"},
         "media": {"mos", "mosMin", "loss", "jitterMs", "rtpExpected", "rtpLost"} | None,
         "rateSteps": [RateStep.to_api(), …] (empty without rate steps),
         "stoppedAtRateMax": the steps passed ``rate_max`` and ended the run,
         "stopped": None | "stop" (asked to start no more: ``q``, Ctrl-C) | "abort" (the
             running attempts were cancelled too: a second Ctrl-C),
         "warnings": [one line, …] (:attr:`Counters.warnings`; the CLI adds its files'),
         "malformedReceived": messages received and dropped as malformed (RFC 3261 §18.1.2),
         "lastMalformed": what the last one was (``unparseable (reason)``) | None,
         "watchdog": {"minor", "major", "maxLagMs", "windows", "busyWindows"}: SIPp's
             watchdog trips of our own event loop (:meth:`Counters.watchdog`; summed over
             workers, the longest lag), its 0.4 s windows and those in which the loop's
             thread was runnable all along (:data:`~skinnysip.load.stats.BUSY_SHARE`: it
             never waited for input),
         "outOfCallMsgs", "deadCallMsgs": SIPp's counters of messages for no running attempt
             (:class:`Counters`: never ours / an attempt that ended in the last 33 s),
         "autoAnswered": out-of-dialog OPTIONS answered 200 by our endpoint itself}

    and for the ``call`` scenario ``"alertingTimeMs": {"p50", "p90", "p99", "max", "count"}``
    (post-dial delay: INVITE → the first 18x with a To tag, of the calls alerted); for the
    ``answer`` scenario ``"registered"`` (users registered), ``"notRegistered"``
    (users that could not) and ``"registrationFailures"`` (``user: reason``, the first 20);
    for the ``register`` scenario ``"refreshes"`` (refreshes answered 2xx) and
    ``"refreshChallenges"`` (refreshes whose cached credentials drew a new challenge).
    """
    total = monitor.total
    elapsed = monitor.history[-1].elapsed if monitor.history else 0.0
    rt = total.response_time
    media = None
    if config.scenario in ("call", "answer"):
        media = {"mos": total.mos, "mosMin": total.mos_min, "loss": total.loss, "jitterMs": total.jitter_ms,
                 "rtpExpected": total.rtp_expected, "rtpLost": total.rtp_lost}
    result: dict[str, Any] = {
        "scenario": config.scenario,
        "target": hostport(config.host, config.server_port),
        "transport": config.transport,
        "attempted": total.attempted,
        "successful": total.successful,
        "failed": total.failed,
        "failedByStatus": dict(sorted(total.failed_by_status.items())),
        "failedByKind": dict(sorted(total.failed_by_kind.items())),
        "retransmissions": total.retransmissions,
        "requestsSent": total.requests_sent,
        "rate": round(total.finished / elapsed, 2) if elapsed > 0 else 0.0,
        "targetRate": monitor.rate,
        "elapsedMs": round(elapsed * 1000),
        "workers": workers,
        "responseTimeMs": {"p50": rt.percentile(50), "p90": rt.percentile(90), "p95": rt.percentile(95),
                           "p99": rt.percentile(99), "max": round(rt.max_ms, 3) if rt.count else None,
                           "mean": round(rt.mean_ms, 3) if rt.mean_ms is not None else None,
                           "stdev": round(rt.stdev_ms, 3) if rt.stdev_ms is not None else None},
        "callLengthMs": {"mean": round(total.call_length.mean_ms, 1) if total.call_length.mean_ms else None,
                         "p50": total.call_length.percentile(50),
                         "max": round(total.call_length.max_ms, 1) if total.call_length.count else None},
        "media": media,
        "rateSteps": [step.to_api() for step in monitor.steps],
        "stoppedAtRateMax": monitor.quit_at_max,
        "stopped": monitor.stopped,
        "warnings": list(total.warnings),
        "malformedReceived": total.malformed,
        "lastMalformed": total.last_malformed,
        "watchdog": {"minor": total.watchdog_minor, "major": total.watchdog_major,
                     "maxLagMs": round(total.loop_lag_max * 1000, 1), "windows": total.loop_windows,
                     "busyWindows": total.busy_windows},
        "outOfCallMsgs": total.out_of_call_msgs,
        "deadCallMsgs": total.dead_call_msgs,
        "autoAnswered": total.auto_answered,
    }
    if config.scenario == "call":  # post-dial delay (INVITE → first 18x) of the calls alerted
        pdd = total.alerting_time
        result["alertingTimeMs"] = {"p50": pdd.percentile(50), "p90": pdd.percentile(90), "p99": pdd.percentile(99),
                                    "max": round(pdd.max_ms, 3) if pdd.count else None, "count": pdd.count}
    if config.scenario == "answer":
        result.update(registered=total.registered, notRegistered=total.not_registered_count,
                      registrationFailures=list(total.registration_failures))
    if config.scenario == "register":
        result.update(refreshes=total.refreshes, refreshChallenges=total.refresh_challenges)
    return result
