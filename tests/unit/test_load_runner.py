"""The load runner's own rules with a scenario that only sleeps (no network: what is tested
is the runner's pacing, limit, count, stop and drain, not a protocol); and its task-free
attempts (``Scenario.inline``) against a silent UDP socket on 127.0.0.1."""

from __future__ import annotations

import asyncio
import gc

import pytest

from peertools import silent_udp
from skinnysip.load.runner import LoadRunner, LocalSource, Monitor, summary
from skinnysip.load.scenarios import LoadConfig, Scenario, User
from skinnysip.load.stats import Counters
from skinnysip.net.realtime import GC_GEN0_THRESHOLD


class Sleeper(Scenario):
    """Each attempt sleeps ``seconds`` and succeeds; records the attempts in progress."""

    def __init__(self, config: LoadConfig, counters, seconds: float) -> None:  # type: ignore[no-untyped-def]
        super().__init__(config, counters)
        self.seconds = seconds
        self.running = 0
        self.most = 0
        self.indexes: list[int] = []
        self.opened = self.closed = False

    async def open(self) -> None:
        self.opened = True

    async def close(self) -> None:
        self.closed = True

    def retransmissions(self) -> int:
        return 7

    async def attempt(self, index: int) -> None:
        self.indexes.append(index)
        self.running += 1
        self.most = max(self.most, self.running)
        try:
            await asyncio.sleep(self.seconds)
            self.counters().success(self.seconds, self.seconds)
        finally:
            self.running -= 1


def runner_with(config: LoadConfig, seconds: float) -> tuple[LoadRunner, Sleeper]:
    runner = LoadRunner(config)
    sleeper = Sleeper(config, lambda: runner.counters, seconds)
    runner.scenario = sleeper
    return runner, sleeper


async def test_count_limit_and_indexes() -> None:
    config = LoadConfig("options", "127.0.0.1", rate=1000, limit=3, count=12, index_start=2, index_step=5)
    runner, sleeper = runner_with(config, 0.05)
    await runner.run()
    total = runner.take_interval()
    assert (total.attempted, total.successful, total.finished) == (12, 12, 12)
    assert sleeper.most == 3  # never more than -l at once
    assert sleeper.indexes == [2 + 5 * k for k in range(12)]
    assert total.retransmissions == 7 and runner.take_interval().retransmissions == 0  # deltas
    assert sleeper.opened and sleeper.closed and runner.done


async def test_collector_tuned_during_runs_and_restored_after() -> None:
    """During a run the youngest generation is collected less often and what existed before
    is frozen; two overlapping runs restore the thresholds when the last one ends."""
    before, frozen = gc.get_threshold(), gc.get_freeze_count()
    seen: list[tuple[int, ...]] = []

    class Watcher(Sleeper):
        async def attempt(self, index: int) -> None:
            seen.append(gc.get_threshold())
            await super().attempt(index)

    runs = []
    for seconds in (0.05, 0.2):
        runner = LoadRunner(LoadConfig("options", "127.0.0.1", rate=100, count=2))
        runner.scenario = Watcher(runner.config, lambda r=runner: r.counters, seconds)
        runs.append(runner.run())
    await asyncio.gather(*runs)
    assert seen and all(t[0] == max(before[0], GC_GEN0_THRESHOLD) and t[1:] == before[1:] for t in seen)
    assert gc.get_threshold() == before and gc.get_freeze_count() == frozen


async def test_rate_and_duration_bound_the_run() -> None:
    runner, _ = runner_with(LoadConfig("options", "127.0.0.1", rate=40, duration=1.0), 0.0)
    loop = asyncio.get_running_loop()
    started = loop.time()
    await runner.run()
    assert loop.time() - started < 3.0
    attempted = runner.take_interval().attempted
    assert 30 <= attempted <= 42  # 40/s for 1 s (the first at t=0)


async def test_set_rate_and_stop_while_running() -> None:
    runner, _ = runner_with(LoadConfig("options", "127.0.0.1", rate=5, duration=30.0), 0.0)
    task = asyncio.get_running_loop().create_task(runner.run())
    await asyncio.sleep(0.5)
    runner.set_rate(200)
    runner.set_rate(-1)  # ignored
    await asyncio.sleep(0.5)
    runner.stop()
    await asyncio.wait_for(task, 2.0)
    assert runner.rate == 200
    assert 60 <= runner.take_interval().attempted <= 110


