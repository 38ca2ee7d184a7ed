"""Fetching the certificate an ``Identity`` header names (RFC 8224 §6.2.2 step 2; SHAKEN's
``x5u``): one HTTP(S) GET, bounded in time and size, through the target policy, cached.

Only ``http`` and ``https`` URLs are fetched; the host is vetted by the active
:class:`~skinnysip.policy.TargetPolicy` first (a plain-HTTP fetch then connects to the address
that was vetted, not to a second lookup's); redirects are not followed; a body over
:data:`~skinnysip.sip.identity.MAX_CERTIFICATE_BYTES` or a status other than 200 is an error.
The HTTP client is the standard library's (``http.client``), run in a worker thread.
"""

from __future__ import annotations

import asyncio
import http.client
import ssl
import time
from collections import OrderedDict
from urllib.parse import urlsplit

from skinnysip import policy as target_policy
from skinnysip.addresses import strip_brackets
from skinnysip.sip.identity import MAX_CERTIFICATE_BYTES

__all__ = ["CertificateFetchError", "CertificateCache", "fetch_certificate", "FETCH_TIMEOUT"]

#: how long one fetch may take, s (Kamailio's secsipid waits 5 s by default)
FETCH_TIMEOUT = 3.0


class CertificateFetchError(Exception):
    """The certificate could not be fetched; ``reason`` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _get(scheme: str, host: str, address: str, port: int, target: str, timeout: float,
         ca_file: str | None) -> bytes:
    conn: http.client.HTTPConnection
    if scheme == "https":
        context = ssl.create_default_context(cafile=ca_file)
        conn = http.client.HTTPSConnection(host, port, timeout=timeout, context=context)
    else:
        conn = http.client.HTTPConnection(address, port, timeout=timeout)
    try:
        conn.request("GET", target, headers={"Host": host if port in (80, 443) else f"{host}:{port}",
                                             "Accept": "application/pem-certificate-chain, application/pkix-cert, */*",
                                             "User-Agent": "skinnysip"})
        response = conn.getresponse()
        if response.status != 200:
            where = response.getheader("Location")
            raise CertificateFetchError(f"HTTP {response.status} {response.reason}"
                                        + (f" (a redirect to {where}, not followed)" if where else ""))
        body = response.read(MAX_CERTIFICATE_BYTES + 1)
        if len(body) > MAX_CERTIFICATE_BYTES:
            raise CertificateFetchError(f"more than {MAX_CERTIFICATE_BYTES} bytes")
        return body
    except (OSError, ValueError, http.client.HTTPException) as exc:  # ValueError: a host IDNA refuses
        raise CertificateFetchError(f"{type(exc).__name__}: {exc}") from exc
    finally:
        conn.close()


async def fetch_certificate(url: str, *, timeout: float = FETCH_TIMEOUT, ca_file: str | None = None) -> bytes:
    """GET ``url`` (``http:`` or ``https:``; the server certificate of an https one is
    verified, with ``ca_file`` if given) within ``timeout`` s; the body (at most
    :data:`~skinnysip.sip.identity.MAX_CERTIFICATE_BYTES`). Raises
    :class:`CertificateFetchError` for another scheme, a host the target policy refuses or
    that does not resolve, a connection or TLS failure, a status other than 200, a body too
    large, or the deadline."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise CertificateFetchError(f"bad URL {url!r}: {exc}") from exc
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https") or not parts.hostname:
        raise CertificateFetchError(f"{url!r} is not an http(s) URL")
    host = strip_brackets(parts.hostname)
    port = port or (443 if scheme == "https" else 80)
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    deadline = time.monotonic() + timeout
    try:
        policy = target_policy.active()
        if policy is not None:
            addresses = await policy.resolve(host, timeout=timeout)
        else:
            addresses = await target_policy.lookup(host, timeout=timeout)
    except target_policy.TargetRefused as exc:
        raise CertificateFetchError(exc.reason) from exc
    if not addresses:
        raise CertificateFetchError(f"{host} has no address")
    left = deadline - time.monotonic()
    if left <= 0:
        raise CertificateFetchError(f"no answer within {timeout:g} s")
    try:
        return await asyncio.wait_for(asyncio.to_thread(_get, scheme, host, addresses[0], port, target, left, ca_file),
                                      left)
    except TimeoutError:
        raise CertificateFetchError(f"no answer within {timeout:g} s") from None


class CertificateCache:
    """Certificates by URL, kept ``ttl`` s, at most ``size`` of them (the oldest go first).
    :meth:`get` fetches what it does not hold; a failure is not kept."""

    def __init__(self, size: int = 32, ttl: float = 3600.0) -> None:
        self.size = size
        self.ttl = ttl
        self._entries: OrderedDict[str, tuple[float, bytes]] = OrderedDict()

    async def get(self, url: str, *, timeout: float = FETCH_TIMEOUT, ca_file: str | None = None) -> bytes:
        """The body at ``url``, from the cache or :func:`fetch_certificate` (whose
        :class:`CertificateFetchError` it raises)."""
        now = time.monotonic()
        entry = self._entries.get(url)
        if entry is not None and entry[0] > now:
            self._entries.move_to_end(url)
            return entry[1]
        body = await fetch_certificate(url, timeout=timeout, ca_file=ca_file)
        self._entries[url] = (time.monotonic() + self.ttl, body)
        self._entries.move_to_end(url)
        while len(self._entries) > self.size:
            self._entries.popitem(last=False)
        return body
