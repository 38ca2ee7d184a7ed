"""The lab's configuration: one TOML file (``tomllib``) → :class:`LabSettings`.

Every key is optional; the defaults are the demo the README promises::

    domain = "lab.skinnysip"          # SIP domain; the digest realm defaults to it
    realm = "lab.skinnysip"
    algorithm = "MD5"                 # digest: "MD5", "SHA-256" or ["SHA-256", "MD5"] (both offered; qop auth)
    hosts = ["127.0.0.1", "::1"]      # listen addresses (IPv4 and IPv6 loopback)

    [ports]
    sip = 5060                        # UDP and TCP
    sips = 5061                       # TLS
    sccp = 2000

    [tls]                             # a self-signed certificate is made at start without these
    cert = "/path/cert.pem"
    key = "/path/key.pem"

    [registrar]                       # seconds
    min_expires = 10
    max_expires = 3600
    default_expires = 3600
    nonce_lifetime = 300
    flow_timer = 120                  # Flow-Timer for SIP outbound over TCP/TLS (RFC 5626 §6)
    flow_timer_udp = 29               # … and over UDP (NAT bindings live shorter)

    [[users]]
    user = "1001"
    password = "demo1001"
    display_name = "Demo 1001"        # optional
    algorithm = "SHA-256"             # optional: this user's digest algorithm(s), else the lab's

    [[devices]]
    name = "SEP001122334455"
    line = "2001"

    [stir]                            # STIR/SHAKEN authentication service (RFC 8224, RFC 8588)
    sign = true                       # sign each INVITE of an authenticated lab user (attest A)
    attest = "A"
    x5u = "http://127.0.0.1:8080/api/lab/stir.pem"   # default under ``serve``: its own URL
    key = "/path/sti-key.pem"         # EC P-256; without key and cert both are made at start
    cert = "/path/sti-cert.pem"
    [extensions]
    600 = "echo"                      # kinds: echo tone playback conference dtmf-echo voicemail

A bad file raises :class:`ConfigError` whose message names the key (``users[1].password:
missing``). With a demo password (``demo<user>``) the lab refuses to listen beyond loopback
(:meth:`LabSettings.check_exposure`).
"""

from __future__ import annotations

import ipaddress
import re
import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from skinnysip.addresses import strip_brackets

__all__ = [
    "ALGORITHMS",
    "DEFAULT_EXTENSIONS",
    "EXTENSION_KINDS",
    "ConfigError",
    "LabDeviceSettings",
    "LabSettings",
    "LabUser",
    "load_settings",
]

#: digest algorithms the lab can challenge with (RFC 7616 §6.1, RFC 8760)
ALGORITHMS = ("MD5", "SHA-256")
#: the services of ``lab/services.py``
EXTENSION_KINDS = ("echo", "tone", "playback", "conference", "dtmf-echo", "voicemail")
DEFAULT_EXTENSIONS = {"600": "echo", "601": "tone", "602": "playback", "603": "conference", "604": "dtmf-echo",
                      "605": "voicemail"}


class ConfigError(ValueError):
    """A configuration value is wrong; the message starts with the key (``ports.sip: …``)."""


@dataclass(frozen=True)
class LabUser:
    """A SIP account of the lab: ``user`` (the AOR's user part, also the digest username),
    ``password``, ``display_name``, ``algorithm`` (this user's digest algorithm(s), comma
    separated; empty: the lab's)."""

    user: str
    password: str
    display_name: str = ""
    algorithm: str = ""

    @property
    def algorithms(self) -> tuple[str, ...]:
        """This user's digest algorithms (empty: the lab's)."""
        return tuple(a.strip() for a in self.algorithm.split(",") if a.strip())

    @property
    def demo_password(self) -> bool:
        """True when the password is the published demo one (``demo<user>``)."""
        return self.password == f"demo{self.user}"


@dataclass(frozen=True)
class LabDeviceSettings:
    """An SCCP device of the lab call manager: device ``name`` and its ``line`` number."""

    name: str
    line: str


def _default_users() -> tuple[LabUser, ...]:
    return tuple(LabUser(u, f"demo{u}", f"Demo {u}") for u in ("1001", "1002", "1003"))


def _default_devices() -> tuple[LabDeviceSettings, ...]:
    return (LabDeviceSettings("SEP001122334455", "2001"), LabDeviceSettings("SEP00112233445A", "2002"))


