"""A phone's STIR/SHAKEN roles (RFC 8224, RFC 8588): the authentication service that signs
our INVITEs and the verification service that checks the ``Identity`` of INVITEs we are
sent. The protocol is :mod:`skinnysip.sip.identity`; the certificate fetch
:mod:`skinnysip.net.identity_fetch`; this module joins them to an account's settings.
"""

from __future__ import annotations

import email.utils
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from skinnysip.sip.identity import (
    ATTESTATIONS,
    IdentityCheck,
    IdentityError,
    IdentitySigner,
    certificate_url,
    load_certificates,
    signed_party,
    verify_identity,
)
from skinnysip.sip.message import Request
from skinnysip.sip.uri import uri_of

if TYPE_CHECKING:
    from skinnysip.net.identity_fetch import CertificateCache

__all__ = ["IdentityService"]


def _read(value: str, what: str) -> bytes:
    """PEM given as it is (text starting ``-----BEGIN``) or as a file's path (at most 1 MiB read)."""
    if value.lstrip().startswith("-----BEGIN"):
        return value.encode("utf-8", "replace")
    try:
        return Path(value).read_bytes()[:1 << 20]
    except OSError as exc:
        raise ValueError(f"{what}: cannot read {value}: {exc.strerror or exc}") from exc


class IdentityService:
    """The account's STIR/SHAKEN settings, checked and loaded (``ValueError`` for a file that
    cannot be read or used, an attestation level not A/B/C, a key without its ``x5u``).
    ``key``, ``certificate`` and ``ca`` are PEM files' paths, or the PEM text itself:

    ``key``/``x5u``/``attest``: sign our INVITEs (:meth:`sign`); ``certificate``: a PEM file
    whose certificate verifies every ``Identity`` we get (no fetch); ``fetch``: else fetch
    the certificate the ``Identity`` names (http/https, :data:`~skinnysip.net.identity_fetch.FETCH_TIMEOUT` s, through the
    target policy, cached); ``ca``: trust anchors the certificate must chain to;
    ``required``: an INVITE whose identity does not verify is refused (:meth:`refusal`)."""

    def __init__(self, *, key: str | None = None, x5u: str | None = None, attest: str = "A",
                 certificate: str | None = None, fetch: bool = False, ca: str | None = None,
                 required: bool = False) -> None:
        self.signer: IdentitySigner | None = None
        if attest not in ATTESTATIONS:
            raise ValueError(f"identity_attest: {attest!r} is not one of {', '.join(ATTESTATIONS)}")
        if key is not None or x5u is not None:
            if key is None or x5u is None:
                raise ValueError("identity_key and identity_x5u go together (the key signs, x5u names its certificate)")
            try:
                self.signer = IdentitySigner.from_pem(_read(key, "identity_key"), x5u, attest)
            except IdentityError as exc:
                raise ValueError(f"identity_key: {exc.reason}") from exc
        self.certificate: bytes | None = None
        if certificate is not None:
            self.certificate = _read(certificate, "identity_certificate")
            try:
                load_certificates(self.certificate)
            except IdentityError as exc:
                raise ValueError(f"identity_certificate: {exc.reason}") from exc
        self.roots: list[Any] | None = None
        if ca is not None:
            try:
                self.roots = load_certificates(_read(ca, "identity_ca"))
            except IdentityError as exc:
                raise ValueError(f"identity_ca: {exc.reason}") from exc
        self.fetch = fetch
        self.required = required
        self._cache: CertificateCache | None = None  # made on the first fetch

    @classmethod
    def for_account(cls, account: Any) -> IdentityService:
        """The service of a :class:`~skinnysip.phone.sip_phone.SIPAccount`'s ``identity_*``
        settings (``ValueError`` as :meth:`__init__`)."""
        return cls(key=account.identity_key, x5u=account.identity_x5u, attest=account.identity_attest,
                   certificate=account.identity_certificate, fetch=account.identity_fetch, ca=account.identity_ca,
                   required=account.identity_required)

    def sign(self, from_uri: str, to_uri: str, now: float | None = None) -> list[tuple[str, str]]:
        """``Date`` and ``Identity`` header fields for a new INVITE from ``from_uri`` to
        ``to_uri`` (RFC 8224 §5: the Date is the PASSporT's ``iat``); [] without a key."""
        if self.signer is None:
            return []
        return self.signer.header_fields(signed_party(from_uri), signed_party(to_uri),
                                         time.time() if now is None else now)

    async def verify(self, request: Request) -> IdentityCheck | None:
        """The check of the request's ``Identity`` (RFC 8224 §6.2; with several, the first
        that verifies, else the first one's failure); None when it carries none."""
        values = request.headers.get_all("Identity")
        if not values:
            return None
        from_uri = uri_of(request.headers.get("From"))
        to_uri = uri_of(request.headers.get("To"))
        date = _date(request.headers.get("Date"))
        first: IdentityCheck | None = None
        for value in values[:4]:  # bounded: a request with many is not worth more work
            certificate, unavailable = await self._certificate(value)
            check = verify_identity(value, from_uri=from_uri, to_uri=to_uri, now=time.time(),
                                    certificate=certificate, roots=self.roots, date=date, unavailable=unavailable)
            if check.verified:
                return check
            first = first or check
        return first

    async def _certificate(self, value: str) -> tuple[bytes | None, str]:
        if self.certificate is not None:
            return self.certificate, ""
        url = certificate_url(value)
        if url is None:
            return None, "no certificate URL (neither x5u nor info)"
        if not self.fetch:
            return None, f"the certificate at {url} was not fetched (fetching is off: identity_fetch)"
        from skinnysip.net.identity_fetch import CertificateCache, CertificateFetchError

        if self._cache is None:
            self._cache = CertificateCache()
        try:
            return await self._cache.get(url), ""
        except CertificateFetchError as exc:
            return None, f"the certificate at {url} could not be fetched: {exc.reason}"

    def refusal(self, check: IdentityCheck | None) -> int | None:
        """The response code an INVITE with ``check`` is refused with when an identity is
        ``required`` (428 without one, else the failure's RFC 8224 §13.2 code); None to let
        it ring."""
        if not self.required:
            return None
        if check is None:
            return 428
        return None if check.verified else (check.code or 438)


def _date(value: str | None) -> float | None:
    """A Date header field's time (RFC 3261 §20.17), s since the epoch; None when absent or
    malformed."""
    if not value:
        return None
    try:
        return email.utils.parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
