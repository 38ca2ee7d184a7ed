"""The lab's voicemail: a mailbox per lab user, and the lab as the message-waiting notifier
(the ``message-summary`` event package of RFC 3842 over RFC 6665).

- :class:`Mailboxes` keeps each user's voice messages in memory (at most
  :data:`MAX_MESSAGES` a box, each at most :data:`MAX_MESSAGE_SECONDS` of 8000 Hz audio):
  the services' deposit (``*<user>``) adds one, their ``voicemail`` extension plays the new
  ones to their owner and marks them heard. Every change is told to the listeners.
- :class:`MWINotifier` is the notifier side of RFC 6665 §4.2 for those mailboxes: an
  authenticated user's SUBSCRIBE to its own AOR with ``Event: message-summary`` is answered
  200 with the granted ``Expires`` (at most :data:`MAX_EXPIRES` s), and a NOTIFY with the
  summary follows at once (§4.2.1.2), after each refresh, and whenever the mailbox changes.
  ``Expires: 0`` ends the subscription with a last NOTIFY (``terminated``); a subscription not
  refreshed in time ends with ``terminated;reason=timeout`` (§4.2.2). A NOTIFY answered 481,
  or not answered at all, ends it too. NOTIFYs go over the flow the SUBSCRIBE came on (its
  connection, or its source address), as the lab reaches registered phones. At most
  :data:`MAX_SUBSCRIPTIONS` live at once (503 beyond). The RFC 6665 bookkeeping is
  :class:`~skinnysip.lab.notifier.EventNotifier`'s, shared with the presence and dialog
  packages (:mod:`skinnysip.lab.presence`). Python units: seconds.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from skinnysip.lab.notifier import EventNotifier, EventSubscription
from skinnysip.net.sip_endpoint import SIPEndpoint
from skinnysip.sip.mwi import CONTENT_TYPE, MessageSummary, format_message_summary

__all__ = ["MAX_EXPIRES", "MAX_MESSAGES", "MAX_MESSAGE_SECONDS", "MAX_SUBSCRIPTIONS", "EVENT", "Mailboxes",
           "MWINotifier", "VoiceMessage"]

log = logging.getLogger(__name__)

#: messages a mailbox keeps (the oldest goes first)
MAX_MESSAGES = 20
#: seconds of a message kept at most
MAX_MESSAGE_SECONDS = 60.0
#: the longest subscription granted (s); a longer Expires is cut to it (RFC 6665 §4.2.1.1)
MAX_EXPIRES = 3600
#: subscriptions live at once, all users together
MAX_SUBSCRIPTIONS = 256
#: the event package served
EVENT = "message-summary"
RATE = 8000


@dataclass
class VoiceMessage:
    """One message: who left it (the caller's AOR user or URI), when (wall-clock seconds), its
    audio (int16, 8000 Hz mono) and whether its owner has heard it yet."""

    caller: str
    time: float
    samples: npt.NDArray[np.int16] = field(repr=False)
    new: bool = True

    @property
    def seconds(self) -> float:
        return len(self.samples) / RATE


class Mailboxes:
    """The lab users' mailboxes (``users``: who has one). ``listeners`` are called with a
    user's name after each change of that user's box."""

    def __init__(self, users: set[str], domain: str) -> None:
        self.users = set(users)
        self.domain = domain
        self._boxes: dict[str, deque[VoiceMessage]] = {}
        self.listeners: list[Callable[[str], None]] = []

    def has(self, user: str) -> bool:
        return user in self.users

    def deposit(self, user: str, caller: str, samples: npt.NDArray[np.int16]) -> VoiceMessage:
        """Leave a message in ``user``'s box (cut to :data:`MAX_MESSAGE_SECONDS`; the oldest
        message goes when the box holds :data:`MAX_MESSAGES`). ``KeyError`` for a user without
        a box."""
        if user not in self.users:
            raise KeyError(user)
        message = VoiceMessage(caller, time.time(), np.asarray(samples[: int(MAX_MESSAGE_SECONDS * RATE)],
                                                               dtype=np.int16))
        self._boxes.setdefault(user, deque(maxlen=MAX_MESSAGES)).append(message)
        self._changed(user)
        return message

    def messages(self, user: str) -> list[VoiceMessage]:
        """``user``'s messages, oldest first."""
        return list(self._boxes.get(user, ()))

    def take_new(self, user: str) -> list[VoiceMessage]:
        """The new messages of ``user``, oldest first, now marked heard (a change when any)."""
        fresh = [m for m in self._boxes.get(user, ()) if m.new]
        for message in fresh:
            message.new = False
        if fresh:
            self._changed(user)
        return fresh

    def summary(self, user: str) -> MessageSummary:
        """``user``'s summary: waiting when a message is new; Message-Account the AOR; the
        voice-message counts (new/old)."""
        box = self._boxes.get(user, ())
        new = sum(1 for m in box if m.new)
        return MessageSummary(new > 0, f"sip:{user}@{self.domain}", (("voice-message", (new, len(box) - new, 0, 0)),))

    def _changed(self, user: str) -> None:
        for listener in list(self.listeners):
            try:
                listener(user)
            except Exception:  # a listener's fault must not lose the message
                log.exception("voicemail listener failed")


class MWINotifier(EventNotifier):
    """The notifier for ``mailboxes`` on ``endpoint`` (the lab proxy's): the RFC 6665 side is
    :class:`~skinnysip.lab.notifier.EventNotifier`'s; a NOTIFY carries the mailbox's summary
    (RFC 3842 §5.2). The proxy hands it an authenticated user's SUBSCRIBE to its own mailbox
    (:meth:`subscribe`) and every in-dialog request (:meth:`owns`, :meth:`in_dialog`).
    ``allow_events``: what its responses name in ``Allow-Events`` (default: this package)."""

    packages = (EVENT,)
    max_subscriptions = MAX_SUBSCRIPTIONS

    def __init__(self, endpoint: SIPEndpoint, mailboxes: Mailboxes, *,
                 allow_events: tuple[str, ...] | None = None) -> None:
        super().__init__(endpoint, allow_events=allow_events)
        self.mailboxes = mailboxes
        mailboxes.listeners.append(self.changed)

    @property
    def max_expires(self) -> int:
        return MAX_EXPIRES

    async def close(self) -> None:
        """Drop every subscription and stop listening to the mailboxes."""
        with contextlib.suppress(ValueError):
            self.mailboxes.listeners.remove(self.changed)
        await super().close()

    def _snapshot(self, sub: EventSubscription) -> MessageSummary:
        return self.mailboxes.summary(sub.resource)

    def _body(self, sub: EventSubscription, snapshot: Any) -> tuple[bytes, str]:
        return format_message_summary(snapshot), CONTENT_TYPE
