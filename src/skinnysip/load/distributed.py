"""The same load run fanned out over worker processes, and over machines with Ray.

Each worker (:class:`_Worker`) runs a
:class:`~skinnysip.load.runner.LoadRunner` in its own event loop with its share of the run:
``rate / N``, ``count`` split so the shares add up exactly, ``limit`` split (rounded up), the
local port range cut into N slices, and attempt indexes ``i, i + N, i + 2N…`` so users from
a file are used exactly as one process would use them (the ``answer`` scenario: worker ``i``
registers users ``i, i + N…`` and counts the calls to them; ``record_dir`` gets a folder per
worker, ``record_dir/i``). The driver's
:class:`~skinnysip.load.runner.Monitor` takes every worker's interval once per period
(:class:`DistributedSource`), adds them up and feeds the same live view and CSV as a local
run; a rate change is split over the workers the same way, rate steps (``rate_increase``)
included: the driver takes them, and each share ends when the steps would have.

Two engines run the workers (:func:`run_distributed`'s ``engine``):

- ``processes`` (one machine, ``--processes N``, the default): N processes of this machine's
  Python started with :mod:`multiprocessing` (``spawn``), each a worker with its own event
  loop, asked for its interval over a pipe. Nothing to install, and no engine processes
  beside the workers competing for the cores.
- ``ray`` (``--engine ray``; any ``--ray-address``): each worker a Ray *async actor*. Ray is
  an optional extra: ``pip install 'skinnysip[distributed]'``. Without an address a local
  Ray instance with N CPUs is started (``ray.init``); on a cluster ``--ray-address auto``
  (or ``ray://head:10001``) joins it — see docs/load.md.

Python units: seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import math
import multiprocessing
import os
import signal
from multiprocessing.connection import Connection
from typing import Any, Literal

from skinnysip.net import event_loop as event_loops

from .runner import Monitor, Sink, run_deadline
from .scenarios import LoadConfig, User
from .stats import Counters

__all__ = ["ENGINES", "DistributedSource", "ProcessSource", "RayUnavailable", "WorkersFailed", "run_distributed",
           "worker_configs"]

Engine = Literal["processes", "ray"]
ENGINES: tuple[Engine, ...] = ("processes", "ray")
#: seconds a worker process may take to answer the driver (its interval, its totals); one that
#: does not answer in time is counted as finished with an error
WORKER_ANSWER_TIMEOUT = 30.0
#: seconds a spawned worker process may take to import skinnysip and make its worker
WORKER_START_TIMEOUT = 60.0


class RayUnavailable(RuntimeError):
    """Ray is not installed (or cannot start); the message says what to do, in one line."""


class WorkersFailed(Exception):
    """No worker could start its scenario (the server cannot be reached from them);
    ``reason`` is the first worker's error, one line."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def worker_configs(config: LoadConfig, workers: int) -> list[LoadConfig]:
    """``config`` cut into ``workers`` shares (see the module doc). ``ValueError`` when
    ``workers`` < 1 or a port range is too small to give each worker a port."""
    if workers < 1:
        raise ValueError("processes: at least 1")
    if config.scenario == "answer" and not config.register and workers > 1:
        raise ValueError("register: the answer scenario without registration listens on one port: one process "
                         "(no --processes)")
    if config.scenario == "answer" and config.count is not None and config.count < workers:
        # each worker answers for its own users: one without a share of -m would register none
        raise ValueError(f"count: the answer scenario split over {workers} workers needs -m {workers} or more "
                         "(each counts the calls to its own users)")
    # rate steps are the driver's (its monitor changes every share's rate and ends the
    # steps); a share gets their time and one interval more as its own bound, as a local run
    duration = config.duration
    stepped = config.stepped_duration()
    if duration is None and config.count is None and stepped is not None:
        duration = stepped + config.rate_interval
    shares = []
    for i in range(workers):
        count = None
        if config.count is not None:
            count = config.count // workers + (1 if i < config.count % workers else 0)
            if count == 0:
                continue
        ports = None
        if config.local_ports is not None:
            first, last = config.local_ports
            size = (last - first + 1) // workers
            if size < 1:
                raise ValueError(f"local_ports: {first}-{last} has fewer ports than workers ({workers})")
            ports = (first + i * size, first + (i + 1) * size - 1)
        shares.append(dataclasses.replace(
            config, rate=config.rate / workers, count=count, limit=max(1, math.ceil(config.limit / workers)),
            local_ports=ports, index_start=config.index_start + i * config.index_step,
            index_step=config.index_step * workers, duration=duration, rate_increase=0.0, rate_max=None,
            trace_msg=None if config.trace_msg is None else f"{config.trace_msg}.{i}",
            record_dir=None if config.record_dir is None else os.path.join(config.record_dir, str(i))))
    for share in shares:  # shares of the rate follow the number of workers really started
        share.rate = config.rate / len(shares)
    return shares


