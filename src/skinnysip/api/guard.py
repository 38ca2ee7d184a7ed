"""The API as a service: bearer token, target policy, request/response size caps, per-client
rate and concurrency limits — one small ASGI middleware (:class:`ServiceGuard`) in front of
every route, configured by :class:`ServiceSettings` (``skinnysip serve`` flags and env).

What a client sees (JSON bodies ``{"success": false, "error": "…"}``):

- **401** ``WWW-Authenticate: Bearer`` (RFC 6750 §3) when the server has a token and an
  ``/api/`` request lacks ``Authorization: Bearer <token>``. ``/api/health``, the page,
  ``/docs`` and ``/openapi.json`` stay open. A browser cannot set headers on a WebSocket, so a
  WebSocket may instead offer the subprotocol ``skinnysip.bearer.<token>`` (the server selects
  it in its accept); a refused WebSocket is closed with 1008 before it is accepted (the
  handshake gets 403). A server listening beyond loopback always has a token (generated and
  printed at start unless ``--token``/``SKINNYSIP_TOKEN`` gives one); on loopback a token is
  used only when given. CORS is off: no ``Access-Control-*`` header is ever sent.
- **403** with the reason when the target policy (:mod:`skinnysip.policy`) refuses the host
  an operation would connect to (:func:`check_target`, used by the routes; the policy is also
  the active one for everything a request starts, so a phone's later connections are checked).
- **413** when the request body exceeds ``max_body`` bytes (Content-Length or counted).
- **429** ``Retry-After: <s>`` when a client (by address) exceeds ``rate`` requests
  (``limits`` syntax, e.g. ``"30/second"``; moving window; by default only beyond loopback,
  :data:`EXPOSED_RATE`) or has ``client_operations``
  operations running, or the server has ``total_operations`` running. ``/api/health`` is
  exempt from both, so it answers while the server is busy.
- Operations start at most one per ``start_interval`` (2 ms): a burst of 200 probes is started
  over 0.4 s instead of in one turn of the event loop, so ``/api/health`` keeps answering.
- **500** ``response exceeds …`` instead of an ``/api/`` response larger than
  ``max_response`` bytes (results are bounded, so this is a last line of defence).

Why our own middleware: Starlette has no body-size, concurrency or response-size limit, and
the rate-limit packages for it (slowapi) want a decorator per route; the counting itself is
the ``limits`` library's (moving-window, in memory).
"""

from __future__ import annotations

import asyncio
import hmac
import json
import os
import re
import secrets
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

from fastapi import HTTPException
from limits import parse as parse_rate
from limits.storage import MemoryStorage
from limits.strategies import MovingWindowRateLimiter

from skinnysip import policy as target_policy
from skinnysip.policy import TargetPolicy

