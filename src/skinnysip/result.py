"""Shared shapes for operation results: the wire trace and the camelCase JSON of a result.

Results are plain dataclasses (:class:`Result`): building them costs no validation and
importing them no pydantic, so a command that prints one (``skinnysip sip options --json``)
starts quickly. ``to_api()`` turns a result into exactly the HTTP API's response body
(camelCase keys, JSON types), and the CLI's ``--json`` prints the same dict, so no interface
re-shapes a result. The API describes these shapes in its OpenAPI document with pydantic
models made from the dataclasses (:func:`skinnysip.models.api_model`); request bodies (the
API's, and :class:`skinnysip.probes.sccp.SCCPRequest`) are pydantic models
(:class:`skinnysip.models.ResultModel`).
"""

from __future__ import annotations

import dataclasses
import enum
import math
import time
from typing import Any, ClassVar, Literal


def camel(name: str) -> str:
    """A Python field name as the JSON key the API uses: ``status_code`` → ``statusCode``,
    ``subject_alt_names`` → ``subjectAltNames`` (pydantic's ``to_camel`` for our names)."""
    if "_" not in name.strip("_"):
        return name
    first, *rest = name.split("_")
    return first + "".join(part[:1].upper() + part[1:] for part in rest)


#: per dataclass: its fields as (Python name, JSON key)
_KEYS: dict[type, tuple[tuple[str, str], ...]] = {}


def to_json(value: Any) -> Any:
    """``value`` as JSON types, the way the API sends it: a dataclass → a dict with camelCase
    keys (:func:`camel`), lists/tuples/sets → lists, dict values converted, enums → their
    value, bytes → UTF-8 text, NaN/±inf → None; str, int, float, bool and None as they are."""
    if value is None or isinstance(value, (str, bool, int)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, (list, tuple, set, frozenset)):
        return [to_json(v) for v in value]
    if isinstance(value, dict):
        return {k: to_json(v) for k, v in value.items()}
    cls = type(value)
    keys = _KEYS.get(cls)
    if keys is None and dataclasses.is_dataclass(value):
        keys = _KEYS[cls] = tuple((f.name, camel(f.name)) for f in dataclasses.fields(value))
    if keys is not None:
        return {key: to_json(getattr(value, name)) for name, key in keys}
    if isinstance(value, enum.Enum):
        return to_json(value.value)
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    raise TypeError(f"{cls.__name__} is not a JSON result type")


class Result:
    """Base of result dataclasses: ``to_api()`` gives the JSON-ready dict (camelCase keys)
    that the HTTP API answers with and ``--json`` prints."""

    def to_api(self) -> dict[str, Any]:
        """Return the JSON-ready dict (camelCase keys) that the API and ``--json`` emit."""
        out: dict[str, Any] = to_json(self)
        return out


@dataclasses.dataclass(eq=True)
class WireMessage(Result):
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

    #: read by pydantic where an API body holds messages (``POST /api/pcap``): fields it does
    #: not know are ignored, whatever the body's own setting (a plain dict: no pydantic import)
    __pydantic_config__: ClassVar[dict[str, Any]] = {"extra": "ignore"}


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


@dataclasses.dataclass(eq=True)
class TLSInfo(Result):
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
    subject_alt_names: list[str] = dataclasses.field(default_factory=list)
    not_after: str | None = None
