"""STIR/SHAKEN peers (RFC 8224 Identity header, RFC 8225 PASSporT, RFC 8588 SHAKEN) on
127.0.0.1: signing credentials (:func:`stir_credentials`, :func:`stir_ca`), a certificate
repository for ``x5u``/``info`` URLs (:func:`cert_server`), ``secsipidx`` 1.2.0 as signer and
checker (:func:`secsipidx_sign`, :func:`secsipidx_check`), and Kamailio 5.6 with its
``secsipid`` module (libsecsipid 1.2.0) as registrar, proxy and STIR authentication and
verification service: :func:`kamailio_stir` yields a :class:`StirPeer`.

The Kamailio, on free 127.0.0.1 ports (UDP and TCP), domain ``skinnysip.test`` (an alias;
``@127.0.0.1`` reaches the same users: usrloc keys on the user part only):

* registrar WITHOUT authentication: REGISTER → ``save("location")``;
* stateful proxy: a new INVITE or MESSAGE goes to the R-URI user's binding
  (``lookup("location")``, ``t_relay``; INVITEs record-routed), ``404 Not Found`` for a user
  without one; in-dialog requests follow the route set (``loose_route``); CANCEL and ACK go by
  their transaction; retransmissions are absorbed (``t_precheck_trans``, ``t_newtran``), so an
  INVITE is checked or signed once;
* verification service (``check`` "url", "file" or "cert") for an initial INVITE that has an
  Identity header: ``secsipid_check_identity("")`` — the certificate fetched from the header's
  ``info`` URL, on EVERY check (no ``cache_dir``) — or ``secsipid_check_identity(creds.pubkey)``
  / ``(creds.cert)``. Failure: ``438 Invalid Identity Header`` with ``X-Secsipid-Rc: <code>``
  (the INVITE is not relayed). Success: relayed with ``X-Identity-Checked: ok`` appended and
  the Identity unchanged;
* authentication service (``sign``): an initial INVITE without Identity gets
  ``secsipid_add_identity("$fU", "$rU", attest, "", x5u, creds.key)``. secsipid adds the
  Identity header ONLY (no Date: seen with ``add_date=False``); the Date RFC 8224 §4 asks for is
  added by this configuration (``add_date``, when there is none), just before the Identity.
  The user parts go in as they are (``+12155550100`` and even ``alice`` are signed verbatim,
  no RFC 8224 §8.3 canonicalisation);
* MESSAGE and in-dialog requests are neither checked nor signed.

What was seen on the wire (raw UDP and TCP sockets, every case below run, before any skinnysip
code used this). An INVITE without Identity from ``sip:12155550100@skinnysip.test`` to the
registered ``12155550111`` as the callee got it (``check="url"``; Kamailio appends Date and
Identity after the last header, i.e. after Content-Length; the Identity is ONE line of ~600
characters, cut here at the dots and semicolons)::

    INVITE sip:12155550111@127.0.0.1:48574 SIP/2.0
    Record-Route: <sip:127.0.0.1:36560;lr=on;ftag=368f1f67>
    Via: SIP/2.0/UDP 127.0.0.1:36560;branch=z9hG4bK60c7.a34ccaa4d286ac9cf63b9a19f77bc01d.0
    Via: SIP/2.0/UDP 127.0.0.1:56901;branch=z9hG4bKe2c548fae75145049c075625d28147ca
    Max-Forwards: 69
    From: <sip:12155550100@skinnysip.test>;tag=368f1f67
    To: <sip:12155550111@skinnysip.test>
    Call-ID: 57a95f6fcdcf4e05a8ff8e4349f2b509
    CSeq: 1 INVITE
    Contact: <sip:12155550100@127.0.0.1:56901>
    Content-Type: application/sdp
    Content-Length: 110
    Date: Sat, 05 Dec 2026 18:49:25 GMT
    Identity: eyJhbGciOiJFUzI1NiIsInBwdCI6InNoYWtlbiIsInR5cCI6InBhc3Nwb3J0IiwieDV1IjoiaHR0cDovLzEyNy4wLjA
    uMTo0MDI5MS9jZXJ0LnBlbSJ9.eyJhdHRlc3QiOiJBIiwiZGVzdCI6eyJ0biI6WyIxMjE1NTU1MDExMSJdfSwiaWF0IjoxNzk2
    NDk2NTY1LCJvcmlnIjp7InRuIjoiMTIxNTU1NTAxMDAifSwib3JpZ2lkIjoiNjFlYWYwNDEtYmJhZC00ZjM0LTg5MDEtY2EzOGZj
    NGFiYzZjIn0.PhwSHW1KEhNPuvSUZW3lxcv4XTLk3-yqmo9z4DSArx272l_oLoeLnSI45ljaofS-_ISoA04rvS7AwFj-L0F0Og
    ;info=<http://127.0.0.1:40291/cert.pem>;alg=ES256;ppt=shaken

The PASSporT (base64url, no padding; signature 64 bytes r||s) decodes to the header
``{"alg":"ES256","ppt":"shaken","typ":"passport","x5u":"http://127.0.0.1:40291/cert.pem"}`` and
the payload ``{"attest":"A","dest":{"tn":["12155550111"]},"iat":1796496565,"orig":{"tn":
"12155550100"},"origid":"61eaf041-bbad-4f34-8901-ca38fc4abc6c"}`` (compact JSON, keys in this
order, ``origid`` a random UUID). ``secsipidx -check`` accepts it. A rejected INVITE::

    SIP/2.0 438 Invalid Identity Header
    Via: SIP/2.0/UDP 127.0.0.1:56901;branch=z9hG4bKb79934e6a24a443493a69488a5c7cfd8
    From: <sip:12155550100@skinnysip.test>;tag=30baefe8
    To: <sip:12155550111@skinnysip.test>;tag=872e80e26a9f576cd5d360d8b360737e-1aed3010
    Call-ID: eccc030c4d4c49f987ab79ab90ee64c0
    CSeq: 1 INVITE
    X-Secsipid-Rc: -251
    Server: kamailio (5.6.3 (x86_64/linux))
    Content-Length: 0

The codes seen (``X-Secsipid-Rc``; :meth:`StirPeer.checks` has 1 for a pass), in all three
check modes unless said, ``expire`` 60 (names in :data:`SECSIPID_RC`):

* -251 signature invalid: payload tampered (orig or dest TN changed), or signed by another key;
* -232 iat expired: an ``iat`` 61 s old (55 s passes): the test is ``now > iat + expire``; an
  ``iat`` an hour in the FUTURE passes (secsipidx);
* -301: a bare JWT without ``;info=…;alg=…;ppt=…``;
* -1: the compact form ``y:`` only. Kamailio's parser knows ``y`` as Identity (so
  ``is_present_hf("Identity")`` is true and this peer neither signs nor passes it), but
  ``secsipid_check_identity`` reads only headers NAMED ``Identity``: "not found", -1;
* "url" only: -403 the ``info`` URL answered 404; -402 nothing listening there (refused, at
  once); a certificate or a bare public key served there both work (``cert_verify`` 0);
* -205: the PASSporT's ``x5u`` differs from the ``info`` parameter (also in the file modes,
  where the URL is not fetched); -303 ``ppt`` other than shaken, -302 ``alg`` other than
  ES256 (secsipidx);
* ``cert_verify=4, ca_file=creds.ca`` ("url", :func:`stir_ca`): the CA-signed certificate
  passes, a self-signed one -101 (unknown authority), a bare public key at the URL -102 (a
  certificate is needed then); ``cert_verify=1`` and an expired certificate -103 (secsipidx).

Answers: the orig/dest TNs are NOT compared with From/To (a PASSporT for 19995550000 →
19995550001 passed on an INVITE from 12155550100 to 12155550111); the Date header is not
looked at (RFC 8224 §6.2's Date freshness is left to the callee); ``iat`` freshness IS checked
against ``expire``. ``ppt=shaken`` and ``ppt="shaken"`` both pass; spaces and a folded header
(CRLF SP before ``;info``) pass (libsecsipid strips all white space). With two Identity
headers the first that passes wins (tampered + good, in either order → relayed). "url" fetches
the certificate before it reads the payload (an expired PASSporT is fetched for too); the file
modes check ``iat`` first. ``keyPath``/``-fpubkey`` take the bare public key (``BEGIN PUBLIC
KEY``) or the certificate (libsecsipid tries PKIX, then X.509); the signing key may be PKCS#8
(``BEGIN PRIVATE KEY``, what this module writes) or SEC1 (``BEGIN EC PRIVATE KEY``). A plain
``http://127.0.0.1:PORT/cert.pem`` works as ``x5u`` (Go's net/http; nothing else needed).

secsipidx 1.2.0: ``secsipidx -sign-full -o ORIG -d DEST -a A -x5u URL -k KEY [-orig-id ID]``
prints the whole value and a newline, ``JWT;info=<URL>;alg=ES256;ppt=shaken`` (Kamailio's form
exactly), exit 0; it ignores ``-iat`` (always now), so a chosen ``iat`` goes through ``-sign``
(JWT only, ``origid`` "" unless given) plus the parameters added here. ``secsipidx -check
-identity VALUE -fpubkey KEY -expire N``: ``ok``, exit 0; or ``error message: <why>`` (none for
-301) and ``not-ok``, exit status the code modulo 256 — tampered payload or wrong key:
``error message: failed to verify - origid (<origid>) (-251) ECDSA verification failed``, exit 5;
expired ``iat``: ``error message: expired token``, exit 24; ``-expire`` defaults to 0 (a token a
second old is stale). ``-fpubkey`` may be an http(s) URL (fetched) as well as a file.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import functools
import http.server
import ipaddress
import re
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from sip_peers import (
    SANE_REQUEST,
    KamailioControl,
    kamailio_head,
    relay_by_transaction,
    start_kamailio,
    stop_group,
)

from peertools import free_port, require

#: the registrar's domain (an alias of the server; 127.0.0.1 works too: usrloc keys on the user)
REALM = "skinnysip.test"

#: libsecsipid's return codes (secsipid/secsipid.go of secsipidx 1.2.0), the values of
#: ``X-Secsipid-Rc`` and of :meth:`StirPeer.checks`; a negative code leaves ``secsipidx`` as
#: its exit status modulo 256 (see :func:`secsipid_rc`)
SECSIPID_RC = {
    0: "OK",
    -1: "generic error (Kamailio: no header named Identity)",
    -101: "CertInvalid (chain verification failed)",
    -102: "CertInvalidFormat",
    -103: "CertExpired",
    -104: "CertBeforeValidity",
    -105: "CertProcessing",
    -106: "CertNoCAFile",
    -107: "CertReadCAFile",
    -114: "CertInvalidEC",
    -151: "PrvKeyInvalid",
    -152: "PrvKeyInvalidFormat/InvalidEC",
    -201: "JSONHdrParse",
    -202: "JSONHdrAlg",
    -203: "JSONHdrPpt",
    -204: "JSONHdrTyp",
    -205: "JSONHdrX5u (x5u of the PASSporT differs from the info parameter)",
    -231: "JSONPayloadParse",
    -232: "JSONPayloadIATExpired",
    -251: "JSONSignatureInvalid",
    -252: "JSONSignatureHashing",
    -253: "JSONSignatureSize",
    -254: "JSONSignatureFailure",
    -301: "SIPHdrParse",
    -302: "SIPHdrAlg",
    -303: "SIPHdrPpt/SIPHdrInfo",
    -304: "SIPHdrEmpty",
    -401: "HTTPInvalidURL",
    -402: "HTTPGet",
    -403: "HTTPStatusCode",
    -404: "HTTPReadBody",
    -451: "FileRead",
}


def secsipid_rc(exit_status: int) -> int:
    """The libsecsipid code behind a ``secsipidx -check`` exit status (Go's ``os.Exit(-232)``
    leaves 24 = -232 mod 256): 0, a code of :data:`SECSIPID_RC`, or -exit_status if none fits."""
    if exit_status == 0:
        return 0
    for code in SECSIPID_RC:
        if code < 0 and code % 256 == exit_status:
            return code
    return -exit_status


# --- credentials -------------------------------------------------------------------------------


@dataclass
class StirCredentials:
    """A STI signing key and its certificate, as PEM files (see :func:`stir_credentials`)."""

    key: Path  # EC P-256 private key, PKCS#8 PEM ("BEGIN PRIVATE KEY"); libsecsipid takes SEC1 too
    cert: Path  # the key's X.509 certificate (self-signed, or signed by ``ca``)
    pubkey: Path  # the bare public key, SubjectPublicKeyInfo PEM ("BEGIN PUBLIC KEY")
    ca: Path | None = None  # with stir_ca(): the root CA certificate that signed ``cert``
    ca_key: Path | None = None


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _validity(days: int) -> tuple[dt.datetime, dt.datetime]:
    now = dt.datetime.now(dt.UTC)
    if days > 0:
        return now - dt.timedelta(minutes=5), now + dt.timedelta(days=days)
    # days <= 0: a certificate whose validity ended |days| days (and a minute) ago
    end = now + dt.timedelta(days=days, minutes=-1)
    return end - dt.timedelta(days=30), end


def _certificate(subject: str, issuer: str, public_key: ec.EllipticCurvePublicKey,
                 signer: ec.EllipticCurvePrivateKey, days: int, *extensions: tuple[x509.ExtensionType, bool]
                 ) -> x509.Certificate:
    not_before, not_after = _validity(days)
    builder = (x509.CertificateBuilder().subject_name(_name(subject)).issuer_name(_name(issuer))
               .public_key(public_key).serial_number(x509.random_serial_number())
               .not_valid_before(not_before).not_valid_after(not_after))
    for extension, critical in extensions:
        builder = builder.add_extension(extension, critical=critical)
    return builder.sign(signer, hashes.SHA256())


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _write(directory: Path, key: ec.EllipticCurvePrivateKey, cert: x509.Certificate) -> StirCredentials:
    creds = StirCredentials(key=directory / "key.pem", cert=directory / "cert.pem",
                            pubkey=directory / "pubkey.pem")
    creds.key.write_bytes(_pem_key(key))
    creds.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    creds.pubkey.write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM,
                                                           serialization.PublicFormat.SubjectPublicKeyInfo))
    return creds


def stir_credentials(directory: Path, *, name: str = "skinnysip test STI", days: int = 30) -> StirCredentials:
    """A new EC P-256 key with a self-signed certificate (``days`` long) in ``directory``
    (created if need be): ``key.pem`` (PKCS#8), ``cert.pem``, ``pubkey.pem``. ``days`` <= 0: a
    certificate already expired (only a check with ``cert_verify`` bit 1 notices: -103)."""
    directory.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    san = x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                       x509.IPAddress(ipaddress.ip_address("127.0.0.1"))])
    return _write(directory, key, _certificate(name, name, key.public_key(), key, days, (san, False)))


def stir_ca(directory: Path, *, name: str = "skinnysip test STI", days: int = 30) -> StirCredentials:
    """Like :func:`stir_credentials`, but ``cert.pem`` is signed by a new root CA (``ca.pem``,
    ``ca-key.pem``: ``creds.ca``, ``creds.ca_key``): for checks with ``cert_verify=4,
    ca_file=creds.ca`` (no intermediate; no RFC 8226 TNAuthList, which libsecsipid ignores)."""
    directory.mkdir(parents=True, exist_ok=True)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = f"{name} root CA"
    usage = x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                          data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
                          encipher_only=False, decipher_only=False)
    ca_cert = _certificate(ca_name, ca_name, ca_key.public_key(), ca_key, max(days, 1) + 1,
                           (x509.BasicConstraints(ca=True, path_length=0), True), (usage, True),
                           (x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = _certificate(name, ca_name, key.public_key(), ca_key, days,
                        (x509.BasicConstraints(ca=False, path_length=None), True),
                        (x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False))
    creds = _write(directory, key, cert)
    creds.ca, creds.ca_key = directory / "ca.pem", directory / "ca-key.pem"
    creds.ca.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    creds.ca_key.write_bytes(_pem_key(ca_key))
    return creds


# --- the certificate repository (x5u) ------------------------------------------------------------


@dataclass
class CertServer:
    """A running :func:`cert_server`: ``url(name)`` of a file, ``requests`` every path asked
    for (GET or HEAD, in order, served or not)."""

    base: str  # http://127.0.0.1:PORT (no trailing slash)
    port: int
    directory: Path
    requests: list[str] = field(default_factory=list)

    def url(self, name: str) -> str:
        return f"{self.base}/{name.lstrip('/')}"

    def wait_request(self, path: str, timeout: float = 5.0) -> None:
        """Wait (bounded) until ``path`` (e.g. "/cert.pem") has been asked for."""
        deadline = time.monotonic() + timeout
        while path not in self.requests:
            if time.monotonic() > deadline:
                raise AssertionError(f"nobody fetched {path} within {timeout} s; requests: {self.requests}")
            time.sleep(0.02)


@contextlib.contextmanager
def cert_server(directory: Path, host: str = "127.0.0.1") -> Iterator[CertServer]:
    """Serve the files of ``directory`` over plain HTTP on ``host`` (a free port), in a daemon
    thread; stopped at the end."""
    server_info = CertServer(base="", port=0, directory=directory)

    class Handler(http.server.SimpleHTTPRequestHandler):
        def send_head(self):  # type: ignore[no-untyped-def]
            server_info.requests.append(self.path)
            return super().send_head()

        def log_message(self, format: str, *args: object) -> None:
            pass

    httpd = http.server.ThreadingHTTPServer((host, 0), functools.partial(Handler, directory=str(directory)))
    httpd.daemon_threads = True
    server_info.port = int(httpd.server_address[1])
    server_info.base = f"http://{host}:{server_info.port}"
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True,
                              name="stir-cert-server")
    thread.start()
    try:
        yield server_info
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)


# --- secsipidx -----------------------------------------------------------------------------------


def secsipidx_sign(creds: StirCredentials, orig_tn: str, dest_tn: str, x5u: str, *, attest: str = "A",
                   orig_id: str | None = None, iat: int | None = None) -> str:
    """A full Identity header value (what follows ``Identity: ``) signed by ``secsipidx`` with
    ``creds.key``: ``JWT;info=<x5u>;alg=ES256;ppt=shaken``. ``iat`` (Unix time; now by default)
    set: the PASSporT is made by ``secsipidx -sign -iat`` (``-sign-full`` always uses now) and
    the parameters are appended here the way ``-sign-full`` writes them."""
    binary = require("secsipidx")
    common = ["-o", orig_tn, "-d", dest_tn, "-a", attest, "-x5u", x5u, "-k", str(creds.key)]
    if iat is None:
        args = [binary, "-sign-full", *common, *(["-orig-id", orig_id] if orig_id else [])]
    else:
        args = [binary, "-sign", *common, "-orig-id", orig_id or str(uuid.uuid4()), "-iat", str(iat)]
    proc = subprocess.run(args, capture_output=True, text=True, timeout=10)
    value = proc.stdout.strip()
    if proc.returncode != 0 or value.count(".") < 2 or value.startswith("error"):
        raise RuntimeError(f"secsipidx failed ({proc.returncode}): {proc.stdout}{proc.stderr}")
    if iat is not None:
        value += f";info=<{x5u}>;alg=ES256;ppt=shaken"
    return value


def secsipidx_check(identity_value: str, creds: StirCredentials | None = None, *,
                    pubkey: str | Path | None = None, expire: int = 60, cert_verify: int = 0,
                    ca_file: Path | None = None) -> tuple[int, str]:
    """``secsipidx -check`` of an Identity header value with ``creds.pubkey`` (or ``pubkey``: a
    file — bare key or certificate — or an http(s) URL it fetches): (exit status, output).
    Exit 0 and output ``ok``; otherwise the status is the libsecsipid code modulo 256
    (:func:`secsipid_rc` maps it back) and the output ends ``not-ok``. ``expire``: seconds a
    PASSporT's ``iat`` stays valid (secsipidx's own default is 0: stale after one second)."""
    binary = require("secsipidx")
    key = pubkey if pubkey is not None else (creds.pubkey if creds is not None else None)
    if key is None:
        raise ValueError("secsipidx_check needs creds or pubkey")
    args = [binary, "-check", "-identity", identity_value, "-fpubkey", str(key), "-expire", str(expire)]
    if cert_verify:
        args += ["-cert-verify", str(cert_verify)]
    if ca_file is not None:
        args += ["-ca-file", str(ca_file)]
    proc = subprocess.run(args, capture_output=True, text=True, timeout=10)
    return proc.returncode, proc.stdout + proc.stderr


# --- Kamailio ------------------------------------------------------------------------------------

_MODULES = ("kex", "corex", "tm", "tmx", "sl", "rr", "pv", "maxfwd", "textops", "siputils", "xlog", "sanity",
            "ctl", "usrloc", "registrar", "secsipid")


def _module_dir() -> Path:
    # not sip_peers._module_dir: that one wants tls.so; this peer wants secsipid (+ secsipid_proc)
    for candidate in sorted(Path("/usr/lib").glob("*/kamailio/modules")):
        if (candidate / "secsipid.so").exists() and (candidate / "secsipid_proc.so").exists():
            return candidate
    raise RuntimeError("kamailio secsipid module not found; install kamailio-secsipid-modules")


def available() -> bool:
    """Whether Kamailio with its secsipid module and ``secsipidx`` are installed: for a ``skipif``."""
    if shutil.which("kamailio") is None or shutil.which("secsipidx") is None:
        return False
    try:
        _module_dir()
    except RuntimeError:
        return False
    return True


def _q(value: str | Path) -> str:
    """A Kamailio script string literal's content."""
    return str(value).replace("\\", "\\\\").replace('"', '\\"')


