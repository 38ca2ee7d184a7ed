"""DTLS-SRTP: SRTP keys from a DTLS handshake on the media port itself (RFC 5763, RFC 5764).

Instead of sending keys in SDP (SDES, RFC 4568), each side puts the fingerprint of its
(self-signed) certificate in SDP (``a=fingerprint``, RFC 8122) and says which side opens the
DTLS association (``a=setup``, RFC 4145/8842: ``active`` is the DTLS client). The two sides
then run a DTLS 1.2 handshake over the RTP (and, without ``rtcp-mux``, the RTCP) port; the
``use_srtp`` extension (RFC 5764 §4.1.2) picks the SRTP protection profile, and the keys come
out of the TLS exporter ``EXTRACTOR-dtls_srtp`` (RFC 5764 §4.2). The handshake is
authenticated by comparing the peer's certificate with the fingerprint its SDP announced
(RFC 5763 §6.6); a mismatch fails the association and no media flows.

The DTLS itself is OpenSSL's, through pyOpenSSL on memory BIOs: :class:`DTLSAssociation` owns
no socket — it is given the datagrams that arrive (the media stream demultiplexes them by
their first octet, RFC 7983 §7: 20..63 is DTLS) and returns the datagrams to send; its
owner calls :meth:`DTLSAssociation.handle_timeout` when :meth:`DTLSAssociation.timeout`
says (OpenSSL's retransmission timer: 1 s, doubling). pyOpenSSL is imported only when an
association or certificate is made.
"""

from __future__ import annotations

import contextlib
import datetime
import hmac
import secrets
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from cryptography import x509

__all__ = ["Certificate", "DTLSAssociation", "EARLY_RESENDS", "FINGERPRINT_HASHES", "HANDSHAKE_TIMEOUT",
           "SRTP_PROFILES", "SRTPKeys", "default_certificate", "fingerprint_matches", "is_dtls"]

#: SRTP protection profiles we offer in ``use_srtp`` (RFC 5764 §4.1.2, RFC 7714 §14.2), in our
#: order of preference, each → (our SDES suite name for libsrtp, master key octets, master
#: salt octets).
SRTP_PROFILES: dict[str, tuple[str, int, int]] = {
    "SRTP_AES128_CM_SHA1_80": ("AES_CM_128_HMAC_SHA1_80", 16, 14),
    "SRTP_AEAD_AES_128_GCM": ("AEAD_AES_128_GCM", 16, 12),
    "SRTP_AEAD_AES_256_GCM": ("AEAD_AES_256_GCM", 32, 12),
    "SRTP_AES128_CM_SHA1_32": ("AES_CM_128_HMAC_SHA1_32", 16, 14),
}
#: The hash functions of ``a=fingerprint`` we can check (RFC 8122 §5, the "Hash Function
#: Textual Names" registry; md2 and md5 are not accepted).
FINGERPRINT_HASHES = ("sha-1", "sha-224", "sha-256", "sha-384", "sha-512")
#: Seconds a handshake may take in all before the association fails (OpenSSL's own
#: retransmissions double from 1 s).
HANDSHAKE_TIMEOUT = 20.0
#: Largest datagram we send: DTLS records are packed into datagrams up to this size (a
#: certificate flight of ours is well below it; RFC 6347 §4.1.1 allows several records in one).
MAX_DATAGRAM = 1200
#: Seconds after the first at which a client sends its first flight (the ClientHello) again
#: while nothing has come back, before OpenSSL's own 1 s timer: an offerer may drop a
#: ClientHello that reaches it before the SDP answer does (baresip 1.0 does), and a second
#: lost here would cost a second of audio. WebRTC stacks start their timer at 50 ms.
EARLY_RESENDS = (0.1, 0.3, 0.6)
#: Octets of received DTLS we accept before the handshake ends (a bound on OpenSSL's input).
MAX_HANDSHAKE_INPUT = 64 * 1024