async def test_stuck_attempts_are_cancelled_after_the_grace_and_counted(monkeypatch: pytest.MonkeyPatch) -> None:
    import skinnysip.load.runner as runner_module

    monkeypatch.setattr(runner_module, "DRAIN_GRACE", 0.2)
    config = LoadConfig("options", "127.0.0.1", rate=100, count=4, timeout=0.1, hold=0.0)
    runner, _ = runner_with(config, 60.0)
    await asyncio.wait_for(runner.run(), 5.0)
    total = runner.take_interval()
    assert (total.attempted, total.failed) == (4, 4)
    assert total.failed_by_status == {"aborted": 4}


async def test_monitor_sums_intervals_into_the_total() -> None:
    runner, _ = runner_with(LoadConfig("options", "127.0.0.1", rate=200, count=60), 0.01)
    seen: list[int] = []
    monitor = Monitor(LocalSource(runner), 200, 0.1, [lambda item: seen.append(item.period.attempted)])
    await asyncio.gather(runner.run(), monitor.run(asyncio.get_running_loop().time() + 10))
    assert sum(seen) == monitor.total.attempted == 60 and len(seen) >= 2
    assert isinstance(monitor.total, Counters) and monitor.total.successful == 60


async def test_summary_names_an_ipv6_target_in_brackets() -> None:
    config = LoadConfig("options", "::1", port=5070, rate=200, count=4)
    runner, _ = runner_with(config, 0.0)
    monitor = Monitor(LocalSource(runner), 200, 0.1, [])
    await asyncio.gather(runner.run(), monitor.run(asyncio.get_running_loop().time() + 10))
    result = summary(monitor, config)
    assert result["target"] == "[::1]:5070" and result["successful"] == 4
    assert summary(monitor, LoadConfig("options", "192.0.2.1", transport="tls", count=1))["target"] == "192.0.2.1:5061"


async def run_monitored(config: LoadConfig, interval: float) -> tuple[LoadRunner, Monitor, float]:
    """``config`` with a sleeping scenario under the monitor a run gets; (runner, monitor,
    seconds the run took)."""
    runner, _ = runner_with(config, 0.01)
    monitor = Monitor.for_config(LocalSource(runner), config, interval, [])
    loop = asyncio.get_running_loop()
    started = loop.time()
    await asyncio.wait_for(asyncio.gather(runner.run(), monitor.run(started + 20)), 20)
    return runner, monitor, loop.time() - started


async def test_rate_steps_up_to_rate_max_then_no_new_attempts() -> None:
    """SIPp -rate_increase 50 -rate_max 150 from -r 50: 50, 100, 150 for an interval each,
    then the step that would pass 150 stops new attempts."""
    config = LoadConfig("options", "127.0.0.1", rate=50, rate_increase=50, rate_max=150, rate_interval=0.4,
                        limit=1000)
    assert config.stepped_duration() == pytest.approx(1.2)
    runner, monitor, seconds = await run_monitored(config, 0.4)
    assert [s.rate for s in monitor.steps] == [50, 100, 150]
    assert monitor.quit_at_max and runner.rate == 150
    assert seconds < 1.2 + 0.4 + 0.5  # not the runner's own bound, nor DEFAULT_DURATION
    for step in monitor.steps:  # each ran for its interval at its rate
        assert step.seconds == pytest.approx(0.4, abs=0.15)
        assert step.counters.attempted == pytest.approx(step.rate * step.seconds, rel=0.4, abs=4)
    assert sum(s.counters.attempted for s in monitor.steps) == monitor.total.attempted
    assert sum(s.counters.successful for s in monitor.steps) == monitor.total.successful == monitor.total.attempted
    result = summary(monitor, config)
    assert result["stoppedAtRateMax"] and [s["rate"] for s in result["rateSteps"]] == [50, 100, 150]
    assert [item.target_rate for item in monitor.history[:3]] == [50, 100, 150]  # one interval a step