def _config_dict(config: LoadConfig) -> dict[str, Any]:
    data = dataclasses.asdict(config)
    data["users"] = [dataclasses.asdict(u) for u in config.users]
    return data


def _config_from(data: dict[str, Any]) -> LoadConfig:
    values = dict(data)
    values["users"] = [User(**{**u, "fields": tuple(u.get("fields", ()))}) for u in values["users"]]
    for name in ("local_ports", "codecs", "rtp_ports"):  # JSON has no tuples
        if values.get(name) is not None:
            values[name] = tuple(values[name])
    values["headers"] = [(str(name), str(value)) for name, value in values.get("headers", ())]
    return LoadConfig(**values)


class _Worker:
    """The actor's body (wrapped by ``ray.remote`` on first use): one LoadRunner."""

    def __init__(self, config: dict[str, Any], name: str) -> None:
        from .runner import LoadRunner

        self.name = name
        self.runner = LoadRunner(_config_from(config))
        self.error: str | None = None
        self.task: asyncio.Task[None] | None = None
        self.total = Counters()

    async def start(self) -> None:
        self.task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        try:
            await self.runner.run()
        except Exception as exc:  # the worker's failure is reported by take(), in one line
            self.error = f"{self.name}: {getattr(exc, 'reason', None) or exc}"
            self.runner.done = True

    async def take(self) -> tuple[dict[str, Any], int, bool, str | None]:
        """(this interval's counters as a dict, in progress, done, error)."""
        done = self.runner.done
        interval = self.runner.take_interval()
        self.total.merge(Counters.from_dict(interval.to_dict()))
        return interval.to_dict(), self.runner.in_progress(), done, self.error

    async def totals(self) -> dict[str, Any]:
        return {"worker": self.name, "attempted": self.total.attempted, "successful": self.total.successful,
                "failed": self.total.failed, "retransmissions": self.total.retransmissions,
                "eventLoop": event_loops.loop_name(asyncio.get_running_loop())}

    async def set_rate(self, rate: float) -> None:
        self.runner.set_rate(rate)

    async def stop(self) -> None:
        self.runner.stop()

    async def pause(self, paused: bool) -> None:
        self.runner.pause(paused)

    async def abort(self) -> None:
        self.runner.abort()


class _WorkerAnswers:
    """What the driver keeps of its workers' answers: which are ``done``, and their ``errors``
    (one line each, ``workerN: …``, each once)."""

    def __init__(self, workers: int) -> None:
        self.done = [False] * workers
        self.errors: list[str] = []

    def _error(self, error: str) -> None:
        if error not in self.errors:
            self.errors.append(error)

    def _add(self, i: int, answer: tuple[dict[str, Any], int, bool, str | None], total: Counters) -> int:
        """Add worker ``i``'s answer to ``take`` (``_Worker.take``) to ``total``; returns its
        attempts in progress."""
        counters, running, done, error = answer
        total.merge(Counters.from_dict(counters))
        self.done[i] = done
        if error:
            self._error(error)
        return running


class DistributedSource(_WorkerAnswers):
    """The Ray workers as one :class:`~skinnysip.load.runner.IntervalSource`."""

    def __init__(self, actors: list[Any]) -> None:
        super().__init__(len(actors))
        self.actors = actors

    async def take(self) -> tuple[Counters, int]:
        results = await asyncio.gather(*(actor.take.remote() for actor in self.actors))
        total = Counters()
        in_progress = sum(self._add(i, answer, total) for i, answer in enumerate(results))
        return total, in_progress

    @property
    def finished(self) -> bool:
        return all(self.done)

    def set_rate(self, rate: float) -> None:
        for actor in self.actors:
            actor.set_rate.remote(rate / len(self.actors))

    def stop(self) -> None:
        for actor in self.actors:
            actor.stop.remote()

    def pause(self, paused: bool) -> None:
        for actor in self.actors:
            actor.pause.remote(paused)

    def abort(self) -> None:
        for actor in self.actors:
            actor.abort.remote()


