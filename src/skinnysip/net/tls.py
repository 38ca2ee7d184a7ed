"""TLS client contexts and handshake reports, shared by the SIP and SCCP drivers.

Verification is on by default (system trust store, or ``ca_file``); ``verify=False``
accepts any certificate but still reports what the peer presented.
"""

from __future__ import annotations

import ssl

from skinnysip.result import TLSInfo


def client_context(verify: bool = True, ca_file: str | None = None) -> ssl.SSLContext:
    """Build a client ``SSLContext``.

    ``verify=True``: certificate chain and host name are checked against ``ca_file`` (a PEM
    bundle) or, without it, the system store. ``verify=False``: nothing is checked.
    Raises ``OSError``/``ssl.SSLError`` if ``ca_file`` cannot be read.
    """
    if verify:
        ctx = ssl.create_default_context(cafile=ca_file)
    else:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    return ctx


def server_context(cert_file: str, key_file: str | None = None) -> ssl.SSLContext:
    """A server ``SSLContext`` with the PEM certificate (chain) ``cert_file`` and private
    key ``key_file`` (or the key inside ``cert_file``). TLS 1.2 or newer; clients are not
    asked for certificates. Raises ``OSError``/``ssl.SSLError`` if the files do not load."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cert_file, key_file)
    return ctx


def describe(ssl_object: ssl.SSLObject | ssl.SSLSocket | None, verified: bool) -> TLSInfo:
    """Report version, cipher and the peer certificate of an established TLS session."""
    if ssl_object is None:
        return TLSInfo()
    cipher = ssl_object.cipher()
    info = TLSInfo(
        version=ssl_object.version(),
        cipher=cipher[0] if cipher else None,
        verified=verified,
    )
    der = ssl_object.getpeercert(binary_form=True)
    if not der:
        return info
    # imported here: only a TLS handshake needs it, and it costs ~40 ms of CLI start-up
    from cryptography import x509

    try:
        cert = x509.load_der_x509_certificate(der)
    except ValueError:
        return info
    info.subject = cert.subject.rfc4514_string()
    info.issuer = cert.issuer.rfc4514_string()
    info.not_after = cert.not_valid_after_utc.isoformat()
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        san = None
    if san is not None:
        names = [f"DNS:{n}" for n in san.get_values_for_type(x509.DNSName)]
        names += [f"IP:{ip}" for ip in san.get_values_for_type(x509.IPAddress)]
        names += [f"URI:{u}" for u in san.get_values_for_type(x509.UniformResourceIdentifier)]
        info.subject_alt_names = names
    return info


def verification_error(exc: BaseException) -> str:
    """A one-line, human-readable reason for a failed TLS handshake."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"TLS certificate verification failed: {exc.verify_message or exc.reason}"
    if isinstance(exc, ssl.SSLError):
        return f"TLS handshake failed: {exc.reason or exc}"
    return f"TLS handshake failed: {exc}"