async def test_rate_steps_stay_at_rate_max_without_quit_and_follow_a_rate_set_by_hand() -> None:
    config = LoadConfig("options", "127.0.0.1", rate=40, rate_increase=100, rate_max=150, rate_interval=0.3,
                        rate_quit=False, duration=1.5, limit=1000)
    runner, _ = runner_with(config, 0.01)
    monitor = Monitor.for_config(LocalSource(runner), config, 0.3, [])
    loop = asyncio.get_running_loop()

    async def by_hand() -> None:
        await asyncio.sleep(0.15)
        monitor.set_rate(20)  # during the first step: the next one is 20 + 100

    await asyncio.wait_for(asyncio.gather(runner.run(), monitor.run(loop.time() + 20), by_hand()), 20)
    assert [s.rate for s in monitor.steps] == [20, 120, 150]  # then it stays at 150: the same step
    assert not monitor.quit_at_max and not summary(monitor, config)["stoppedAtRateMax"]
    assert monitor.steps[-1].seconds == pytest.approx(0.9, abs=0.3)  # 150/s until the duration ended


async def test_a_run_without_steps_has_none() -> None:
    runner, monitor, _ = await run_monitored(LoadConfig("options", "127.0.0.1", rate=100, count=10), 0.1)
    assert monitor.steps == [] and summary(monitor, runner.config)["rateSteps"] == []


async def test_pause_starts_nothing_and_resume_goes_on_without_a_burst() -> None:
    """SIPp's ``p``: paused, no attempt starts (the running ones end); resumed, the rate goes
    on from then — the time paused is not made up with a burst."""
    config = LoadConfig("options", "127.0.0.1", rate=50, limit=100, duration=1.6)
    runner, sleeper = runner_with(config, 0.01)
    task = asyncio.get_running_loop().create_task(runner.run())
    await asyncio.sleep(0.4)
    monitor = Monitor(LocalSource(runner), 50)
    monitor.pause(True)
    assert monitor.paused and runner.paused
    before = runner.issued
    await asyncio.sleep(0.6)
    during = runner.issued - before
    monitor.pause(False)
    await asyncio.sleep(0.3)
    after = runner.issued - before - during
    await task
    assert during <= 1  # at most the one whose start was already due
    assert 8 <= after <= 20  # ~15 in 0.3 s at 50/s, not the 30 the pause skipped on top
    assert 45 <= runner.issued <= 60  # ~1 s of the 1.6 s ran


async def test_abort_cancels_the_running_attempts_and_counts_them_aborted() -> None:
    """The second Ctrl-C: nothing new starts and what runs is cancelled now (each attempt's
    own clean-up still runs), counted failed as ``aborted``; the run closes as usual."""
    config = LoadConfig("options", "127.0.0.1", rate=100, limit=5, count=50)
    runner, sleeper = runner_with(config, 60.0)
    task = asyncio.get_running_loop().create_task(runner.run())
    await asyncio.sleep(0.3)
    monitor = Monitor(LocalSource(runner), 100)
    assert runner.in_progress() == 5 and monitor.stopped is None
    monitor.abort()
    await asyncio.wait_for(task, 2.0)  # not the 60 s the attempts sleep, nor the drain's grace
    total = runner.take_interval()
    assert (total.attempted, total.successful, total.failed) == (5, 0, 5)
    assert total.failed_by_status == {"aborted": 5}
    assert sleeper.running == 0 and sleeper.closed and runner.done
    assert monitor.stopped == "abort" and summary(monitor, config)["stopped"] == "abort"


async def test_stop_is_told_in_the_summary() -> None:
    config = LoadConfig("options", "127.0.0.1", rate=100, limit=5, count=50)
    runner, _ = runner_with(config, 0.2)
    task = asyncio.get_running_loop().create_task(runner.run())
    await asyncio.sleep(0.1)
    monitor = Monitor(LocalSource(runner), 100)
    monitor.stop()
    await asyncio.wait_for(task, 2.0)
    total = runner.take_interval()
    assert total.attempted == total.successful < 50  # the running ones ended as they would
    assert summary(monitor, config)["stopped"] == "stop"