def _process_main(config: dict[str, Any], name: str, conn: Connection, finished: Any, event_loop: str) -> None:
    """A worker process's body (``multiprocessing``, spawn): the worker in its own event loop
    (``event_loop``: :mod:`skinnysip.net.event_loop`), serving the driver's commands from
    ``conn`` until ``exit`` or the driver is gone; sets the ``finished`` event (a
    ``multiprocessing.Event``) when its run is over."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole group: the driver decides
    event_loops.run(_serve(config, name, conn, finished), event_loop)


async def _serve(config: dict[str, Any], name: str, conn: Connection, finished: Any) -> None:
    """Sends ``ready`` once the worker is made, then serves commands (``(verb, argument)``):
    ``start`` (the run begins); ``take`` → (interval, in progress, done, error);
    ``totals`` → the worker's totals; ``set_rate`` r; ``stop``; ``pause`` flag; ``abort``; ``exit``. Only ``take`` and
    ``totals`` are answered. A closed pipe (the driver died) stops the run and ends the loop."""
    loop = asyncio.get_running_loop()
    commands: asyncio.Queue[tuple[str, Any]] = asyncio.Queue(maxsize=64)

    def readable() -> None:
        try:
            command = conn.recv()
        except (EOFError, OSError):  # the driver is gone: stop reading (the fd stays readable)
            loop.remove_reader(conn.fileno())
            command = ("exit", None)
        if commands.full():  # the driver asks one thing at a time: never, but bounded all the same
            return
        commands.put_nowait(command)

    worker = _Worker(config, name)
    conn.send("ready")  # imported and made: the driver starts every worker at once
    loop.add_reader(conn.fileno(), readable)
    try:
        while True:
            verb, argument = await commands.get()
            if verb == "start":
                await worker.start()
                assert worker.task is not None
                worker.task.add_done_callback(lambda _: finished.set())  # the driver's monitor sees it at once
            elif verb == "take":
                conn.send(await worker.take())
            elif verb == "totals":
                conn.send(await worker.totals())
            elif verb == "set_rate":
                await worker.set_rate(float(argument))
            elif verb == "stop":
                await worker.stop()
            elif verb == "pause":
                await worker.pause(bool(argument))
            elif verb == "abort":
                await worker.abort()
            else:  # exit, or the pipe closed
                await worker.stop()
                break
    finally:
        loop.remove_reader(conn.fileno())
        if worker.task is not None:
            worker.task.cancel()
            with contextlib.suppress(BaseException):
                await worker.task


class ProcessSource(_WorkerAnswers):
    """Worker processes of this machine (:mod:`multiprocessing`, spawn) as one
    :class:`~skinnysip.load.runner.IntervalSource`: each asked over its pipe, one request at a
    time, every answer awaited at most :data:`WORKER_ANSWER_TIMEOUT` seconds. ``event_loop``:
    the workers' (:mod:`skinnysip.net.event_loop`)."""

    def __init__(self, shares: list[LoadConfig], event_loop: str = "auto") -> None:
        super().__init__(len(shares))
        context = multiprocessing.get_context("spawn")  # the driver has threads and a loop: no fork
        self.connections: list[Connection] = []
        self.processes: list[Any] = []
        self.finished_events = [context.Event() for _ in shares]
        for i, share in enumerate(shares):
            ours, theirs = context.Pipe()
            process = context.Process(target=_process_main, name=f"skinnysip-load-worker{i}", daemon=True,
                                      args=(_config_dict(share), f"worker{i}", theirs, self.finished_events[i],
                                            event_loop))
            process.start()
            theirs.close()
            self.connections.append(ours)
            self.processes.append(process)
        self._locks = [asyncio.Lock() for _ in shares]

    async def _ask(self, i: int, verb: str | None, timeout: float = WORKER_ANSWER_TIMEOUT) -> Any:
        """Send ``verb`` to worker ``i`` (None: nothing, only wait) and wait for its answer.
        ``EOFError`` when the process is gone, ``TimeoutError`` when it does not answer in
        ``timeout`` seconds."""
        conn = self.connections[i]
        async with self._locks[i]:
            loop = asyncio.get_running_loop()
            if verb is not None:
                conn.send((verb, None))
            answered: asyncio.Future[None] = loop.create_future()
            loop.add_reader(conn.fileno(), event_loops.set_once, answered, None)
            try:
                await asyncio.wait_for(answered, timeout)
            finally:
                loop.remove_reader(conn.fileno())
            return conn.recv()

    async def start(self) -> None:
        """Wait until every worker process has started and made its worker (bounded by
        :data:`WORKER_START_TIMEOUT`), then start them all at once, so the run's clock and
        the workers' agree. A worker that did not come up is finished with an error."""
        for i in range(len(self.connections)):
            try:
                await self._ask(i, None, WORKER_START_TIMEOUT)
            except (EOFError, OSError, TimeoutError):
                self.done[i] = True
                self._error(f"worker{i}: the worker process did not start (exit code {self.processes[i].exitcode})")
        for i in range(len(self.connections)):
            if not self.done[i]:
                self._tell(i, "start")

    def _tell(self, i: int, verb: str, argument: Any = None) -> None:
        with contextlib.suppress(OSError, ValueError):
            self.connections[i].send((verb, argument))

    async def take(self) -> tuple[Counters, int]:
        total = Counters()
        in_progress = 0
        for i in range(len(self.connections)):
            if self.done[i] and not self.processes[i].is_alive():
                continue
            try:
                answer = await self._ask(i, "take")
            except (EOFError, OSError, TimeoutError) as exc:
                self.done[i] = True
                self._error(f"worker{i}: no answer in {WORKER_ANSWER_TIMEOUT:g} s" if isinstance(exc, TimeoutError)
                            else f"worker{i}: the worker process ended (exit code {self.processes[i].exitcode})")
                continue
            in_progress += self._add(i, answer, total)
        return total, in_progress

    @property
    def finished(self) -> bool:
        """Every worker's run is over (its event is set, or it is gone): the monitor takes one
        last interval and stops."""
        return all(done or event.is_set() for done, event in zip(self.done, self.finished_events, strict=True))

    def set_rate(self, rate: float) -> None:
        for i in range(len(self.connections)):
            self._tell(i, "set_rate", rate / len(self.connections))

    def stop(self) -> None:
        for i in range(len(self.connections)):
            self._tell(i, "stop")

    def pause(self, paused: bool) -> None:
        for i in range(len(self.connections)):
            self._tell(i, "pause", paused)

    def abort(self) -> None:
        for i in range(len(self.connections)):
            self._tell(i, "abort")

    async def totals(self) -> list[dict[str, Any]]:
        out = []
        for i in range(len(self.connections)):
            try:
                out.append(await self._ask(i, "totals"))
            except (EOFError, OSError, TimeoutError):  # gone: what it did is in the monitor's total only
                out.append({"worker": f"worker{i}", "attempted": None, "successful": None, "failed": None,
                            "retransmissions": None, "eventLoop": None})
        return out

    async def close(self) -> None:
        """Ask every worker to exit, wait for it (bounded), then kill what is left."""
        for i in range(len(self.connections)):
            self._tell(i, "exit")
        loop = asyncio.get_running_loop()
        for process in self.processes:
            await loop.run_in_executor(None, process.join, 5.0)
            if process.is_alive():
                process.kill()
                await loop.run_in_executor(None, process.join, 5.0)
        for conn in self.connections:
            conn.close()


