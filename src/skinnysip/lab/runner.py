"""The whole lab in one object: :class:`Lab` starts the SIP registrar/proxy, the SCCP lab
call manager, the services (echo, tone, playback, conference, DTMF echo, music on hold) and
the SCCP ⇄ SIP bridge, and stops them again.

``async with Lab(settings) as lab:`` — :meth:`Lab.info` is what ``GET /api/lab`` and
``skinnysip lab`` show (addresses, demo accounts, devices, extensions), :meth:`Lab.calls`
the calls on record. Failures to start (a busy port, a refused configuration) raise
:class:`LabError` with one line. Python units: seconds.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import errno
import ipaddress
import logging
import shutil
import socket
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from skinnysip.addresses import hostport, strip_brackets
from skinnysip.lab.config import ConfigError, LabSettings
from skinnysip.lab.proxy import LabProxy
from skinnysip.net.sip_transport import SIPTransportError

if TYPE_CHECKING:
    from skinnysip.sip.identity import IdentitySigner

__all__ = ["Lab", "LabError", "self_signed_certificate"]

log = logging.getLogger("skinnysip.lab")


class LabError(Exception):
    """The lab cannot start; ``reason`` is one line for the user."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def self_signed_certificate(directory: Path, names: list[str], addresses: list[str],
                            stem: str = "lab") -> tuple[str, str]:
    """Write a self-signed certificate (EC P-256, valid one year, SAN with ``names`` as
    DNS names and ``addresses`` as IP addresses) and its key as PEM files
    ``<stem>-cert.pem``/``<stem>-key.pem`` in ``directory``; returns (cert path, key path)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0] if names else "skinnysip lab")])
    now = dt.datetime.now(dt.UTC)
    san: list[x509.GeneralName] = [x509.DNSName(n) for n in names]
    san += [x509.IPAddress(ipaddress.ip_address(strip_brackets(a))) for a in addresses]
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=365))
            .add_extension(x509.SubjectAlternativeName(san), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = directory / f"{stem}-cert.pem", directory / f"{stem}-key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    key_path.chmod(0o600)
    return str(cert_path), str(key_path)


class Lab:
    """The embedded lab (see the module docstring). ``settings`` default to the demo
    (:class:`LabSettings`). After start: ``proxy``, ``callmanager``, ``services``,
    ``bridge`` (the last three None when they could not be loaded), ``sip`` (transport →
    ``host:port``), ``sccp`` (``host:port``), ``tls_cert`` (the certificate in use)."""

    def __init__(self, settings: LabSettings | None = None) -> None:
        self.settings = settings or LabSettings()
        self.proxy: LabProxy | None = None
        self.callmanager: Any = None
        self.services: Any = None
        self.bridge: Any = None
        self.sip: dict[str, str] = {}
        self.sccp = ""
        self.tls_cert: str | None = None
        #: the STIR/SHAKEN certificate (PEM) of the lab's signatures (``stir.sign``), served at
        #: ``stir.x5u``; None when the lab does not sign
        self.stir_certificate: bytes | None = None
        self.notes: list[str] = []
        self._tmp: Path | None = None

    async def __aenter__(self) -> Lab:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def start(self) -> None:
        """Start every part. Raises :class:`LabError` (one line) and leaves nothing running."""
        try:
            await self._start()
        except BaseException:
            await self.close()
            raise

    async def _start(self) -> None:
        s = self.settings
        try:
            s.validate()
            s.check_exposure()
        except ConfigError as exc:
            raise LabError(str(exc)) from None
        usable = tuple(h for h in s.hosts if self._host_usable(strip_brackets(h)))
        if not usable:
            raise LabError(f"none of the listen addresses ({', '.join(s.hosts)}) exists on this machine")
        if usable != s.hosts:
            s = self.settings = s.with_overrides(hosts=usable)
        cert, key = s.tls_cert, s.tls_key
        if cert is None:
            self._tmp = Path(tempfile.mkdtemp(prefix="skinnysip-lab-"))
            cert, key = self_signed_certificate(self._tmp, [s.domain, "localhost"], list(s.hosts))
        self.tls_cert = cert
        self.proxy = LabProxy(s, tls_cert=cert, tls_key=key)
        if s.stir_sign:
            self.proxy.stir = self._stir_signer(s)
        try:
            self.sip = await self.proxy.start()
        except SIPTransportError as exc:
            raise LabError(f"SIP: {exc.reason}") from None
        host = strip_brackets(s.hosts[0])
        from skinnysip.lab.callmanager import LabCallManager, LabDevice, LabLine
        from skinnysip.lab.callmanager import LabConfig as CallManagerConfig

        devices = [LabDevice(d.name, [LabLine(d.line, d.line, d.name)]) for d in s.devices]
        self.callmanager = LabCallManager(CallManagerConfig(devices=devices, host=host, port=s.sccp_port))
        try:
            await self.callmanager.start()
        except OSError as exc:
            self.callmanager = None
            where = f"{hostport(host, s.sccp_port)}/tcp"
            busy = exc.errno in (98, 48)
            raise LabError(f"SCCP: cannot listen on {where}: {'address already in use' if busy else exc.strerror or exc}") from None
        self.sccp = hostport(host, self.callmanager.port)
        await self._start_services(host)
        await self._start_bridge(host)

    def _stir_signer(self, s: LabSettings) -> IdentitySigner:
        """The STIR/SHAKEN authentication service's signer (RFC 8224 §5): the configured key
        and certificate, or a new self-signed pair; :attr:`stir_certificate` is what phones
        fetch from ``stir.x5u``."""
        if s.stir_x5u is None:
            raise LabError("stir.x5u: needed to sign — the URL phones fetch the lab's certificate from "
                           "(`serve --lab` serves it at /api/lab/stir.pem and sets it)")
        from skinnysip.sip.identity import IdentityError, IdentitySigner

        cert, key = s.stir_cert, s.stir_key
        if cert is None or key is None:
            if self._tmp is None:
                self._tmp = Path(tempfile.mkdtemp(prefix="skinnysip-lab-"))
            cert, key = self_signed_certificate(self._tmp, ["skinnysip lab STI"], [], stem="lab-sti")
        try:
            signer = IdentitySigner.from_pem(Path(key).read_bytes(), s.stir_x5u, s.stir_attest)
            self.stir_certificate = Path(cert).read_bytes()
        except (OSError, IdentityError) as exc:
            raise LabError(f"stir.key: {getattr(exc, 'reason', None) or exc}") from None
        return signer

    async def _start_services(self, host: str) -> None:
        assert self.proxy is not None
        try:
            from skinnysip.lab.services import LabServices
        except ImportError as exc:
            self._note(f"services not available ({exc}); extensions answer 480")
            return
        self.services = LabServices(domain=self.settings.domain, extensions=dict(self.settings.extensions), host=host,
                                    mailboxes=self.proxy.mailboxes)
        self.services.proxy_addresses = {addr for (kind, _), addr in self.proxy.listeners.items() if kind == "udp"}
        try:
            self.proxy.services = await self.services.start()
        except OSError as exc:
            self.services = None
            raise LabError(f"services: {exc}") from None
        self.proxy.moh = self.services

    async def _start_bridge(self, host: str) -> None:
        assert self.proxy is not None
        try:
            from skinnysip.lab.bridge import SCCPBridge
        except ImportError as exc:
            self._note(f"SCCP bridge not available ({exc}); SCCP lines answer 480 to SIP callers")
            return
        udp = self.proxy.listeners[("udp", host)]
        self.bridge = SCCPBridge(callmanager=self.callmanager, proxy=udp, domain=self.settings.domain, host=host)
        try:
            self.proxy.bridge = await self.bridge.start()
        except OSError as exc:
            self.bridge = None
            raise LabError(f"SCCP bridge: {exc}") from None

    def _host_usable(self, host: str) -> bool:
        """False (with a note) when ``host`` is not an address of this machine, e.g. ``::1``
        where IPv6 is switched off; other errors (a busy port) are left to the listeners."""
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        try:
            with socket.socket(family, socket.SOCK_DGRAM) as probe:
                probe.bind((host, 0))
        except OSError as exc:
            if exc.errno in (errno.EADDRNOTAVAIL, errno.EAFNOSUPPORT):
                self._note(f"not listening on {host}: {exc.strerror or exc}")
                return False
        return True

    def _note(self, text: str) -> None:
        self.notes.append(text)
        log.info("lab: %s", text)

    async def close(self) -> None:
        """Stop every part (idempotent; never raises)."""
        for part, stop in ((self.bridge, "close"), (self.services, "close"), (self.callmanager, "stop"),
                           (self.proxy, "close")):
            if part is not None:
                with contextlib.suppress(Exception):
                    await getattr(part, stop)()
        self.bridge = self.services = self.callmanager = self.proxy = None
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None

    # -- what the interfaces show -----------------------------------------------------------
    def info(self) -> dict[str, Any]:
        """The body of ``GET /api/lab``: ``{"enabled": true, "domain", "realm", "algorithm",
        "sip": {"udp", "tcp", "tls"} ("host:port"), "sccp", "accounts": [{"user", "password"
        (only a demo password; else null), "aor"}], "devices": [{"name", "line"}],
        "extensions": {number: kind}, "listeners": ["udp 127.0.0.1:5060", …] (every
        host), "notes": [...], "stir": {"sign", "attest", "x5u"} (STIR/SHAKEN signing of the
        lab users' INVITEs)}``."""
        s = self.settings
        return {
            "enabled": True, "domain": s.domain, "realm": s.realm, "algorithm": s.algorithm,
            "sip": dict(self.sip), "sccp": self.sccp,
            "accounts": [{"user": u.user, "password": u.password if u.demo_password else None,
                          "aor": f"sip:{u.user}@{s.domain}"} for u in s.users],
            "devices": [{"name": d.name, "line": d.line} for d in s.devices],
            "extensions": dict(s.extensions),
            "listeners": [f"{t} {hostport(*addr)}" for (t, _ip), addr in
                          (self.proxy.listeners.items() if self.proxy is not None else [])],
            "notes": list(self.notes),
            "stir": {"sign": self.stir_certificate is not None, "attest": s.stir_attest if s.stir_sign else None,
                     "x5u": s.stir_x5u if s.stir_sign else None},
        }

    def calls(self) -> list[dict[str, Any]]:
        """The calls the lab's proxy handled (:meth:`LabProxy.calls`), oldest first."""
        return self.proxy.calls() if self.proxy is not None else []