class FarEnd(Scenario):
    """The answer scenario's shape without a network: open() starts a far end that brings
    calls (each lasting ``seconds``) through :attr:`admit`, in ``bursts`` separated by
    ``gap`` seconds, and records what each got back."""

    answers = True

    def __init__(self, config: LoadConfig, counters, bursts: list[int], seconds: float,  # type: ignore[no-untyped-def]
                 gap: float) -> None:
        super().__init__(config, counters)
        self.bursts, self.seconds, self.gap = bursts, seconds, gap
        self.answers_got: list[int | None] = []
        self.far_end: asyncio.Task[None] | None = None

    async def open(self) -> None:
        self.far_end = asyncio.get_running_loop().create_task(self._bring())

    async def _bring(self) -> None:
        for burst in self.bursts:
            for _ in range(burst):
                self.answers_got.append(self.admit(self._call()))
            await asyncio.sleep(self.gap)

    async def _call(self) -> None:
        await asyncio.sleep(self.seconds)
        self.counters().success(0.001, self.seconds)

    async def close(self) -> None:
        if self.far_end is not None:
            self.far_end.cancel()

    def retransmissions(self) -> int:
        return 0

    async def attempt(self, index: int) -> None:
        raise AssertionError("the runner starts no attempts of an answering scenario")


async def test_an_answering_scenario_admits_calls_up_to_the_limit_and_the_count() -> None:
    """Calls the far end brings: at most ``limit`` at once (one more is refused 486 and counted
    failed, ``limit``), ``count`` in all (the run then ends; later ones are refused 480 and not
    counted), and none while paused (480)."""
    config = LoadConfig("answer", "127.0.0.1", limit=2, count=5, hold=None, duration=30)
    config.validate()
    runner = LoadRunner(config)
    far = FarEnd(config, lambda: runner.counters, bursts=[3, 4], seconds=0.2, gap=0.4)
    runner.scenario = far
    loop = asyncio.get_running_loop()
    started = loop.time()
    await asyncio.wait_for(runner.run(), 10)
    assert loop.time() - started < 2  # the count ended it, not the 30 s
    assert far.answers_got == [None, None, 486, None, None, 480, 480]
    total = runner.take_interval()
    assert (total.attempted, total.successful, total.failed) == (5, 4, 1)
    assert total.failed_by_status == {"limit": 1}
    # paused: refused 480, not counted
    config = LoadConfig("answer", "127.0.0.1", hold=None, duration=0.5)
    runner = LoadRunner(config)
    far = FarEnd(config, lambda: runner.counters, bursts=[2], seconds=0.01, gap=0.01)
    runner.scenario = far
    runner.pause(True)
    await asyncio.wait_for(runner.run(), 10)
    assert far.answers_got == [480, 480] and runner.take_interval().attempted == 0


def test_the_answer_scenario_refuses_what_the_callers_decide() -> None:
    for changes, message in (({"to": "bob"}, "takes no --to"), ({"ramp_up": 1.0}, "takes no --ramp-up"),
                             ({"headers": [("X-A", "b")]}, "takes no --header"),
                             ({"user_order": "RANDOM"}, "takes no RANDOM"),
                             ({"rate_increase": 1.0}, "takes no --rate-increase")):
        with pytest.raises(ValueError, match=message):
            LoadConfig("answer", "127.0.0.1", **changes).validate()  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="ring: seconds >= 0"):
        LoadConfig("call", "127.0.0.1", to="bob", ring=1.0).validate()
    with pytest.raises(ValueError, match="hold: calls need a hold time"):
        LoadConfig("call", "127.0.0.1", to="bob", hold=None).validate()
    LoadConfig("answer", "127.0.0.1", hold=None).validate()
    # --no-register: one phone on HOST:PORT for every caller
    for changes, message in (({"users": [User("bob", "pw")]}, "takes no --users"),
                             ({"transport": "tls"}, "takes no tls"), ({"index_step": 2}, "takes no --processes")):
        with pytest.raises(ValueError, match=message):
            LoadConfig("answer", "127.0.0.1", register=False, **changes).validate()  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="register: only the answer scenario"):
        LoadConfig("options", "127.0.0.1", register=False).validate()
    from skinnysip.load.distributed import worker_configs

    with pytest.raises(ValueError, match="listens on one port: one process"):
        worker_configs(LoadConfig("answer", "127.0.0.1", register=False), 2)
    with pytest.raises(ValueError, match="needs -m 3 or more"):
        worker_configs(LoadConfig("answer", "127.0.0.1", count=2), 3)


