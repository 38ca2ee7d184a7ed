"""The lab's voicemail and message-waiting notifier (``lab/voicemail.py``), end to end through
the whole lab: a phone subscribes to its mailbox (SUBSCRIBE ``message-summary``, RFC 3842 over
RFC 6665) and is NOTIFYed at once; a caller dials ``*<user>`` and leaves a message (its tone);
the owner's lamp lights (a NOTIFY with ``Messages-Waiting: yes``, 1 new); the owner dials
the voicemail extension (605) and hears the message — proven by listening: the caller's tone
after the beep — and the lamp goes out.

The subscriber is our own phone (``SIPAccount.mwi``). baresip 1.0's ``mwi`` module was tried
as a second one: it gets the NOTIFYs, but now and then, after the 407 to its SUBSCRIBE, it
sends new SUBSCRIBEs without credentials in a tight loop (thousands a second; the lab answers
each with 407 and stays up) — a flaky peer, so not a test here (docs/NOTES.md)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest
from test_lab_sip import DOMAIN, port, settings
from test_phone_baresip import _wav

from skinnysip.lab import voicemail
from skinnysip.lab.runner import Lab
from skinnysip.lab.services import VOICEMAIL_BEEP
from skinnysip.phone.api import ErrorEvent, MessageWaiting
from skinnysip.phone.sip_phone import SIPAccount, SIPPhone
from skinnysip.rtp.audio import dominant_frequencies

pytestmark = [pytest.mark.peer, pytest.mark.timeout(120)]

MESSAGE_TONE = 660.0


@pytest.fixture
async def lab() -> AsyncIterator[Lab]:
    async with Lab(settings()) as running:
        yield running


def account(lab: Lab, user: str, **kw: object) -> SIPAccount:
    return SIPAccount(aor=f"sip:{user}@{DOMAIN}", password=f"demo{user}", registrar=f"127.0.0.1:{port(lab, 'udp')}",
                      expires=60, **kw)  # type: ignore[arg-type]


async def lamp(phone: SIPPhone, timeout: float = 10.0) -> MessageWaiting:
    """The next MessageWaiting event (the next NOTIFY), failing on an ErrorEvent."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        event = await phone.next_event(0.2)
        if isinstance(event, MessageWaiting):
            return event
        assert not isinstance(event, ErrorEvent), event.reason
    raise AssertionError("no message-summary NOTIFY")


async def leave_message(lab: Lab, caller: str, mailbox: str, seconds: float, tmp_path: Path) -> None:
    """``caller`` (our phone, sending :data:`MESSAGE_TONE`) dials ``*<mailbox>``, talks
    ``seconds`` after the beep and hangs up."""
    async with SIPPhone(account(lab, caller, source=f"tone:{MESSAGE_TONE}", record_dir=str(tmp_path / caller))) as p:
        call = await p.call(f"*{mailbox}")
        assert await call.wait_connected(10), call.end_reason
        await asyncio.sleep(VOICEMAIL_BEEP[1] + seconds)
        await call.hangup()


def tone_seconds(path: Path, freq: float) -> float:
    """Seconds of 20 ms frames of ``path`` whose dominant frequency is ``freq`` ± 25 Hz."""
    samples, rate = _wav(path)
    return float(np.sum(np.abs(dominant_frequencies(samples, rate) - freq) < 25)) * 0.02