@dataclass(frozen=True)
class LabSettings:
    """Everything the lab needs (Python units: seconds). Ports 0 pick free ports (tests).
    ``hosts``: the listen addresses (IPv4 and/or IPv6 literals). ``tls_cert``/``tls_key``:
    PEM files (None: a self-signed certificate is made at start). ``extensions``: number →
    service kind. ``ws_port``/``wss_port``: SIP over WebSocket (RFC 7118) and over secure
    WebSocket, for browser phones (JsSIP, SIP.js); None: not listened on (FreeSWITCH's
    defaults are 5066 and 7443). ``flow_timer``/``flow_timer_udp``: the ``Flow-Timer``
    (seconds) the registrar answers to a SIP outbound REGISTER over a stream / over UDP
    (RFC 5626 §6; the defaults are the RFC's keep-alive defaults of §4.4.1)."""

    domain: str = "lab.skinnysip"
    realm: str = "lab.skinnysip"
    algorithm: str = "MD5"
    hosts: tuple[str, ...] = ("127.0.0.1", "::1")
    sip_port: int = 5060
    sips_port: int = 5061
    sccp_port: int = 2000
    ws_port: int | None = None
    wss_port: int | None = None
    tls_cert: str | None = None
    tls_key: str | None = None
    users: tuple[LabUser, ...] = field(default_factory=_default_users)
    devices: tuple[LabDeviceSettings, ...] = field(default_factory=_default_devices)
    extensions: dict[str, str] = field(default_factory=lambda: dict(DEFAULT_EXTENSIONS))
    min_expires: int = 10
    max_expires: int = 3600
    default_expires: int = 3600
    nonce_lifetime: float = 300.0
    flow_timer: int = 120
    flow_timer_udp: int = 29
    stir_sign: bool = False
    stir_attest: str = "A"
    stir_x5u: str | None = None
    stir_key: str | None = None
    stir_cert: str | None = None

    @property
    def algorithms(self) -> tuple[str, ...]:
        """The digest algorithms challenged with, in order (``algorithm`` is one, or several
        separated by commas: ``"SHA-256,MD5"``)."""
        return tuple(a.strip() for a in self.algorithm.split(",") if a.strip())

    def user(self, name: str) -> LabUser | None:
        """The account called ``name``, or None."""
        return next((u for u in self.users if u.user == name), None)

    def with_overrides(self, **changes: Any) -> LabSettings:
        """A copy with ``changes`` (None values ignored), checked again."""
        settings = replace(self, **{k: v for k, v in changes.items() if v is not None})
        settings.validate()
        return settings

    def validate(self) -> None:
        """Raise :class:`ConfigError` naming the first bad key."""
        if not self.algorithms or any(a not in ALGORITHMS for a in self.algorithms):
            raise ConfigError(f"algorithm: {self.algorithm!r} is not one of {', '.join(ALGORITHMS)} (or a list of them)")
        if not self.hosts:
            raise ConfigError("hosts: at least one listen address is needed")
        for i, host in enumerate(self.hosts):
            try:
                ipaddress.ip_address(strip_brackets(host))
            except ValueError:
                raise ConfigError(f"hosts[{i}]: {host!r} is not an IP address") from None
        for key in ("sip_port", "sips_port", "sccp_port", "ws_port", "wss_port"):
            value = getattr(self, key)
            if value is None and key in ("ws_port", "wss_port"):
                continue
            if not 0 <= value <= 65535:
                raise ConfigError(f"ports.{key.removesuffix('_port')}: {value} is not a port (0-65535)")
        if self.sip_port and self.sip_port == self.sips_port:
            raise ConfigError("ports.sips: must differ from ports.sip")
        if not 1 <= self.min_expires <= self.max_expires:
            raise ConfigError("registrar.min_expires: must be at least 1 and at most registrar.max_expires")
        if not self.min_expires <= self.default_expires <= self.max_expires:
            raise ConfigError("registrar.default_expires: must lie between min_expires and max_expires")
        if self.nonce_lifetime <= 0:
            raise ConfigError("registrar.nonce_lifetime: must be positive")
        for key in ("flow_timer", "flow_timer_udp"):
            if not 1 <= getattr(self, key) <= 3600:
                raise ConfigError(f"registrar.{key}: must lie between 1 and 3600 seconds")
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ConfigError("tls.key: give both tls.cert and tls.key, or neither")
        if self.stir_attest not in ("A", "B", "C"):
            raise ConfigError(f"stir.attest: {self.stir_attest!r} is not A, B or C")
        if (self.stir_key is None) != (self.stir_cert is None):
            raise ConfigError("stir.key: give both stir.key and stir.cert, or neither")
        if self.stir_x5u is not None and not re.fullmatch(r"(?i)https?://[!#-;=?-~]+", self.stir_x5u):
            raise ConfigError(f"stir.x5u: {self.stir_x5u!r} is not an http(s) URL")
        seen: set[str] = set()
        numbers = set(self.extensions)
        for i, u in enumerate(self.users):
            if not u.user or not u.user.replace("-", "").replace("_", "").replace(".", "").isalnum():
                raise ConfigError(f"users[{i}].user: {u.user!r} is not a plain user name (letters, digits, -_.)")
            if u.user in seen:
                raise ConfigError(f"users[{i}].user: {u.user!r} appears twice")
            if not u.password:
                raise ConfigError(f"users[{i}].password: empty")
            if any(a not in ALGORITHMS for a in u.algorithms):
                raise ConfigError(f"users[{i}].algorithm: {u.algorithm!r} is not one of {', '.join(ALGORITHMS)}")
            if u.user in numbers:
                raise ConfigError(f"users[{i}].user: {u.user!r} is also an extension")
            seen.add(u.user)
        for i, d in enumerate(self.devices):
            if not d.name.upper().startswith("SEP") or len(d.name) > 15:
                raise ConfigError(f"devices[{i}].name: {d.name!r} is not a device name like SEP001122334455")
            if not d.line.isdigit():
                raise ConfigError(f"devices[{i}].line: {d.line!r} is not a number")
            if d.line in seen or d.line in numbers:
                raise ConfigError(f"devices[{i}].line: {d.line!r} is already a user or an extension")
            seen.add(d.line)
        for number, kind in self.extensions.items():
            if not number.isdigit():
                raise ConfigError(f"extensions.{number}: the extension must be digits")
            if kind not in EXTENSION_KINDS:
                raise ConfigError(f"extensions.{number}: {kind!r} is not one of {', '.join(EXTENSION_KINDS)}")

    def check_exposure(self) -> None:
        """Refuse (:class:`ConfigError`) to listen beyond loopback while any account keeps its
        demo password: everybody knows it."""
        exposed = [h for h in self.hosts if not ipaddress.ip_address(strip_brackets(h)).is_loopback]
        if not exposed:
            return
        for i, u in enumerate(self.users):
            if u.demo_password:
                raise ConfigError(f"users[{i}].password: the demo password of {u.user} may not be used when "
                                  f"listening beyond loopback ({', '.join(exposed)}); set your own passwords")