def _config(*, host: str, udp: int, tcp: int, workdir: Path, creds: StirCredentials, x5u: str, check: str,
            sign: bool, expire: int, attest: str, add_date: bool, require_identity: bool, http_timeout: int,
            cert_verify: int, ca_file: Path | None) -> str:
    key_arg = {"url": "", "file": _q(creds.pubkey), "cert": _q(creds.cert)}.get(check, "")
    libopts = ""
    if cert_verify:
        libopts += f'modparam("secsipid", "libopt", "CertVerify={cert_verify}")\n'
    if ca_file is not None:
        libopts += f'modparam("secsipid", "libopt", "CertCAFile={_q(ca_file)}")\n'
    verify = f"""        if (is_present_hf("Identity")) {{
            secsipid_check_identity("{key_arg}");
            $var(rc) = $rc;
            xlog("L_NOTICE", "STIR-CHECK rc=$var(rc) ci=$ci\\n");
            if ($var(rc) < 0) {{
                append_to_reply("X-Secsipid-Rc: $var(rc)\\r\\n");
                t_reply("438", "Invalid Identity Header");
                exit;
            }}
            append_hf("X-Identity-Checked: ok\\r\\n");
            return;
        }}
""" if check != "off" else ""
    date = """            if (!is_present_hf("Date")) {
                append_hf("Date: $utimef(%a, %d %b %Y %H:%M:%S GMT)\\r\\n");
            }
""" if add_date else ""
    authenticate = f"""        if (!is_present_hf("Identity")) {{
{date}            secsipid_add_identity("$fU", "$rU", "{_q(attest)}", "", "{_q(x5u)}", "{_q(creds.key)}");
            $var(rc) = $rc;
            xlog("L_NOTICE", "STIR-SIGN rc=$var(rc) ci=$ci\\n");
            if ($var(rc) < 0) {{
                append_to_reply("X-Secsipid-Rc: $var(rc)\\r\\n");
                t_reply("500", "Identity Signing Failed");
                exit;
            }}
            return;
        }}
""" if sign else ""
    required = """        if (!is_present_hf("Identity")) {
            t_reply("428", "Use Identity Header");
            exit;
        }
""" if require_identity and not sign else ""
    return f"""{kamailio_head(host, udp, tcp)}alias="{REALM}"
alias="localhost:{udp}"
alias="localhost:{tcp}"
tcp_connection_lifetime=60
server_signature=yes
mpath="{_module_dir()}/"

{chr(10).join(f'loadmodule "{m}.so"' for m in _MODULES)}

modparam("ctl", "binrpc", "unix:{workdir}/kamailio_ctl")
modparam("xlog", "buf_size", 16384)
modparam("usrloc", "db_mode", 0)
modparam("registrar", "max_expires", 3600)
modparam("registrar", "min_expires", 10)
modparam("rr", "enable_full_lr", 1)
modparam("secsipid", "expire", {expire})
modparam("secsipid", "timeout", {http_timeout})
{libopts}
request_route {{
    xlog("L_NOTICE", "IN-REQUEST $rm $si:$sp $(mb{{s.encode.base64}})\\n");
{SANE_REQUEST}    if (is_method("OPTIONS") && ($rU == $null || $rU == "ping")) {{
        append_to_reply("Allow: INVITE, ACK, CANCEL, OPTIONS, BYE, REGISTER, MESSAGE\\r\\n");
        sl_send_reply("200", "OK");
        exit;
    }}
    # retransmissions of a request being handled (the check may be fetching a certificate)
    if (!is_method("ACK")) {{
        if (t_precheck_trans()) {{
            t_check_trans();
            exit;
        }}
        t_check_trans();
    }}
{relay_by_transaction()}    if (is_method("ACK")) {{
        exit;
    }}
    if (is_method("REGISTER")) {{
        if (!save("location")) {{
            sl_reply_error();
        }}
        exit;
    }}
    if (!t_newtran()) {{
        sl_reply_error();
        exit;
    }}
    if (is_method("INVITE")) {{
        route(STIR);
        record_route();
    }}
    if (!lookup("location")) {{
        t_reply("404", "Not Found");
        exit;
    }}
    xlog("L_NOTICE", "lookup -> $ru $du\\n");
    t_relay();
    exit;
}}

# RFC 8224: verification service for an INVITE with Identity, authentication service for one
# without
route[STIR] {{
{verify}{authenticate}{required}}}

# every request relayed, whole (after the lumps: with the Identity added), for StirPeer.sent()
onsend_route {{
    if (is_request()) {{
        xlog("L_NOTICE", "OUT-REQUEST $rm $(snd(buf){{s.encode.base64}})\\n");
    }}
}}
"""


