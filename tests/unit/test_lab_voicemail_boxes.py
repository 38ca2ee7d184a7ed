"""The lab's mailboxes (``lab/voicemail.py``, sans network): deposits, the summary a NOTIFY
carries, playing marks messages heard, and the bounds (messages a box, seconds a message)."""

from __future__ import annotations

import numpy as np
import pytest

from skinnysip.lab.voicemail import MAX_MESSAGE_SECONDS, MAX_MESSAGES, Mailboxes


def boxes() -> tuple[Mailboxes, list[str]]:
    box = Mailboxes({"1001", "1002"}, "lab.skinnysip")
    changed: list[str] = []
    box.listeners.append(changed.append)
    return box, changed


def test_a_deposit_is_new_until_taken() -> None:
    box, changed = boxes()
    assert box.summary("1001").waiting is False and dict(box.summary("1001").counts) == {"voice-message": (0, 0, 0, 0)}
    box.deposit("1001", "1002", np.ones(8000, dtype=np.int16))
    summary = box.summary("1001")
    assert summary.waiting and summary.account == "sip:1001@lab.skinnysip"
    assert dict(summary.counts) == {"voice-message": (1, 0, 0, 0)} and changed == ["1001"]
    [message] = box.take_new("1001")
    assert message.caller == "1002" and message.seconds == 1.0 and not message.new
    assert dict(box.summary("1001").counts) == {"voice-message": (0, 1, 0, 0)} and not box.summary("1001").waiting
    assert box.take_new("1001") == [] and changed == ["1001", "1001"]  # nothing new: no change told
    assert box.summary("1002").waiting is False


def test_bounds_and_unknown_users() -> None:
    box, _ = boxes()
    for n in range(MAX_MESSAGES + 3):
        box.deposit("1002", str(n), np.zeros(10, dtype=np.int16))
    kept = box.messages("1002")
    assert len(kept) == MAX_MESSAGES and kept[0].caller == "3"  # the oldest went first
    long = box.deposit("1002", "x", np.zeros(int((MAX_MESSAGE_SECONDS + 5) * 8000), dtype=np.int16))
    assert long.seconds == MAX_MESSAGE_SECONDS
    with pytest.raises(KeyError):
        box.deposit("9999", "x", np.zeros(10, dtype=np.int16))
    assert not box.has("9999") and box.has("1001")


def test_a_failing_listener_loses_no_message() -> None:
    box, _ = boxes()

    def broken(user: str) -> None:
        raise RuntimeError("listener down")

    box.listeners.insert(0, broken)
    box.deposit("1001", "1002", np.zeros(100, dtype=np.int16))
    assert len(box.messages("1001")) == 1