async def test_a_message_lights_the_lamp_plays_back_and_puts_it_out(lab: Lab, tmp_path: Path) -> None:
    async with SIPPhone(account(lab, "1001", mwi=True, record_dir=str(tmp_path / "1001"))) as owner:
        first = await lamp(owner)  # the NOTIFY that follows the 200 at once (RFC 6665 §4.2.1.2)
        assert owner.mwi is not None and owner.mwi.state == "active"
        assert first.waiting is False and first.account == f"sip:1001@{DOMAIN}"
        assert dict(first.counts) == {"voice-message": (0, 0, 0, 0)}
        await leave_message(lab, "1002", "1001", 2.0, tmp_path)
        lit = await lamp(owner)
        assert lit.waiting and dict(lit.counts) == {"voice-message": (1, 0, 0, 0)}
        # the owner calls the voicemail: a beep, then the message; the lab hangs up after it
        call = await owner.call("605")
        assert await call.wait_connected(10), call.end_reason
        assert await call.wait_ended(15), "the voicemail did not hang up after the message"
        assert call.end_reason == "BYE received"
        out = await lamp(owner)
        assert out.waiting is False and dict(out.counts) == {"voice-message": (0, 1, 0, 0)}
        assert call.media is not None
        heard = call.media.recordings["rx"]
        assert tone_seconds(heard, MESSAGE_TONE) >= 1.5, "the message's tone was not played back"
        assert tone_seconds(heard, VOICEMAIL_BEEP[0]) >= 0.1, "no beep before the message"
        # nothing new now: two low beeps and the lab hangs up; the lamp stays out
        again = await owner.call("605")
        assert await again.wait_connected(10) and await again.wait_ended(10)
    assert lab.proxy is not None
    assert lab.proxy.notifier.count == 0  # closing the phone unsubscribed (Expires 0)


async def test_only_the_owner_subscribes_and_a_dead_subscriber_is_dropped(lab: Lab) -> None:
    """RFC 3842 §6: a mailbox's state is its owner's — 1002 subscribing to 1001's is refused
    403. A subscriber whose NOTIFYs go unanswered is dropped (RFC 6665 §4.2.2)."""
    async with SIPPhone(account(lab, "1002", mwi=True, mwi_uri=f"sip:1001@{DOMAIN}")) as stranger:
        deadline = time.monotonic() + 10
        error: ErrorEvent | None = None
        while error is None and time.monotonic() < deadline:
            event = await stranger.next_event(0.2)
            if isinstance(event, ErrorEvent):
                error = event
        assert error is not None and error.reason.startswith("SUBSCRIBE message-summary refused: 403"), error
    assert lab.proxy is not None
    assert lab.proxy.notifier.count == 0


async def test_the_subscription_is_refreshed_in_its_dialog(lab: Lab, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """With the lab granting 8 s (``MAX_EXPIRES``), our phone refreshes in the dialog before
    they run out: the refresh (same Call-ID, the lab's To tag) gets 200 and a NOTIFY, the
    subscription stays one, and a message left after it still lights the lamp."""
    monkeypatch.setattr(voicemail, "MAX_EXPIRES", 8)
    async with SIPPhone(account(lab, "1001", mwi=True)) as owner:
        await lamp(owner)
        await asyncio.sleep(6.5)  # the phone refreshes at 80 % of the time, at least 5 s apart
        subscribes = [m for m in owner.endpoint.trace if m.summary.startswith("SUBSCRIBE") and m.direction == "sent"]
        assert len({m.call_id for m in subscribes}) == 1 and len(subscribes) >= 3, [m.summary for m in subscribes]
        assert "tag=" in subscribes[-1].raw.decode(errors="replace").split("\r\nTo:", 1)[1].split("\r\n", 1)[0]
        assert lab.proxy is not None and lab.proxy.notifier.count == 1
        refreshed = await lamp(owner)  # the NOTIFY after the refresh
        assert refreshed.waiting is False
        await leave_message(lab, "1002", "1001", 1.0, tmp_path)
        assert (await lamp(owner)).waiting


async def test_a_caller_that_skips_the_proxy_reaches_no_mailbox(lab: Lab) -> None:
    """The voicemail trusts the From the lab proxy authenticated: a call straight to the
    services' own port, claiming to be 1001, is refused (404) and hears nothing."""
    assert lab.services is not None and lab.services.address is not None and lab.services.mailboxes is not None
    lab.services.mailboxes.deposit("1001", "1002", np.ones(8000, dtype=np.int16))
    host, services_port = lab.services.address
    async with SIPPhone(SIPAccount(aor=f"sip:1001@{DOMAIN}", register=False)) as forger:
        for number in ("605", "*1001"):
            call = await forger.call(f"sip:{number}@{host}:{services_port}")
            assert not await call.wait_connected(5) and call.end_reason is not None
            assert call.end_reason.startswith("404"), call.end_reason
    assert lab.services.mailboxes.summary("1001").waiting  # still new: nobody heard it