_EXPORTER_LABEL = b"EXTRACTOR-dtls_srtp"  # RFC 5764 §4.2
_DTLS1_2_VERSION = 0xFEFD  # OpenSSL's DTLS1_2_VERSION (pyOpenSSL does not name it)
#: the record content types (RFC 6347 §4.1) fed to OpenSSL in each state: no application
#: data before the handshake ends (DTLS-SRTP has none, and OpenSSL would fail on it)
_ACCEPTED = {"handshaking": (20, 21, 22), "connected": (21, 22, 23)}
_RECORD_HEADER = 13  # DTLS record: type, version (2), epoch (2), sequence (6), length (2)


def is_dtls(data: bytes) -> bool:
    """True for a DTLS record by its first octet, 20..63 (RFC 7983 §7)."""
    return bool(data) and 20 <= data[0] <= 63


def _hash(algorithm: str) -> Any:
    from cryptography.hazmat.primitives import hashes

    table: dict[str, Any] = {"sha-1": hashes.SHA1(), "sha-224": hashes.SHA224(), "sha-256": hashes.SHA256(),
                             "sha-384": hashes.SHA384(), "sha-512": hashes.SHA512()}
    return table.get(algorithm.lower())


def _fingerprint_of(cert: x509.Certificate, algorithm: str) -> str | None:
    hash_ = _hash(algorithm)
    if hash_ is None:
        return None
    return ":".join(f"{octet:02X}" for octet in cert.fingerprint(hash_))


def fingerprint_matches(cert: x509.Certificate, fingerprints: Sequence[tuple[str, str]]) -> bool:
    """True when ``cert`` matches one of ``fingerprints`` ((hash function name, colon-separated
    hex), as ``a=fingerprint`` gives them, RFC 8122 §5) whose hash is one of
    :data:`FINGERPRINT_HASHES`; hex compared without regard to case, in constant time."""
    for algorithm, value in fingerprints:
        ours = _fingerprint_of(cert, algorithm)
        if ours is not None and hmac.compare_digest(ours.encode(), value.strip().upper().encode()):
            return True
    return False


class Certificate:
    """A self-signed certificate and its private key for DTLS-SRTP (RFC 5763 §5: the SDP
    fingerprint, not a CA, vouches for it). :meth:`generate` makes an ECDSA P-256 one."""

    def __init__(self, certificate: x509.Certificate, private_key: Any) -> None:
        self.certificate = certificate
        self.private_key = private_key
        self._fingerprints: dict[str, str] = {}  # by hash name: every SDP we send carries one

    @classmethod
    def generate(cls, common_name: str = "skinnysip", days: int = 30) -> Certificate:
        """A new key pair (ECDSA P-256) and a certificate for it valid from a day ago for
        ``days`` days, with a random serial number."""
        from cryptography import x509 as x509_
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import NameOID

        key = ec.generate_private_key(ec.SECP256R1())
        name = x509_.Name([x509_.NameAttribute(NameOID.COMMON_NAME, common_name)])
        now = datetime.datetime.now(datetime.UTC)
        cert = (x509_.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
                .serial_number(secrets.randbits(63) + 1)
                .not_valid_before(now - datetime.timedelta(days=1))
                .not_valid_after(now + datetime.timedelta(days=days))
                .sign(key, hashes.SHA256()))
        return cls(cert, key)

    def fingerprint(self, algorithm: str = "sha-256") -> str:
        """The certificate's fingerprint as ``a=fingerprint`` carries it: upper-case hex octets
        joined by colons (RFC 8122 §5). ``ValueError`` for a hash not in
        :data:`FINGERPRINT_HASHES`."""
        value = self._fingerprints.get(algorithm) or _fingerprint_of(self.certificate, algorithm)
        if value is None:
            raise ValueError(f"fingerprint hash {algorithm[:20]!r}: one of {', '.join(FINGERPRINT_HASHES)}")
        self._fingerprints[algorithm] = value
        return value


_default: Certificate | None = None
_default_lock = threading.Lock()


