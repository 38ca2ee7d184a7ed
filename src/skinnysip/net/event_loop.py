"""Which event loop a long run goes on: asyncio's own, or uvloop (libuv).

The standard loop does in Python, per readiness callback, timer and task step, what uvloop
does in C. Measured on this project's 2-core machine (``benchmarks/bench_load_register.py``,
REGISTER with digest against Kamailio, one run): its Python floor, the leanest client with
no SIP stack, spent 0.17 ms of CPU a registration and kept 4800/s on asyncio, 0.05 ms and
10400/s on uvloop (SIPp: 9600/s); ``skinnysip load register`` 3200/s on asyncio, 3600/s on
uvloop (its UDP transport already drains a burst of datagrams per wake-up, and most of its
CPU is the SIP stack's). ``skinnysip load`` runs on uvloop when it is installed (it comes with
``uvicorn[standard]``, a dependency) and on asyncio otherwise or when asked
(``--loop asyncio``).

What the SIP and media drivers need from a loop, both give: ``add_reader``/``add_writer`` on
a socket (the UDP transport reads its own socket, so ICMP errors through ``IP_RECVERR`` are
heard on either), datagram endpoints, streams with TLS, ``call_at``, signal handlers. Two
differences matter. libuv stops watching a socket once its poll reported an error
(POLLERR, as an ICMP error does), where asyncio's selector keeps reporting it: the UDP
transport watches the socket again after each error it reads
(``sip_transport._DrainingDatagramTransport._rearm``). And for measurements: uvloop's
``loop.time()`` has millisecond steps (libuv's ``uv_now``, whole milliseconds), asyncio's is
:func:`time.monotonic`. Response times, call lengths and packet arrival times are therefore
read from :func:`time.monotonic` (the same clock as either loop's time, at full resolution);
deadlines and timers keep ``loop.time()``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, Literal, TypeVar

__all__ = ["EVENT_LOOPS", "EventLoopName", "EventLoopUnavailable", "loop_factory", "loop_name", "run", "set_once"]

EventLoopName = Literal["auto", "asyncio", "uvloop"]
#: the choices: ``auto`` (uvloop when it can be imported, else asyncio), ``asyncio``, ``uvloop``
EVENT_LOOPS: tuple[EventLoopName, ...] = ("auto", "asyncio", "uvloop")

T = TypeVar("T")


class EventLoopUnavailable(RuntimeError):
    """``uvloop`` was asked for and cannot be imported; the message says what to do."""


def set_once(future: asyncio.Future[T], value: T) -> None:
    """Give ``future`` its ``value`` unless it is done already (cancelled, or answered by a
    racing timer or event): the one way this package's callbacks wake a waiting coroutine."""
    if not future.done():
        future.set_result(value)


def loop_factory(name: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """The factory of a new event loop for ``name`` (one of :data:`EVENT_LOOPS`), or ``None``
    for asyncio's default. ``ValueError`` for another name; :class:`EventLoopUnavailable`
    when ``uvloop`` is asked for and not installed (``auto`` then falls back to asyncio)."""
    if name not in EVENT_LOOPS:
        raise ValueError(f"event loop: {name!r} is not one of {', '.join(EVENT_LOOPS)}")
    if name == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:
        if name == "uvloop":
            raise EventLoopUnavailable("uvloop is not installed (pip install uvloop), or use --loop asyncio") from None
        return None
    return uvloop.new_event_loop  # type: ignore[no-any-return]


def loop_name(loop: asyncio.AbstractEventLoop) -> Literal["asyncio", "uvloop"]:
    """``uvloop`` when ``loop`` is uvloop's, else ``asyncio``."""
    return "uvloop" if type(loop).__module__.split(".")[0] == "uvloop" else "asyncio"


def run(main: Coroutine[Any, Any, T], event_loop: str = "auto") -> T:
    """Run ``main`` to its end in a new event loop of the kind ``event_loop`` names (as
    :func:`asyncio.run`: the loop is closed after, async generators and the default executor
    shut down) and return its result. Raises what ``main`` raises, ``ValueError`` or
    :class:`EventLoopUnavailable` (see :func:`loop_factory`; ``main`` is then closed, never
    started)."""
    try:
        factory = loop_factory(event_loop)
    except (ValueError, EventLoopUnavailable):
        main.close()
        raise
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(main)
