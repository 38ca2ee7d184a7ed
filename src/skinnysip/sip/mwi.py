"""The ``application/simple-message-summary`` body of RFC 3842 (message-waiting indication),
what a voicemail server's NOTIFY for the ``message-summary`` event carries (sans-IO)::

    Messages-Waiting: yes
    Message-Account: sip:alice@vmail.example.com
    Voice-Message: 2/8 (0/2)

:func:`parse_message_summary` reads it leniently, as phones do: header names in any case,
lines ending in CRLF or LF, unknown lines (RFC 3842 §5.2 allows extension headers after a
blank line) ignored.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["MessageSummary", "MessageSummaryError", "format_message_summary", "parse_message_summary",
           "MAX_SUMMARY_BYTES", "CONTENT_TYPE"]

#: the body's media type (RFC 3842 §5.1)
CONTENT_TYPE = "application/simple-message-summary"

#: bodies longer than this are refused (a summary is a few lines)
MAX_SUMMARY_BYTES = 8192

# RFC 3842 §5.2: msg-summary-line = message-context-class HCOLON newmsgs SLASH oldmsgs
#                                    [ LPAREN new-urgentmsgs SLASH old-urgentmsgs RPAREN ]
_SUMMARY_LINE = re.compile(r"(\d{1,9})\s*/\s*(\d{1,9})(?:\s*\(\s*(\d{1,9})\s*/\s*(\d{1,9})\s*\))?\s*$")
#: message context classes of RFC 3458 §3 that a summary line may name
CONTEXT_CLASSES = frozenset({"voice-message", "fax-message", "pager-message", "multimedia-message",
                             "text-message", "none"})


class MessageSummaryError(ValueError):
    """The body is not an RFC 3842 message summary (no ``Messages-Waiting`` line, too long…)."""


@dataclass(frozen=True)
class MessageSummary:
    """``waiting``: ``Messages-Waiting`` is ``yes``; ``account``: ``Message-Account`` (None if
    absent); ``counts``: per message context class, in the body's order, (new, old, new
    urgent, old urgent) — the urgent counts 0 when the line has none."""

    waiting: bool
    account: str | None
    counts: tuple[tuple[str, tuple[int, int, int, int]], ...]


def parse_message_summary(body: bytes) -> MessageSummary:
    """Parse an ``application/simple-message-summary`` body (RFC 3842 §5.2). Raises
    :class:`MessageSummaryError` without a ``Messages-Waiting: yes|no`` line or beyond
    :data:`MAX_SUMMARY_BYTES`; summary lines with counts that do not parse are skipped."""
    if len(body) > MAX_SUMMARY_BYTES:
        raise MessageSummaryError(f"a message summary of {len(body)} bytes (at most {MAX_SUMMARY_BYTES})")
    waiting: bool | None = None
    account: str | None = None
    counts: list[tuple[str, tuple[int, int, int, int]]] = []
    for line in body.decode("utf-8", "replace").splitlines():
        name, colon, value = line.partition(":")
        if not colon:
            continue
        key, value = name.strip().lower(), value.strip()
        if key == "messages-waiting":
            if value.lower() not in ("yes", "no"):
                raise MessageSummaryError(f"Messages-Waiting: {value[:40]!r} is neither yes nor no")
            waiting = value.lower() == "yes"
        elif key == "message-account":
            account = value or None
        elif key in CONTEXT_CLASSES and (match := _SUMMARY_LINE.match(value)):
            new, old, new_urgent, old_urgent = (int(n) if n else 0 for n in match.groups())
            counts.append((key, (new, old, new_urgent, old_urgent)))
    if waiting is None:
        raise MessageSummaryError("no Messages-Waiting line (RFC 3842 §5.2)")
    return MessageSummary(waiting, account, tuple(counts))


def format_message_summary(summary: MessageSummary) -> bytes:
    """The ``application/simple-message-summary`` body of ``summary`` (RFC 3842 §5.2): the
    ``Messages-Waiting`` line, ``Message-Account`` when known, then one line per message class
    (``Voice-Message: 2/8 (0/2)``; the urgent counts only when not both 0), CRLF line ends.
    ``ValueError`` for a class :data:`CONTEXT_CLASSES` does not name or a negative count."""
    lines = [f"Messages-Waiting: {'yes' if summary.waiting else 'no'}"]
    if summary.account:
        lines.append(f"Message-Account: {summary.account}")
    for kind, (new, old, new_urgent, old_urgent) in summary.counts:
        if kind not in CONTEXT_CLASSES:
            raise ValueError(f"message context class {kind[:40]!r} is not one of RFC 3458's")
        if min(new, old, new_urgent, old_urgent) < 0:
            raise ValueError("message counts are not negative")
        urgent = f" ({new_urgent}/{old_urgent})" if new_urgent or old_urgent else ""
        lines.append(f"{kind.title()}: {new}/{old}{urgent}")
    return ("\r\n".join(lines) + "\r\n").encode()