# --------------------------------------------------------------------------- the file

_TOP = {"domain", "realm", "algorithm", "hosts", "ports", "tls", "registrar", "users", "devices", "extensions",
        "stir"}


def _type(value: Any, kind: type | tuple[type, ...], key: str, what: str) -> Any:
    if isinstance(value, bool) and kind is not bool or not isinstance(value, kind):
        raise ConfigError(f"{key}: {what} expected, not {type(value).__name__} {value!r}")
    return value


def _table(data: Any, key: str, allowed: set[str]) -> dict[str, Any]:
    _type(data, dict, key, "a table")
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise ConfigError(f"{key + '.' if key else ''}{unknown[0]}: unknown key (known: {', '.join(sorted(allowed))})")
    return dict(data)


def _algorithm(raw: Any, key: str) -> str:
    """An algorithm name or a list of them → the canonical comma-separated text."""
    names = raw if isinstance(raw, list) else [raw]
    canonical = {"MD5": "MD5", "SHA-256": "SHA-256"}
    return ",".join(canonical.get(n.upper(), n) for n in
                    (_type(n, str, key, "a string or a list of strings") for n in names))


def settings_from_dict(data: dict[str, Any]) -> LabSettings:
    """:class:`LabSettings` from parsed TOML ``data``. Raises :class:`ConfigError`."""
    top = _table(data, "", _TOP)
    kw: dict[str, Any] = {}
    for key in ("domain", "realm"):
        if key in top:
            kw[key] = _type(top[key], str, key, "a string")
    if "algorithm" in top:
        kw["algorithm"] = _algorithm(top["algorithm"], "algorithm")
    if "realm" not in kw and "domain" in kw:
        kw["realm"] = kw["domain"]
    if "hosts" in top:
        hosts = _type(top["hosts"], list, "hosts", "a list of addresses")
        kw["hosts"] = tuple(_type(h, str, f"hosts[{i}]", "an address") for i, h in enumerate(hosts))
    ports = _table(top.get("ports", {}), "ports", {"sip", "sips", "sccp", "ws", "wss"})
    for name, value in ports.items():
        kw[f"{name}_port"] = _type(value, int, f"ports.{name}", "a port number")
    tls = _table(top.get("tls", {}), "tls", {"cert", "key"})
    for name, value in tls.items():
        path = _type(value, str, f"tls.{name}", "a file name")
        if not Path(path).is_file():
            raise ConfigError(f"tls.{name}: {path!r} is not a readable file")
        kw[f"tls_{name}"] = path
    stir = _table(top.get("stir", {}), "stir", {"sign", "attest", "x5u", "key", "cert"})
    if "sign" in stir:
        kw["stir_sign"] = _type(stir["sign"], bool, "stir.sign", "true or false")
    for name in ("attest", "x5u"):
        if name in stir:
            kw[f"stir_{name}"] = _type(stir[name], str, f"stir.{name}", "a string")
    for name in ("key", "cert"):
        if name in stir:
            path = _type(stir[name], str, f"stir.{name}", "a file name")
            if not Path(path).is_file():
                raise ConfigError(f"stir.{name}: {path!r} is not a readable file")
            kw[f"stir_{name}"] = path
    reg = _table(top.get("registrar", {}), "registrar",
                 {"min_expires", "max_expires", "default_expires", "nonce_lifetime", "flow_timer",
                  "flow_timer_udp"})
    for name, value in reg.items():
        kind: type | tuple[type, ...] = (int, float) if name == "nonce_lifetime" else int
        kw[name] = _type(value, kind, f"registrar.{name}", "a number of seconds")
    if "users" in top:
        users = []
        for i, item in enumerate(_type(top["users"], list, "users", "an array of tables ([[users]])")):
            t = _table(item, f"users[{i}]", {"user", "password", "display_name", "algorithm"})
            for need in ("user", "password"):
                if need not in t:
                    raise ConfigError(f"users[{i}].{need}: missing")
            user = t["user"]
            if isinstance(user, int) and not isinstance(user, bool):
                user = str(user)
            users.append(LabUser(_type(user, str, f"users[{i}].user", "a string"),
                                 _type(t["password"], str, f"users[{i}].password", "a string"),
                                 _type(t.get("display_name", ""), str, f"users[{i}].display_name", "a string"),
                                 _algorithm(t.get("algorithm", ""), f"users[{i}].algorithm")))
        kw["users"] = tuple(users)
    if "devices" in top:
        devices = []
        for i, item in enumerate(_type(top["devices"], list, "devices", "an array of tables ([[devices]])")):
            t = _table(item, f"devices[{i}]", {"name", "line"})
            for need in ("name", "line"):
                if need not in t:
                    raise ConfigError(f"devices[{i}].{need}: missing")
            line = str(t["line"]) if isinstance(t["line"], int) and not isinstance(t["line"], bool) else t["line"]
            devices.append(LabDeviceSettings(_type(t["name"], str, f"devices[{i}].name", "a string").upper(),
                                             _type(line, str, f"devices[{i}].line", "a number")))
        kw["devices"] = tuple(devices)
    if "extensions" in top:
        ext = _type(top["extensions"], dict, "extensions", "a table")
        kw["extensions"] = {str(k): _type(v, str, f"extensions.{k}", "a service kind") for k, v in ext.items()}
    settings = LabSettings(**kw)
    settings.validate()
    return settings


#: the most a lab configuration file may hold (octets): a TOML of accounts and rules
MAX_CONFIG_BYTES = 1 << 20


def load_settings(path: str | Path | None = None) -> LabSettings:
    """The settings in the TOML file ``path`` (None: the defaults). Raises
    :class:`ConfigError` naming the key, or the file when it cannot be read or parsed."""
    if path is None:
        settings = LabSettings()
        settings.validate()
        return settings
    try:
        with open(path, "rb") as file:
            text = file.read(MAX_CONFIG_BYTES + 1)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read ({exc.strerror or exc})") from None
    if len(text) > MAX_CONFIG_BYTES:
        raise ConfigError(f"{path}: larger than {MAX_CONFIG_BYTES // 1024} KiB, not a lab configuration")
    try:
        data = tomllib.loads(text.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc})") from None
    return settings_from_dict(data)
