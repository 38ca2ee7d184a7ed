"""``skinnysip.net.event_loop``: which loop a load run goes on, and what happens when the
one asked for is missing."""

from __future__ import annotations

import asyncio
import sys

import pytest

from skinnysip.net import event_loop as loops


async def _which() -> str:
    await asyncio.sleep(0)
    return loops.loop_name(asyncio.get_running_loop())


def test_each_name_runs_on_its_loop_and_returns_the_result() -> None:
    pytest.importorskip("uvloop")
    assert loops.run(_which(), "asyncio") == "asyncio"
    assert loops.run(_which(), "uvloop") == "uvloop"
    assert loops.run(_which(), "auto") == "uvloop"  # installed: auto takes it
    assert loops.run(_which()) == "uvloop"


def test_the_loop_is_closed_after_and_errors_come_through() -> None:
    seen: list[asyncio.AbstractEventLoop] = []

    async def fails() -> None:
        seen.append(asyncio.get_running_loop())
        raise LookupError("from main")

    with pytest.raises(LookupError, match="from main"):
        loops.run(fails(), "asyncio")
    assert seen[0].is_closed()


def test_an_unknown_name_is_refused_and_the_coroutine_closed() -> None:
    coroutine = _which()
    with pytest.raises(ValueError, match="'libev' is not one of auto, asyncio, uvloop"):
        loops.run(coroutine, "libev")
    assert coroutine.cr_frame is None  # closed: no "never awaited" warning, nothing ran


def test_without_uvloop_auto_falls_back_and_uvloop_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "uvloop", None)  # import uvloop → ImportError
    assert loops.loop_factory("auto") is None
    assert loops.run(_which(), "auto") == "asyncio"
    coroutine = _which()
    with pytest.raises(loops.EventLoopUnavailable, match="pip install uvloop"):
        loops.run(coroutine, "uvloop")
    assert coroutine.cr_frame is None
