"""``Phone.on_call_ended``: told of each call as it ends, once; a listener that raises is
logged and the phone goes on (its history and events as without one)."""

from __future__ import annotations

import logging

import pytest

from skinnysip.phone.api import Call, CallDirection, CallState, CallStateChanged, Phone


async def test_each_ended_call_is_told_once_and_a_failing_listener_stops_nothing(
        caplog: pytest.LogCaptureFixture) -> None:
    phone = Phone()
    ended: list[Call] = []
    phone.on_call_ended = ended.append
    first, second = Call(CallDirection.OUTGOING, "sip:a@b"), Call(CallDirection.INCOMING, "sip:c@d")
    phone.calls += [first, second]
    phone._set_state(first, CallState.CONFIRMED)
    assert ended == []
    phone._set_state(first, CallState.TERMINATED, "bye")
    phone._set_state(first, CallState.TERMINATED, "bye")  # told once
    assert ended == [first]

    def broken(call: Call) -> None:
        raise RuntimeError("listener bug")

    phone.on_call_ended = broken
    with caplog.at_level(logging.ERROR, logger="skinnysip.phone.api"):
        phone._set_state(second, CallState.TERMINATED, "cancel")
    assert "on_call_ended failed" in caplog.text
    assert phone.calls == [] and [h["id"] for h in phone.history] == [first.id, second.id]
    states = []
    while (event := await phone.next_event(0.01)) is not None:
        if isinstance(event, CallStateChanged):
            states.append((event.call.id, event.state))
    assert states[-1] == (second.id, CallState.TERMINATED)  # the event still queued