def _ray() -> Any:
    try:
        import ray
    except ImportError as exc:
        raise RayUnavailable("distributed load needs Ray: pip install 'skinnysip[distributed]'") from exc
    return ray


async def run_distributed(config: LoadConfig, sinks: list[Sink], *, workers: int, address: str | None = None,
                          interval: float = 1.0, on_monitor: Any = None,
                          engine: Engine = "processes", event_loop: str = "auto",
                          ) -> tuple[Monitor, list[dict[str, Any]]]:
    """Run ``config`` over ``workers`` workers and aggregate their counters into one
    :class:`Monitor` feeding ``sinks``. ``engine``: ``processes`` (this machine's processes,
    see the module doc) or ``ray``; an ``address`` (an existing Ray cluster: ``auto``,
    ``ray://host:10001``) means Ray. Ray without an address starts a local one with ``workers``
    CPUs on 127.0.0.1 (or uses the Ray already initialised in this process). Returns the monitor
    and each worker's totals (``worker``, ``attempted``, ``successful``, ``failed``,
    ``retransmissions``: None for a process that is gone; ``error``: one line, where the worker
    failed). ``event_loop``: what the ``processes`` engine's workers run on (see
    :mod:`skinnysip.net.event_loop`; Ray's actors run Ray's own). Raises
    :class:`RayUnavailable`, ``ValueError`` (bad shares or engine)
    or :class:`WorkersFailed` with the first worker's error when every worker failed to start
    its scenario."""
    if engine not in ENGINES:
        raise ValueError(f"engine: one of {', '.join(ENGINES)}")
    config.validate()
    shares = worker_configs(config, workers)
    if engine == "processes" and not address:
        return await _run_processes(config, shares, sinks, interval, on_monitor, event_loop)
    return await _run_ray(config, shares, sinks, address, interval, on_monitor)


