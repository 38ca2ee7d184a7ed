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