@dataclass
class StirPeer(KamailioControl):
    """A running :func:`kamailio_stir`: where it listens, its settings, its log."""

    x5u: str
    check: str
    sign: bool
    expire: int

    def wait_registered(self, user: str, timeout: float = 10.0) -> list[str]:
        """Wait (bounded) until ``user`` has a binding; its Contacts."""
        deadline = time.monotonic() + timeout
        while True:
            found = self.contacts(user)
            if found:
                return found
            if time.monotonic() > deadline:
                raise AssertionError(f"{user} did not register with the STIR server within {timeout} s")
            time.sleep(0.1)

    def received(self, method: str = "INVITE") -> list[str]:
        """Every request of ``method`` that reached the server so far, whole, in order."""
        return [base64.b64decode(m.group(2)).decode(errors="replace")
                for m in re.finditer(r"IN-REQUEST (\S+) \S+ (\S+)", self.log_text()) if m.group(1) == method]

    def sent(self, method: str = "INVITE") -> list[str]:
        """Every request of ``method`` the server sent (relayed) so far, whole as sent, in order."""
        return [base64.b64decode(m.group(2)).decode(errors="replace")
                for m in re.finditer(r"OUT-REQUEST (\S+) (\S+)", self.log_text()) if m.group(1) == method]

    def checks(self) -> list[int]:
        """The return code of every verification so far (1 passed, < 0 a libsecsipid code)."""
        return [int(m) for m in re.findall(r"STIR-CHECK rc=(-?\d+)", self.log_text())]

    def signs(self) -> list[int]:
        """The return code of every ``secsipid_add_identity`` so far (1 done, < 0 failed)."""
        return [int(m) for m in re.findall(r"STIR-SIGN rc=(-?\d+)", self.log_text())]


