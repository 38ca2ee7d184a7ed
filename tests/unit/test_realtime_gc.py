"""The collector while real-time work runs (net/realtime.py): media streams and load runs hold
it tuned; the last to leave restores it exactly."""

from __future__ import annotations

import asyncio
import gc

import pytest

from skinnysip.net import realtime
from skinnysip.net.media import MediaStream


def test_counted_holders_restore_exactly_after_the_last() -> None:
    before, frozen = gc.get_threshold(), gc.get_freeze_count()
    assert realtime.holders() == 0
    realtime.acquire()
    realtime.acquire()
    assert gc.get_threshold()[0] == max(before[0], realtime.GC_GEN0_THRESHOLD)
    assert gc.get_threshold()[1:] == before[1:]
    assert gc.get_freeze_count() > 0
    realtime.release()
    assert realtime.holders() == 1 and gc.get_threshold()[0] == max(before[0], realtime.GC_GEN0_THRESHOLD)
    realtime.release()
    assert realtime.holders() == 0
    assert gc.get_threshold() == before and gc.get_freeze_count() == frozen
    with pytest.raises(RuntimeError, match="without a matching acquire"):
        realtime.release()


def test_a_freeze_made_by_someone_else_is_left_alone() -> None:
    before = gc.get_threshold()
    gc.freeze()
    try:
        frozen = gc.get_freeze_count()
        with realtime.tuned():
            assert gc.get_threshold()[0] == max(before[0], realtime.GC_GEN0_THRESHOLD)
        assert gc.get_threshold() == before
        assert gc.get_freeze_count() >= frozen  # not unfrozen: the freeze was not ours
    finally:
        gc.unfreeze()


def test_tuned_restores_on_error() -> None:
    before = gc.get_threshold()
    with pytest.raises(ValueError), realtime.tuned():
        raise ValueError("boom")
    assert gc.get_threshold() == before and realtime.holders() == 0


async def test_open_media_streams_hold_the_collector_until_the_last_closes() -> None:
    before, frozen = gc.get_threshold(), gc.get_freeze_count()
    a = await MediaStream.open("127.0.0.1")
    b = await MediaStream.open("127.0.0.1")
    try:
        assert realtime.holders() == 2
        assert gc.get_threshold()[0] == max(before[0], realtime.GC_GEN0_THRESHOLD)
        await a.close()
        await a.close()  # idempotent: released once
        assert realtime.holders() == 1
        await asyncio.sleep(0)
    finally:
        await b.close()
        await a.close()
    assert realtime.holders() == 0
    assert gc.get_threshold() == before and gc.get_freeze_count() == frozen
