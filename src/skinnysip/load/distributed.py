"""The same load run fanned out over worker processes and machines with Ray.

Each worker is a Ray *async actor* (:class:`LoadWorker`) running a
:class:`~skinnysip.load.runner.LoadRunner` in its own event loop with its share of the run:
``rate / N``, ``count`` split so the shares add up exactly, ``limit`` split (rounded up), the
local port range cut into N slices, and attempt indexes ``i, i + N, i + 2N…`` so users from
a file are used exactly as one process would use them. The driver's
:class:`~skinnysip.load.runner.Monitor` takes every worker's interval once per period
(:class:`DistributedSource`), adds them up and feeds the same live view and CSV as a local
run; a rate change is split over the workers the same way.

Ray is an optional extra: ``pip install 'skinnysip[distributed]'``. On one machine
(``--processes N``) a local Ray instance with N CPUs is started (``ray.init``); on a cluster
``--ray-address auto`` (or ``ray://head:10001``) joins it — see docs/load.md. Python units:
seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import math
from typing import Any

from .runner import Monitor, Sink, run_deadline
from .scenarios import LoadConfig, User
from .stats import Counters

__all__ = ["DistributedSource", "RayUnavailable", "WorkersFailed", "run_distributed", "worker_configs"]


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
            index_step=config.index_step * workers))
    for share in shares:  # shares of the rate follow the number of workers really started
        share.rate = config.rate / len(shares)
    return shares


def _config_dict(config: LoadConfig) -> dict[str, Any]:
    data = dataclasses.asdict(config)
    data["users"] = [dataclasses.asdict(u) for u in config.users]
    return data


def _config_from(data: dict[str, Any]) -> LoadConfig:
    values = dict(data)
    values["users"] = [User(**u) for u in values["users"]]
    if values.get("local_ports") is not None:
        values["local_ports"] = tuple(values["local_ports"])
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
                "failed": self.total.failed, "retransmissions": self.total.retransmissions}

    async def set_rate(self, rate: float) -> None:
        self.runner.set_rate(rate)

    async def stop(self) -> None:
        self.runner.stop()


class DistributedSource:
    """The Ray workers as one :class:`~skinnysip.load.runner.IntervalSource`."""

    def __init__(self, actors: list[Any]) -> None:
        self.actors = actors
        self.done = [False] * len(actors)
        self.errors: list[str] = []

    async def take(self) -> tuple[Counters, int]:
        results = await asyncio.gather(*(actor.take.remote() for actor in self.actors))
        total = Counters()
        in_progress = 0
        for i, (counters, running, done, error) in enumerate(results):
            total.merge(Counters.from_dict(counters))
            in_progress += running
            self.done[i] = done
            if error and error not in self.errors:
                self.errors.append(error)
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


def _ray() -> Any:
    try:
        import ray
    except ImportError as exc:
        raise RayUnavailable("distributed load needs Ray: pip install 'skinnysip[distributed]'") from exc
    return ray


async def run_distributed(config: LoadConfig, sinks: list[Sink], *, workers: int, address: str | None = None,
                          interval: float = 1.0, on_monitor: Any = None) -> tuple[Monitor, list[dict[str, Any]]]:
    """Run ``config`` over ``workers`` Ray actors and aggregate their counters into one
    :class:`Monitor` feeding ``sinks``. ``address``: an existing Ray cluster (``auto``,
    ``ray://host:10001``); None starts a local one with ``workers`` CPUs on 127.0.0.1 (or
    uses the Ray already initialised in this process). Returns the monitor and each worker's
    totals (``worker``, ``attempted``, ``successful``, ``failed``, ``retransmissions``).
    Raises :class:`RayUnavailable`, ``ValueError`` (bad shares) or :class:`WorkersFailed` with
    the first worker's error when every worker failed to start its scenario."""
    ray = _ray()
    config.validate()
    shares = worker_configs(config, workers)
    started_here = not ray.is_initialized()
    if started_here:
        try:
            if address:
                ray.init(address=address, log_to_driver=False, configure_logging=False)
            else:
                ray.init(num_cpus=max(workers, 1), include_dashboard=False, log_to_driver=False,
                         configure_logging=False, _node_ip_address="127.0.0.1")
        except Exception as exc:
            raise RayUnavailable(f"cannot start Ray: {exc}") from exc
    cpus = float(ray.cluster_resources().get("CPU", 1.0))
    actor_class = ray.remote(_Worker)
    per_worker = min(1.0, cpus / len(shares))
    actors = [actor_class.options(num_cpus=per_worker, max_concurrency=10_000).remote(_config_dict(share), f"worker{i}")
              for i, share in enumerate(shares)]
    source = DistributedSource(actors)
    monitor = Monitor(source, config.rate, interval, list(sinks))
    if on_monitor is not None:
        on_monitor(monitor)
    try:
        await asyncio.gather(*(actor.start.remote() for actor in actors))
        loop = asyncio.get_running_loop()
        await monitor.run(run_deadline(config, loop.time()) + 60.0)
        if source.errors and monitor.total.attempted == 0:
            raise WorkersFailed(source.errors[0])
        totals = list(await asyncio.gather(*(actor.totals.remote() for actor in actors)))
    finally:
        for actor in actors:
            with contextlib.suppress(Exception):
                ray.kill(actor)
        if started_here:
            with contextlib.suppress(Exception):
                ray.shutdown()  # a local Ray started for this run stops with it
    return monitor, totals