@contextlib.contextmanager
def kamailio_stir(creds: StirCredentials, x5u: str, *, host: str = "127.0.0.1",
                  check: Literal["url", "file", "cert", "off"] = "url", sign: bool = True, expire: int = 60,
                  attest: str = "A", add_date: bool = True, require_identity: bool = False,
                  http_timeout: int = 3, cert_verify: int = 0, ca_file: Path | None = None,
                  timeout: float = 15.0) -> Iterator[StirPeer]:
    """Start the STIR Kamailio described in this module on free ``host`` UDP and TCP ports;
    stop it (and remove its files) at the end.

    ``check``: how an initial INVITE's Identity is verified — "url": the certificate fetched
    from the header's ``info`` URL; "file": against ``creds.pubkey``; "cert": against
    ``creds.cert``; "off": not at all. ``sign``: an initial INVITE without Identity gets one
    (``secsipid_add_identity("$fU", "$rU", attest, "", x5u, creds.key)``), and a ``Date``
    header first when it has none and ``add_date``. ``require_identity`` (without ``sign``): an
    INVITE without Identity → 428. ``expire``: secsipid's ``expire`` (seconds an ``iat`` stays
    valid). ``http_timeout``: secsipid's ``timeout`` for the certificate fetch (seconds).
    ``cert_verify``/``ca_file``: libsecsipid's CertVerify/CertCAFile (1 validity dates, 4 the
    chain to ``ca_file``). ``timeout``: for it to start; a port taken meanwhile makes it start
    again on others (three tries)."""
    binary = require("kamailio")
    require("secsipidx")
    if check not in ("url", "file", "cert", "off"):
        raise ValueError(f"check must be url, file, cert or off, not {check!r}")
    workdir = Path(tempfile.mkdtemp(prefix="skinnysip-kamailio-stir-"))
    log_file = workdir / "kamailio.log"
    cfg = workdir / "kamailio.cfg"
    proc: subprocess.Popen[bytes] | None = None
    try:
        for attempt in range(3):
            udp = free_port(socket.SOCK_DGRAM, host)
            tcp = free_port(socket.SOCK_STREAM, host)
            cfg.write_text(_config(host=host, udp=udp, tcp=tcp, workdir=workdir, creds=creds, x5u=x5u,
                                   check=check, sign=sign, expire=expire, attest=attest, add_date=add_date,
                                   require_identity=require_identity, http_timeout=http_timeout,
                                   cert_verify=cert_verify, ca_file=ca_file))
            proc = start_kamailio(binary, cfg, log_file, host, tcp, timeout, what="STIR", last=attempt == 2)
            if proc is not None:
                break
        yield StirPeer(host=host, udp_port=udp, tcp_port=tcp, realm=REALM, log_file=str(log_file),
                       ctl_socket=f"unix:{workdir}/kamailio_ctl", workdir=workdir, x5u=x5u, check=check,
                       sign=sign, expire=expire)
    finally:
        if proc is not None:
            stop_group(proc)
        shutil.rmtree(workdir, ignore_errors=True)