async def _watch(config: LoadConfig, source: DistributedSource | ProcessSource, sinks: list[Sink], interval: float,
                 on_monitor: Any) -> Monitor:
    """The driver's part of a fanned-out run: one monitor over ``source`` until it is finished."""
    monitor = Monitor.for_config(source, config, interval, sinks)
    if on_monitor is not None:
        on_monitor(monitor)
    await monitor.run(run_deadline(config, asyncio.get_running_loop().time()) + 60.0)
    if source.errors and monitor.total.attempted == 0:
        raise WorkersFailed(source.errors[0])
    return monitor


def _with_errors(totals: list[dict[str, Any]], errors: list[str]) -> list[dict[str, Any]]:
    """Each worker's totals with ``error`` (one line) added where that worker failed."""
    for entry in totals:
        reason = next((e for e in errors if e.startswith(f"{entry['worker']}:")), None)
        if reason is not None:
            entry["error"] = reason
    return totals


async def _run_processes(config: LoadConfig, shares: list[LoadConfig], sinks: list[Sink], interval: float,
                         on_monitor: Any, event_loop: str) -> tuple[Monitor, list[dict[str, Any]]]:
    source = ProcessSource(shares, event_loop)
    try:
        await source.start()
        monitor = await _watch(config, source, sinks, interval, on_monitor)
        return monitor, _with_errors(await source.totals(), source.errors)
    finally:
        await source.close()


async def _run_ray(config: LoadConfig, shares: list[LoadConfig], sinks: list[Sink], address: str | None,
                   interval: float, on_monitor: Any) -> tuple[Monitor, list[dict[str, Any]]]:
    ray = _ray()
    started_here = not ray.is_initialized()
    if started_here:
        try:
            if address:
                ray.init(address=address, log_to_driver=False, configure_logging=False)
            else:
                ray.init(num_cpus=max(len(shares), 1), include_dashboard=False, log_to_driver=False,
                         configure_logging=False, _node_ip_address="127.0.0.1")
        except Exception as exc:
            raise RayUnavailable(f"cannot start Ray: {exc}") from exc
    cpus = float(ray.cluster_resources().get("CPU", 1.0))
    actor_class = ray.remote(_Worker)
    per_worker = min(1.0, cpus / len(shares))
    actors = [actor_class.options(num_cpus=per_worker, max_concurrency=10_000).remote(_config_dict(share), f"worker{i}")
              for i, share in enumerate(shares)]
    source = DistributedSource(actors)
    try:
        await asyncio.gather(*(actor.start.remote() for actor in actors))
        monitor = await _watch(config, source, sinks, interval, on_monitor)
        totals = _with_errors(list(await asyncio.gather(*(actor.totals.remote() for actor in actors))), source.errors)
    finally:
        for actor in actors:
            with contextlib.suppress(Exception):
                ray.kill(actor)
        if started_here:
            with contextlib.suppress(Exception):
                ray.shutdown()  # a local Ray started for this run stops with it
    return monitor, totals