def test_registration_counts_and_post_dial_delays_merge_across_workers() -> None:
    one, two = Counters(registered=2), Counters(registered=1)
    two.not_registered("carol: 403 Forbidden")
    two.alerting_time.add(0.025)
    total = Counters().merge(one).merge(Counters.from_dict(two.to_dict()))
    assert (total.registered, total.not_registered_count, total.registration_failures) == (
        3, 1, ["carol: 403 Forbidden"])
    assert total.alerting_time.count == 1 and 20 <= (total.alerting_time.percentile(50) or 0) <= 30


def test_the_open_files_limit_is_raised_to_the_hard_limit() -> None:
    """As SIPp does at start: a load holds sockets per user, connection and call."""
    import resource
    import subprocess
    import sys

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard <= 64:
        pytest.skip(f"hard limit {hard}: nothing to raise to")

    def lower() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (64, hard))

    out = subprocess.run([sys.executable, "-c", "import resource\nfrom skinnysip.load.runner import "
                          "raise_open_files_limit as r\nprint(r(), resource.getrlimit(resource.RLIMIT_NOFILE)[0])"],
                         capture_output=True, text=True, timeout=30, preexec_fn=lower)
    assert out.stdout.split() == [str(hard), str(hard)], out.stderr


async def test_the_watchdog_counts_a_stalled_loop() -> None:
    """An attempt that blocks the event loop for 0.8 s trips SIPp's watchdog once (a minor
    trip: its runs 0.8–1.2 s apart instead of 0.4 s); the lag is what the loop lost."""
    import time

    class Staller(Sleeper):
        async def attempt(self, index: int) -> None:
            if index == 0:
                time.sleep(0.8)
            await super().attempt(index)

    config = LoadConfig("options", "127.0.0.1", rate=10, count=3)
    runner = LoadRunner(config)
    runner.scenario = Staller(config, lambda: runner.counters, 0.05)
    await runner.run()
    total = runner.take_interval()
    assert total.watchdog_minor >= 1 and total.watchdog_major == 0
    assert 0.35 <= total.loop_lag_max < 1.5


async def test_the_watchdog_counts_the_windows_a_busy_loop_never_waited() -> None:
    """Attempts that keep the loop's thread on the CPU (5 ms slices, so the loop is never
    late) make busy watchdog windows; attempts that sleep make none. A blocked-but-idle
    loop (the stall above) is late, not busy: it was not runnable while it slept."""
    import time

    class Spinner(Sleeper):
        async def attempt(self, index: int) -> None:
            end = time.thread_time() + 0.5
            while time.thread_time() < end:
                slice_end = time.perf_counter() + 0.005
                while time.perf_counter() < slice_end:
                    pass
                await asyncio.sleep(0)
            self.counters().success(0.5, 0.5)

    config = LoadConfig("options", "127.0.0.1", rate=10, count=6)
    runner = LoadRunner(config)
    runner.scenario = Spinner(config, lambda: runner.counters, 0.0)
    await runner.run()
    busy = runner.take_interval()
    # ~3 s of the thread's CPU: runnable all along, also while other processes take the cores
    assert busy.loop_windows >= 2 and busy.busy_windows >= 2, (busy.loop_windows, busy.busy_windows)
    assert busy.watchdog_minor == busy.watchdog_major == 0

    runner, _ = runner_with(LoadConfig("options", "127.0.0.1", rate=10, count=10), 0.6)
    await runner.run()  # ~1.5 s: three windows or more
    idle = runner.take_interval()
    assert idle.loop_windows >= 2 and idle.busy_windows == 0, (idle.loop_windows, idle.busy_windows)


def test_the_runnable_clock_falls_back_to_the_threads_cpu_time(monkeypatch: pytest.MonkeyPatch) -> None:
    import time

    from skinnysip.load import runner as runner_module

    clock = runner_module.runnable_clock()
    first = clock()
    end = time.perf_counter() + 0.05
    while time.perf_counter() < end:
        pass
    assert clock() - first >= 0.04  # on a CPU (or waiting for one) all along

    def unreadable() -> float:
        raise OSError("no /proc here")

    monkeypatch.setattr(runner_module, "_schedstat_runnable", unreadable)
    assert runner_module.runnable_clock() is time.thread_time


