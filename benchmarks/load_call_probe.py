"""A ``skinnysip load user`` scenario for ``bench_load_calls.py``: call, measure the send
lateness of our RTP (:class:`bench_media_calls.SendProbe`), hold, hang up, keep the report.

Used as ``user_script="load_call_probe:scenario"`` (the ``module:function`` form) so the
benchmark reads :data:`PROBES` and :data:`REPORTS` from this module after the run.
"""

from __future__ import annotations

import asyncio
from typing import Any

from bench_media_calls import SendProbe

from skinnysip.phone.sip_phone import SIPPhone

PROBES: list[SendProbe] = []
REPORTS: list[dict[str, Any]] = []
HOLD = 10.0
TARGET = "service"


def reset(hold: float, target: str = "service") -> None:
    global HOLD, TARGET
    PROBES.clear()
    REPORTS.clear()
    HOLD, TARGET = hold, target


async def scenario(phone: SIPPhone, index: int) -> bool:
    call = await phone.call(TARGET)
    assert call.media is not None
    probe = SendProbe(call.media)
    if not await call.wait_connected(32):
        return False
    await asyncio.sleep(1.0)  # the first second: streams still starting together
    probe.recording = True
    PROBES.append(probe)
    ended = await call.wait_ended(HOLD - 1.0)
    if not ended:
        await call.hangup()
    report = call.media_report()
    if report is not None:
        REPORTS.append(report)
    return not ended