def default_certificate() -> Certificate:
    """This process's certificate (made on first use and kept, so that the fingerprint a
    peer sees stays the same from call to call)."""
    global _default
    with _default_lock:
        if _default is None:
            _default = Certificate.generate()
        return _default


def _records(data: bytes) -> list[bytes]:
    """``data`` (what OpenSSL wrote to its memory BIO) cut into whole DTLS records."""
    records, offset = [], 0
    while offset + _RECORD_HEADER <= len(data):
        end = offset + _RECORD_HEADER + int.from_bytes(data[offset + 11:offset + 13], "big")
        records.append(data[offset:end])
        offset = end
    if offset < len(data):
        records.append(data[offset:])
    return records


def _datagrams(data: bytes) -> list[bytes]:
    """Records packed into datagrams of at most :data:`MAX_DATAGRAM` octets (a larger record
    goes alone)."""
    out: list[bytes] = []
    current = b""
    for record in _records(data):
        if current and len(current) + len(record) > MAX_DATAGRAM:
            out.append(current)
            current = b""
        current += record
    if current:
        out.append(current)
    return out


@dataclass(frozen=True)
class SRTPKeys:
    """What a finished handshake gives: the SDES ``suite`` name of the negotiated profile,
    ``tx_key`` our master key || master salt, ``rx_key`` the peer's (RFC 5764 §4.2)."""

    suite: str
    tx_key: bytes
    rx_key: bytes


