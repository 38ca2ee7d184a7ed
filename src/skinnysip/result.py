"""Shared shapes for operation results: the wire trace and the camelCase JSON base model.

Every operation returns a pydantic model derived from :class:`ResultModel`. Its
``to_api()`` output is exactly the HTTP API's response body, and the CLI's ``--json``
prints the same dict, so no interface re-shapes a result.
"""

from __future__ import annotations

import time
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict
from pydantic.alias_generators import to_camel


class ResultModel(BaseModel):
    """Base for results and API request bodies: Python snake_case fields, JSON camelCase."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True)

    def to_api(self) -> dict[str, Any]:
        """Return the JSON-ready dict (camelCase keys) that the API and ``--json`` emit."""
        return self.model_dump(mode="json", by_alias=True)


class WireMessage(ResultModel):
    """One message that crossed the wire, as sent or received.

    ``time`` is the wall-clock time in seconds since the epoch (float); ``local`` and
    ``remote`` are ``host:port`` strings (IPv6 hosts in brackets); ``transport`` is
    ``udp``, ``tcp`` or ``tls``; ``raw`` is the message text (SIP: decoded as UTF-8 with
    replacement; SCCP: hex of the frame). ``summary`` is one line for ladders
    (``INVITE sip:bob@example.com`` / ``200 OK`` / ``RegisterAck``); ``decoded`` holds
    protocol fields where the protocol is binary (SCCP).
    """

    direction: Literal["sent", "received"]
    time: float
    local: str
    remote: str
    transport: str
    summary: str
    raw: str
    decoded: dict[str, Any] | None = None


#: default bounds of one operation's exchange record (issue 11: floods do not eat memory)
MAX_EXCHANGE_MESSAGES = 1000
MAX_EXCHANGE_BYTES = 1_000_000


class ExchangeLimit:
    """The bound of one operation's exchange record: the first ``max_messages`` messages whose
    raw text adds up to at most ``max_bytes`` characters are kept; every later message is only
    counted in ``dropped`` (the result's ``droppedMessages``). A driver asks :meth:`admit`
    *before* it builds a :class:`WireMessage`, so a flood costs a counter, not memory."""

    def __init__(self, max_messages: int = MAX_EXCHANGE_MESSAGES, max_bytes: int = MAX_EXCHANGE_BYTES) -> None:
        if max_messages < 0 or max_bytes < 0:
            raise ValueError("max_messages and max_bytes must be >= 0")
        self.max_messages = max_messages
        self.max_bytes = max_bytes
        self.kept = 0
        self.kept_bytes = 0
        self.dropped = 0

    def admit(self, raw_size: int) -> bool:
        """True (and counted as kept) when a message of ``raw_size`` characters still fits;
        False (counted in ``dropped``) otherwise."""
        if self.kept >= self.max_messages or self.kept_bytes + raw_size > self.max_bytes:
            self.dropped += 1
            return False
        self.kept += 1
        self.kept_bytes += raw_size
        return True


#: what pydantic puts before the message of a ``ValueError``/``AssertionError`` raised in a validator
_VALIDATOR_PREFIXES = ("Value error, ", "Assertion failed, ")


def validation_message(message: str) -> str:
    """A validation error's message as users read it: without pydantic's ``Value error, ``
    (or ``Assertion failed, ``) in front of our own validators' words."""
    for prefix in _VALIDATOR_PREFIXES:
        if message.startswith(prefix):
            return message[len(prefix):]
    return message


def now() -> float:
    """Wall-clock seconds since the epoch, for ``WireMessage.time`` (drivers only)."""
    return time.time()


class TLSInfo(ResultModel):
    """What the TLS handshake established (RFC 8446 / RFC 5246) and who the peer claims to be.

    ``subject`` and ``issuer`` are RFC 4514 strings; ``subject_alt_names`` entries look
    like ``DNS:sip.example.com`` or ``IP:127.0.0.1``; ``not_after`` is ISO 8601 UTC.
    ``verified`` is true only when the chain and host name were checked and passed.
    """

    version: str | None = None
    cipher: str | None = None
    verified: bool = False
    subject: str | None = None
    issuer: str | None = None
    subject_alt_names: list[str] = []
    not_after: str | None = None