__all__ = ["OPEN_PATHS", "WS_TOKEN_PREFIX", "ServiceGuard", "ServiceSettings", "check_target",
           "client_files_allowed"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

#: ``/api/`` paths open without a token and exempt from rate and concurrency limits (the lab's
#: STIR certificate: verifiers fetch the x5u with no token, as any STI certificate repository)
OPEN_PATHS = frozenset({"/api/health", "/api/lab/stir.pem"})
#: WebSocket subprotocol carrying the token: ``skinnysip.bearer.<token>``.
WS_TOKEN_PREFIX = "skinnysip.bearer."
#: Request paths that run an operation (counted for the concurrency limits) when POSTed.
_OPERATION_RE = re.compile(r"^/api/(sips?|sccp|phones)(/|$)")
#: the per-client request rate of a server listening beyond loopback (``limits`` syntax)
EXPOSED_RATE = "50/second"
_TOKEN_RE = re.compile(r"^[A-Za-z0-9._~+/=-]{16,256}$")


@dataclass
class ServiceSettings:
    """How the API guards itself. Sizes in bytes, ``rate`` in ``limits`` syntax
    (``"N/second"``, ``"N/minute"``…), operation counts as numbers of requests running at once.
    ``token``: the bearer token (None: no authentication). ``policy``: the target policy
    (None: no restriction). ``start_interval``: seconds between the starts of two operations
    (a burst of requests is started one by one, so the event loop keeps answering others, e.g.
    health, in between). ``client_files``: fields naming files on the server (``caFile``) are
    accepted (a loopback server's default; beyond loopback they are refused, or any client
    could probe the server's disk). ``rate``: None = no rate limit (a loopback server's default;
    :data:`EXPOSED_RATE` beyond loopback). ``token_generated``: the token was made here."""

    token: str | None = None
    policy: TargetPolicy | None = None
    max_body: int = 4 * 1024 * 1024
    max_response: int = 32 * 1024 * 1024
    rate: str | None = None
    client_operations: int = 64
    total_operations: int = 512
    start_interval: float = 0.002
    client_files: bool = True
    token_generated: bool = field(default=False, repr=False)

    def __post_init__(self) -> None:
        if self.token is not None and not _TOKEN_RE.match(self.token):
            raise ValueError("the token must be 16-256 characters of A-Z a-z 0-9 . _ ~ + / = -")
        if self.rate is not None:
            parse_rate(self.rate)  # ValueError early for a bad rate

    @classmethod
    def for_listen(cls, host: str, *, allow: Sequence[str] = (), deny: Sequence[str] = (),
                   token: str | None = None, environ: dict[str, str] | None = None,
                   **limits: Any) -> ServiceSettings:
        """The settings of a server listening on ``host``: the policy of
        :func:`skinnysip.policy.from_env`; the token from ``token`` or ``SKINNYSIP_TOKEN``,
        else generated when ``host`` is beyond loopback. Raises ``ValueError`` for a bad
        allow/deny entry or token."""
        env = os.environ if environ is None else environ
        pol = target_policy.from_env(allow, deny, listen_host=host, environ=dict(env))
        given = token or env.get("SKINNYSIP_TOKEN") or None
        exposed = not target_policy.is_loopback_bind(host)
        generated = given is None and exposed
        if exposed:
            limits.setdefault("rate", EXPOSED_RATE)
            limits.setdefault("client_files", False)
        return cls(token=secrets.token_urlsafe(32) if generated else given, policy=pol,
                   token_generated=generated, **limits)


_client_files: ContextVar[bool] = ContextVar("skinnysip_client_files", default=True)


def client_files_allowed() -> bool:
    """May a request name files on this server (``caFile``)? False beyond loopback."""
    return _client_files.get()


async def check_target(host: str, *, timeout: float = 5.0) -> None:
    """Refuse (``HTTPException`` 403 with the reason) a ``host`` the active target policy
    refuses; a name that does not resolve is left to the operation (it reports it as usual,
    and the RFC 3263 resolver checks whatever it finds)."""
    pol = target_policy.active()
    if pol is None:
        return
    try:
        await pol.resolve(host, timeout=timeout)
    except target_policy.UnresolvedTarget:
        return
    except target_policy.TargetRefused as exc:
        raise HTTPException(403, exc.reason) from None


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key.lower() == name:
            return bytes(value).decode("latin-1")
    return None


class ServiceGuard:
    """The ASGI middleware of the module docstring."""

    def __init__(self, app: ASGIApp, settings: ServiceSettings) -> None:
        self.app = app
        self.settings = settings
        self._rate = parse_rate(settings.rate) if settings.rate else None
        # the storage keeps one moving window per client address, expired as it goes
        self._limiter = MovingWindowRateLimiter(MemoryStorage()) if self._rate is not None else None
        self._running: dict[str, int] = defaultdict(int)
        self._total = 0
        self._next_start = 0.0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        files = _client_files.set(self.settings.client_files)
        try:
            with target_policy.applied(self.settings.policy):
                await self._dispatch(scope, receive, send)
        finally:
            _client_files.reset(files)

    async def _dispatch(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            await self._websocket(scope, receive, send)
        else:
            await self._http(scope, receive, send)

    # ---- WebSocket ----------------------------------------------------------------------

    async def _websocket(self, scope: Scope, receive: Receive, send: Send) -> None:
        token = self.settings.token
        if token is None:
            await self.app(scope, receive, send)
            return
        offered = [p for p in scope.get("subprotocols", ()) if p.startswith(WS_TOKEN_PREFIX)]
        by_protocol = any(self._matches(p[len(WS_TOKEN_PREFIX):]) for p in offered)
        if not (by_protocol or self._bearer_ok(scope)):
            await send({"type": "websocket.close", "code": 1008, "reason": "bearer token required"})
            return
        if not by_protocol:
            await self.app(scope, receive, send)
            return
        chosen = offered[0]

        async def send_selecting(message: Message) -> None:
            if message["type"] == "websocket.accept" and not message.get("subprotocol"):
                message = {**message, "subprotocol": chosen}
            await send(message)

        await self.app(scope, receive, send_selecting)

    # ---- HTTP ---------------------------------------------------------------------------

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope.get("path", "")
        if not path.startswith("/api/") or path in OPEN_PATHS:
            await self.app(scope, receive, send)
            return
        client = (scope.get("client") or ("?", 0))[0]
        if self._rate is not None and self._limiter is not None and not self._limiter.hit(self._rate, client):
            stats = self._limiter.get_window_stats(self._rate, client)
            wait = max(1, int(stats.reset_time - time.time() + 0.999))
            await _error(send, 429, f"too many requests from {client} (at most {self.settings.rate})",
                         {"retry-after": str(wait)})
            return
        if self.settings.token is not None and not self._bearer_ok(scope):
            await _error(send, 401, "missing or wrong bearer token (Authorization: Bearer <token>)",
                         {"www-authenticate": 'Bearer realm="skinnysip"'})
            return
        length = _header(scope, b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.settings.max_body):
            await _error(send, 413, f"request body larger than {self.settings.max_body} bytes")
            return
        body, too_big = await _read_body(receive, self.settings.max_body)
        if too_big:
            await _error(send, 413, f"request body larger than {self.settings.max_body} bytes")
            return
        operation = scope.get("method") == "POST" and _OPERATION_RE.match(path) is not None
        if operation:
            if self._total >= self.settings.total_operations:
                await _error(send, 429, f"the server is running its limit of {self.settings.total_operations} operations",
                             {"retry-after": "1"})
                return
            if self._running[client] >= self.settings.client_operations:
                await _error(send, 429, f"{client} has {self.settings.client_operations} operations running (the limit)",
                             {"retry-after": "1"})
                return
            self._total += 1
            self._running[client] += 1
        try:
            if operation:
                await self._paced()
            await self.app(scope, _replay(body, receive), _capped(send, self.settings.max_response))
        finally:
            if operation:
                self._total -= 1
                self._running[client] -= 1
                if self._running[client] <= 0:
                    del self._running[client]

    async def _paced(self) -> None:
        """Wait for this operation's start slot (``start_interval`` after the previous one)."""
        loop = asyncio.get_running_loop()
        now = loop.time()
        slot = max(now, self._next_start)
        self._next_start = slot + self.settings.start_interval
        if slot > now:
            await asyncio.sleep(slot - now)

    def _matches(self, given: str) -> bool:
        token = self.settings.token
        return token is not None and hmac.compare_digest(given.encode(), token.encode())

    def _bearer_ok(self, scope: Scope) -> bool:
        value = _header(scope, b"authorization") or ""
        scheme, _, given = value.partition(" ")
        return scheme.lower() == "bearer" and self._matches(given.strip())


async def _read_body(receive: Receive, limit: int) -> tuple[bytes, bool]:
    """The whole request body (at most ``limit`` bytes; True when it was longer)."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":  # disconnect
            return b"".join(chunks), False
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return b"", True
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks), False


def _replay(body: bytes, receive: Receive) -> Receive:
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


def _capped(send: Send, cap: int) -> Send:
    """``send`` refusing a response larger than ``cap`` (500 instead, when the length is
    known at the start; otherwise the body is cut at ``cap``)."""
    size = 0
    refused = False

    async def capped(message: Message) -> None:
        nonlocal size, refused
        if message["type"] == "http.response.start":
            length = dict(message.get("headers", ())).get(b"content-length")
            if length is not None and int(length) > cap:
                refused = True
                await _error(send, 500, f"response of {int(length)} bytes exceeds the server's cap of {cap} bytes")
                return
        elif message["type"] == "http.response.body":
            if refused:
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > cap:
                refused = True
                keep = len(chunk) - (size - cap)
                await send({"type": "http.response.body", "body": chunk[:keep], "more_body": False})
                return
        await send(message)

    return capped


async def _error(send: Send, status: int, error: str, headers: dict[str, str] | None = None) -> None:
    body = json.dumps({"success": False, "error": error}).encode()
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    raw += [(k.encode(), v.encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body, "more_body": False})