class DTLSAssociation:
    """One DTLS association of DTLS-SRTP (RFC 5764 §4), without a socket (its timers read the
    monotonic clock, as OpenSSL's own do).

    ``role``: ``"client"`` (our SDP said ``a=setup:active``) or ``"server"`` (``passive``);
    ``fingerprints``: the peer's ``a=fingerprint`` values, (hash name, hex) — its certificate
    must match one; ``certificate``: ours (default: :func:`default_certificate`); ``profiles``:
    the SRTP profiles offered in ``use_srtp`` (names of :data:`SRTP_PROFILES`, default all, in
    its order); ``handshake_timeout``: seconds the handshake may take (default
    :data:`HANDSHAKE_TIMEOUT`). ``ValueError`` for a bad role, profile or timeout.

    :meth:`start` returns the first flight (the client's ClientHello; nothing for a server),
    :meth:`datagram_received` feeds a received DTLS datagram and returns what to send back,
    :meth:`timeout` / :meth:`handle_timeout` run the retransmission timer. ``state`` is
    ``"handshaking"``, ``"connected"`` (``keys`` set), ``"failed"`` (``error`` says why) or
    ``"closed"`` (the peer sent close_notify). Nothing here raises on bad input: a broken or
    foreign datagram is counted in ``bad_datagrams`` or fails the handshake.
    """

    def __init__(self, role: str, fingerprints: Sequence[tuple[str, str]],
                 certificate: Certificate | None = None, *, profiles: Sequence[str] | None = None,
                 handshake_timeout: float = HANDSHAKE_TIMEOUT) -> None:
        from OpenSSL import SSL

        if role not in ("client", "server"):
            raise ValueError(f"DTLS role {role!r}: client or server")
        chosen = tuple(SRTP_PROFILES) if profiles is None else tuple(profiles)
        unknown = [p for p in chosen if p not in SRTP_PROFILES]
        if unknown or not chosen:
            raise ValueError(f"SRTP profiles {unknown or chosen}: of {', '.join(SRTP_PROFILES)}")
        if not 0 < handshake_timeout <= 120:
            raise ValueError(f"handshake_timeout {handshake_timeout} s: within 0..120 s")
        self.role = role
        self.handshake_timeout = handshake_timeout
        self.fingerprints = tuple(fingerprints)
        self.certificate = certificate or default_certificate()
        self.state = "handshaking"
        self.error: str | None = None
        self.keys: SRTPKeys | None = None
        self.profile: str | None = None
        self.bad_datagrams = 0
        self.datagrams_received = 0
        self.datagrams_sent = 0
        self._input = 0
        self._started = time.monotonic()
        self._first_flight: list[bytes] = []
        self._early: list[float] = []  # when to send the first flight again (monotonic)
        self._SSL = SSL
        ctx = SSL.Context(SSL.DTLS_METHOD)
        ctx.set_min_proto_version(_DTLS1_2_VERSION)
        ctx.set_options(SSL.OP_NO_QUERY_MTU)
        ctx.use_certificate(self.certificate.certificate)
        ctx.use_privatekey(self.certificate.private_key)
        ctx.set_cipher_list(b"ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"
                            b"ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"
                            b"ECDHE-ECDSA-AES128-SHA:ECDHE-RSA-AES128-SHA:AES128-SHA")
        # the peer's certificate is self-signed: the SDP fingerprint checks it, not a CA
        ctx.set_verify(SSL.VERIFY_PEER | SSL.VERIFY_FAIL_IF_NO_PEER_CERT, lambda *args: True)
        ctx.set_tlsext_use_srtp(":".join(chosen).encode())
        self._conn = SSL.Connection(ctx, None)
        self._conn.set_ciphertext_mtu(MAX_DATAGRAM)
        if role == "client":
            self._conn.set_connect_state()
        else:
            self._conn.set_accept_state()

    # ---- driving -----------------------------------------------------------------------

    def start(self) -> list[bytes]:
        """The first flight: a client's ClientHello; nothing for a server (it waits)."""
        if self.role == "client" and self.state == "handshaking":
            self._handshake()
            self._first_flight = self._pending()
            now = time.monotonic()
            self._early = [now + delay for delay in EARLY_RESENDS]
            return list(self._first_flight)
        return self._pending()

    def datagram_received(self, data: bytes) -> list[bytes]:
        """Feed one received DTLS datagram; the datagrams to send back (a flight, or a
        retransmission OpenSSL decided on)."""
        self.datagrams_received += 1
        if self.state in ("failed", "closed"):
            return []
        if not is_dtls(data) or len(data) < _RECORD_HEADER or data[0] not in _ACCEPTED[self.state]:
            # not a record OpenSSL should see now: a stray or forged one is dropped, not fatal
            # (RFC 6347 §4.1.2.7: invalid records SHOULD be discarded silently)
            self.bad_datagrams += 1
            return []
        self._early = []  # the peer heard us: OpenSSL's timer alone from now on
        if self.state == "handshaking":
            self._input += len(data)
            if self._input > MAX_HANDSHAKE_INPUT:
                self._fail(f"more than {MAX_HANDSHAKE_INPUT} octets of DTLS without a finished handshake")
                return []
        self._conn.bio_write(data)
        if self.state == "handshaking":
            self._handshake()
        else:
            self._read_after_handshake()
        return self._pending()

    def timeout(self) -> float | None:
        """Seconds until :meth:`handle_timeout` is due, None when no timer runs."""
        if self.state != "handshaking":
            return None
        left = self.handshake_timeout - (time.monotonic() - self._started)
        try:
            timer = self._conn.DTLSv1_get_timeout()
        except self._SSL.Error:
            timer = None
        due = [left] + ([timer] if timer is not None else []) + \
            ([self._early[0] - time.monotonic()] if self._early else [])
        return max(0.0, min(due))

    def handle_timeout(self) -> list[bytes]:
        """Run the retransmission timer (ours for the first flight, :data:`EARLY_RESENDS`, then
        OpenSSL's); the datagrams to resend. After ``handshake_timeout`` the association fails."""
        if self.state != "handshaking":
            return []
        now = time.monotonic()
        if now - self._started >= self.handshake_timeout:
            self._fail(f"no DTLS handshake within {self.handshake_timeout:g} s")
            return []
        if self._early and now >= self._early[0]:
            del self._early[0]
            self.datagrams_sent += len(self._first_flight)
            return list(self._first_flight)
        try:
            self._conn.DTLSv1_handle_timeout()
        except self._SSL.Error as exc:
            self._fail(f"DTLS handshake failed: {_describe(exc)}")
        return self._pending()

    def close(self) -> list[bytes]:
        """close_notify to send (when the association is up); the association is closed."""
        if self.state == "connected":
            with contextlib.suppress(self._SSL.Error):
                self._conn.shutdown()
        self.state = "closed" if self.state != "failed" else self.state
        return self._pending()

    # ---- internals ---------------------------------------------------------------------

    def _handshake(self) -> None:
        SSL = self._SSL
        try:
            self._conn.do_handshake()
        except SSL.WantReadError:
            return
        except SSL.Error as exc:
            self._fail(f"DTLS handshake failed: {_describe(exc)}")
            return
        self._connected()

    def _connected(self) -> None:
        cert = self._conn.get_peer_certificate(as_cryptography=True)
        if cert is None:
            self._fail("the peer sent no certificate in the DTLS handshake")
            return
        if not fingerprint_matches(cert, self.fingerprints):
            theirs = ", ".join(f"{h} {v[:23]}…" for h, v in self.fingerprints) or "none"
            self._fail(f"the peer's DTLS certificate does not match its SDP a=fingerprint ({theirs}; "
                       f"the certificate's sha-256 is {_fingerprint_of(cert, 'sha-256')})")
            with contextlib.suppress(self._SSL.Error):
                self._conn.shutdown()  # close_notify: the peer's association ends too
            return
        profile = self._conn.get_selected_srtp_profile().decode("ascii", "replace")
        if profile not in SRTP_PROFILES:
            self._fail(f"the DTLS handshake agreed no SRTP profile we offered ({profile or 'none'})")
            return
        suite, key_len, salt_len = SRTP_PROFILES[profile]
        try:
            material = self._conn.export_keying_material(_EXPORTER_LABEL, 2 * (key_len + salt_len))
        except self._SSL.Error as exc:
            self._fail(f"no SRTP keys from the DTLS exporter: {_describe(exc)}")
            return
        client_key, server_key = material[:key_len], material[key_len:2 * key_len]
        client_salt = material[2 * key_len:2 * key_len + salt_len]
        server_salt = material[2 * key_len + salt_len:]
        client, server = client_key + client_salt, server_key + server_salt
        self.keys = SRTPKeys(suite, client, server) if self.role == "client" else SRTPKeys(suite, server, client)
        self.profile = profile
        self.state = "connected"

    def _read_after_handshake(self) -> None:
        """Drain what arrived after the handshake: a close_notify closes; application data
        (none is defined for DTLS-SRTP) is read and dropped; a retransmitted Finished makes
        OpenSSL resend its own."""
        SSL = self._SSL
        for _ in range(16):
            try:
                self._conn.recv(2048)
            except SSL.WantReadError:
                return
            except SSL.ZeroReturnError:
                self.state = "closed"
                return
            except SSL.Error:
                self.bad_datagrams += 1
                return

    def _pending(self) -> list[bytes]:
        out = b""
        while True:
            try:
                chunk = self._conn.bio_read(65536)
            except self._SSL.WantReadError:
                break
            if not chunk:
                break
            out += chunk
        datagrams = _datagrams(out) if out else []
        self.datagrams_sent += len(datagrams)
        return datagrams

    def _fail(self, why: str) -> None:
        self.state = "failed"
        self.error = why

    def report(self) -> dict[str, Any]:
        """``{"role", "state", "profile", "error", "datagrams_sent", "datagrams_received"}``."""
        return {"role": self.role, "state": self.state, "profile": self.profile, "error": self.error,
                "datagrams_sent": self.datagrams_sent, "datagrams_received": self.datagrams_received}


def _describe(exc: Exception) -> str:
    """OpenSSL's error queue as one short line."""
    args = getattr(exc, "args", ())
    if args and isinstance(args[0], list) and args[0]:
        parts = [str(item[-1]) for item in args[0] if isinstance(item, tuple) and item]
        if parts:
            return "; ".join(parts)[:200]
    return (str(exc) or type(exc).__name__)[:200]