def test_busy_windows_add_up_over_workers_and_a_quarter_of_them_makes_the_note() -> None:
    from skinnysip.cli.load import busy_note

    worker = Counters()
    worker.watchdog(0.4, 0.39)  # busy (>= 95 % of the window)
    worker.watchdog(0.4, 0.30)  # not busy
    total = Counters().merge(worker).merge(Counters.from_dict(worker.to_dict()))
    assert (total.loop_windows, total.busy_windows) == (4, 2)
    assert busy_note({"windows": 8, "busyWindows": 2}) is not None  # a quarter
    assert busy_note({"windows": 9, "busyWindows": 2}) is None
    assert busy_note({"windows": 1, "busyWindows": 1}) is None  # one window is no pattern
    assert busy_note({}) is None  # a summary from before these fields
    assert "never waited in 2 of its 8" in (busy_note({"windows": 8, "busyWindows": 2}) or "")


def test_the_rate_keys_stop_reading_a_terminal_that_is_gone(monkeypatch: pytest.MonkeyPatch) -> None:
    """``load``'s rate keys read stdin when it is readable. At an end of file (the terminal
    hung up) the reader is removed: one left there would be called on every loop round, for
    ever, a core at 100 %. A key before the end still changes the rate."""
    import os
    import sys

    from skinnysip.cli.load import _Keys

    class _View:
        note = ""

    class _Monitor:
        rate = 10.0
        paused = False

        def set_rate(self, rate: float) -> None:
            self.rate = rate

    read_end, write_end = os.pipe()

    class _Stdin:
        def fileno(self) -> int:
            return read_end

    monkeypatch.setattr(sys, "stdin", _Stdin())
    monitor = _Monitor()
    keys = _Keys({"monitor": monitor}, _View())
    calls = 0

    def key() -> None:
        nonlocal calls
        calls += 1
        keys._key()

    async def main() -> None:
        loop = asyncio.get_running_loop()
        loop.add_reader(read_end, key)
        os.write(write_end, b"*")
        os.close(write_end)
        await asyncio.sleep(0.2)
        assert not loop.remove_reader(read_end)  # already removed by _key at the end of file

    try:
        asyncio.run(main())
    finally:
        os.close(read_end)
    assert monitor.rate == 20.0 and calls == 2


async def test_inline_attempts_are_aborted_and_counted_like_tasks() -> None:
    """OPTIONS over UDP to a silent server: the attempts run with no task (the scenario's
    ``inline`` path), the limit holds them at 5, and an abort ends them now, each counted
    failed as ``aborted`` — as the task path does."""
    with silent_udp() as silent:
        config = LoadConfig("options", "127.0.0.1", port=silent.getsockname()[1], rate=100, limit=5, count=50, timeout=30.0)
        runner = LoadRunner(config)
        task = asyncio.get_running_loop().create_task(runner.run())
        await asyncio.sleep(0.4)
        assert runner.scenario.inline and not runner._tasks and runner.in_progress() == 5
        runner.abort()
        await asyncio.wait_for(task, 3.0)
    total = runner.take_interval()
    assert (total.attempted, total.successful, total.failed) == (5, 0, 5)
    assert total.failed_by_status == {"aborted": 5} and runner.in_progress() == 0 and runner.done


async def test_inline_attempts_left_after_the_drain_grace_are_aborted(monkeypatch: pytest.MonkeyPatch) -> None:
    import skinnysip.load.runner as runner_module

    monkeypatch.setattr(runner_module, "DRAIN_GRACE", -1.7)  # grace: timeout 2 s - 1.7 s = 0.3 s
    with silent_udp() as silent:
        config = LoadConfig("options", "127.0.0.1", port=silent.getsockname()[1], rate=100, count=3, timeout=2.0, hold=0.0)
        runner = LoadRunner(config)
        started = asyncio.get_running_loop().time()
        await asyncio.wait_for(runner.run(), 5.0)
        assert asyncio.get_running_loop().time() - started < 1.5  # not the attempts' own 2 s deadline
    total = runner.take_interval()
    assert (total.attempted, total.failed) == (3, 3) and total.failed_by_status == {"aborted": 3}
