"""Real SIP peers for the tests: Kamailio (registrar with Digest, UDP/TCP/TLS) and SIPp (UAS).

Both are started on 127.0.0.1 on free ports and always stopped by their context managers.
Kamailio's configuration is generated here; one instance challenges with one algorithm.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import ipaddress
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from peertools import ExitedError, free_port, require, wait_tcp

USERS = {"alice": "wonderland", "bob": "builder", "carol": "singer"}
REALM = "skinnysip.test"


#: the first lines of every request_route here: Max-Forwards (483 at 0) and the sanity module's
#: checks (a malformed request is dropped and logged)
SANE_REQUEST = """    if (!mf_process_maxfwd_header("10")) {
        sl_send_reply("483", "Too Many Hops");
        exit;
    }
    if (!sanity_check("17895", "7")) {
        xlog("L_WARN", "malformed request from $si:$sp\\n");
        exit;
    }
"""


@dataclass
class KamailioPeer:
    host: str
    udp_port: int
    tcp_port: int
    tls_port: int
    realm: str
    users: dict[str, str]
    algorithm: str
    ca_file: str
    server_header: str
    log_file: str
    ctl_socket: str = ""
    ws_port: int = 0  # with websocket=True: SIP over WebSocket (RFC 7118), any path
    wss_port: int = 0

    def port(self, transport: str) -> int:
        return {"udp": self.udp_port, "tcp": self.tcp_port, "tls": self.tls_port, "ws": self.ws_port,
                "wss": self.wss_port}[transport]

    def contacts(self, user: str) -> list[str]:
        """The Contacts registered for ``user`` now (``kamcmd ul.lookup``)."""
        out = subprocess.run(["kamcmd", "-s", self.ctl_socket, "ul.lookup", "location", f"{user}@{self.realm}"],
                             capture_output=True, text=True, timeout=10).stdout
        return re.findall(r"Address:\s*(\S+)", out)

    @contextlib.contextmanager
    def frozen(self) -> Iterator[None]:
        """Kamailio stopped (SIGSTOP to its process group) while the block runs: its sockets
        stay open but nothing is read or answered — a server that hangs, not one that closes."""
        pid = int((Path(self.ctl_socket.removeprefix("unix:")).parent / "kamailio.pid").read_text().split()[0])
        os.killpg(os.getpgid(pid), signal.SIGSTOP)
        try:
            yield
        finally:
            os.killpg(os.getpgid(pid), signal.SIGCONT)

#: the registrar/PBX's in-dialog requests are logged with where they go
_LOGGED_ROUTE = '            xlog("L_NOTICE", "loose_route -> $ru $du\\n");\n'


def relay_by_transaction(routed: str = "", in_dialog: str = "") -> str:
    """The request_route lines every proxy here shares (single braces: a value for the
    configs' f-strings): an in-dialog request follows its Route (``routed``: lines run first,
    e.g. an xlog), else ``in_dialog`` lines, an ACK its transaction, anything else 404; a
    CANCEL goes by its INVITE's transaction."""
    return f"""    if (has_totag()) {{
        if (loose_route()) {{
{routed}            t_relay();
            exit;
        }}
{in_dialog}        if (is_method("ACK")) {{
            if (t_check_trans()) {{ t_relay(); }}
            exit;
        }}
        sl_send_reply("404", "Not Here");
        exit;
    }}
    if (is_method("CANCEL")) {{
        if (t_check_trans()) {{ t_relay(); }}
        exit;
    }}
"""


@dataclass
class KamailioControl:
    """What a Kamailio started by a peer helper with its own configuration (presence_peer.py,
    stir_peer.py) offers every test: where it listens, its realm, its control socket and log."""

    host: str
    udp_port: int
    tcp_port: int
    realm: str
    log_file: str
    ctl_socket: str
    workdir: Path

    @property
    def registrar(self) -> str:
        """``host:udp_port`` (baresip_peer's ``registrar`` argument)."""
        return f"{self.host}:{self.udp_port}"

    def port(self, transport: str) -> int:
        return {"udp": self.udp_port, "tcp": self.tcp_port}[transport]

    def aor(self, user: str) -> str:
        return f"sip:{user}@{self.realm}"

    def kamcmd(self, *args: str, timeout: float = 10.0) -> str:
        """``kamcmd`` against this server's control socket: its output."""
        return subprocess.run(["kamcmd", "-s", self.ctl_socket, *args], capture_output=True, text=True,
                              timeout=timeout).stdout

    def contacts(self, user: str) -> list[str]:
        """The Contacts registered for ``user`` now (``ul.lookup``)."""
        return re.findall(r"Address:\s*(\S+)", self.kamcmd("ul.lookup", "location", f"{user}@{self.realm}"))

    def log_text(self) -> str:
        return Path(self.log_file).read_text(errors="replace")


def wait_ctl(path: Path, proc: subprocess.Popen[bytes], timeout: float) -> None:
    """Wait until Kamailio's control socket ``path`` exists (it is ready for ``kamcmd``);
    :class:`ExitedError` if it exits first, ``TimeoutError`` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while not path.exists():
        if proc.poll() is not None:
            raise ExitedError(f"kamailio exited ({proc.returncode})")
        if time.monotonic() > deadline:
            raise TimeoutError(f"no control socket {path} after {timeout} s")
        time.sleep(0.05)


def start_kamailio(binary: str, cfg: Path, log_file: Path, host: str, tcp: int, timeout: float, *,
                   what: str, last: bool) -> subprocess.Popen[bytes] | None:
    """Start Kamailio on ``cfg`` (checked first: ``RuntimeError`` with its complaint), its log
    in ``log_file`` and its pid file beside ``cfg`` (where the configuration puts the control
    socket, ``kamailio_ctl``), in a process group of its own, and wait until it listens on TCP
    ``host:tcp`` and its control socket exists. The process; None when it exited meanwhile (a
    port taken by another test: the caller tries other ports), unless ``last`` — then, as when
    it does not come up within ``timeout`` s, ``RuntimeError`` with the tail of its log
    (``what`` names it there)."""
    workdir = cfg.parent
    checked = subprocess.run([binary, "-c", "-f", str(cfg)], capture_output=True, text=True, timeout=30)
    if checked.returncode != 0:
        raise RuntimeError(f"kamailio rejected its {what} config:\n{checked.stderr[-3000:]}")
    with open(log_file, "wb") as log:
        proc = subprocess.Popen([binary, "-f", str(cfg), "-DD", "-E", "-P", str(workdir / "kamailio.pid"),
                                 "-Y", str(workdir), "-m", "64", "-M", "8"],
                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_tcp(host, tcp, timeout, proc)
        wait_ctl(workdir / "kamailio_ctl", proc, timeout)
        return proc
    except (TimeoutError, ExitedError) as exc:
        exited = isinstance(exc, ExitedError)
    stop_group(proc)
    if exited and not last:
        return None
    raise RuntimeError(f"kamailio ({what}) did not start on tcp {host}:{tcp}: "
                       f"{log_file.read_text(errors='replace')[-3000:]}")


def make_self_signed(directory: Path, common_name: str = "skinnysip test server") -> tuple[Path, Path]:
    """A self-signed EC certificate for 127.0.0.1/localhost; returns (cert.pem, key.pem)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=2))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path = directory / "cert.pem"
    key_path = directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


#: the modules every Kamailio configuration here loads: a stateful proxy's (transactions, record
#: routing, pseudo-variables, text operations, logging)
_PROXY_MODULES = "\n".join(f'loadmodule "{name}.so"' for name in (
    "kex", "corex", "tm", "sl", "rr", "pv", "maxfwd", "textops", "siputils", "xlog"))


def _module_dir() -> str:
    for candidate in sorted(Path("/usr/lib").glob("*/kamailio/modules")):
        if (candidate / "tls.so").exists():
            return str(candidate) + "/"
    raise RuntimeError("kamailio modules (with tls.so) not found; install kamailio-tls-modules")


def kamailio_head(host: str, udp: int, tcp: int, *, children: int = 2) -> str:
    """The first lines of every test Kamailio's configuration: logs to stderr, ``children``
    UDP workers and two TCP ones, no automatic aliases, UDP and TCP on ``host``."""
    return (f"#!KAMAILIO\ndebug=2\nlog_stderror=yes\nfork=yes\nchildren={children}\ntcp_children=2\n"
            f"auto_aliases=no\nlisten=udp:{host}:{udp}\nlisten=tcp:{host}:{tcp}\n")


def digest_check(kind: str, qop_flag: str, users: dict[str, str], indent: str = "        ", *,
                 unknown_user_404: bool = False) -> str:
    """Kamailio configuration lines (each at ``indent``) that check a request's Digest
    credentials in :data:`REALM` against ``users`` (``kind`` "www": its Authorization, "proxy":
    its Proxy-Authorization): an unknown user or a wrong password → 403; none, or a stale
    nonce → a challenge (401/407, ``qop_flag`` as Kamailio's auth module reads it: 0 no qop,
    1 auth, 2 auth-int, 3 both, +16 stale=true), and the script exits. The caller then
    consumes the credentials. ``unknown_user_404``: credentials for a user not in ``users``
    get 404 instead — a server that lets a caller tell users from wrong passwords."""
    leak = (['if ($au != $null && $var(pw) == "!no-such-user!") {',
             '    sl_send_reply("404", "Not Found");',
             "    exit;",
             "}"] if unknown_user_404 else [])
    lines = ['$var(pw) = "!no-such-user!";',
             *(f'if ($au == "{user}") {{ $var(pw) = "{pw}"; }}' for user, pw in users.items()),
             *leak,
             f'if (!pv_{kind}_authenticate("{REALM}", "$var(pw)", "0")) {{',
             "    if ($rc == -2 || $rc == -3) {",
             '        sl_send_reply("403", "Forbidden");',
             "        exit;",
             "    }",
             f'    {kind}_challenge("{REALM}", "{qop_flag}");',
             "    exit;",
             "}"]
    return "".join(f"{indent}{line}\n" for line in lines)


def _kamailio_cfg(
    host: str,
    udp: int,
    tcp: int,
    tls: int,
    algorithm: str,
    tls_cfg: Path,
    rundir: Path,
    qop: str = "auth",
    stale_once: bool = False,
    next_hop: str | None = None,
    relay_registered: bool = False,
    pbx: bool = False,
    max_expires: int = 3600,
    min_expires: int | None = None,
    rtpengine: tuple[str, str, str] | None = None,
    dialog: tuple[int, int] | None = None,
    websocket: tuple[int, int] | None = None,
    flow_timer: int | None = None,
    service_route: str | None = None,
    auth_params: dict[str, int | str] | None = None,
    unknown_user_404: bool = False,
    message_b2bua: bool = False,
) -> str:
    auth = {"algorithm": algorithm, "nonce_expire": 60, "secret": "skinnysip-test-secret", **(auth_params or {})}
    auth_lines = "\n".join(f'modparam("auth", "{name}", {value})' if isinstance(value, int)
                           else f'modparam("auth", "{name}", "{value}")' for name, value in auth.items())
    qop_flag = {"auth": "1", "auth-int": "2", "auth,auth-int": "3", "none": "0"}[qop]
    stale_flag = str(int(qop_flag) | 16)
    stale_block = (
        f"""        if ($sht(stale=>$ci) == $null) {{
            $sht(stale=>$ci) = 1;
            www_challenge("{REALM}", "{stale_flag}");
            exit;
        }}
"""
        if stale_once
        else ""
    )
    forward_block = (
        f"""{relay_by_transaction(routed=_LOGGED_ROUTE)}    if (is_method("INVITE")) {{
{digest_check("proxy", qop_flag, USERS)}        consume_credentials();
        record_route();
        $du = "{next_hop}";
        t_relay();
        exit;
    }}
"""
        if next_hop
        else ""
    )
    # non-REGISTER requests to a registered AOR: the location table gives the target
    relay_block = (
        """    if (!is_method("ACK|CANCEL") && lookup("location")) {
        xlog("L_NOTICE", "lookup -> $ru $du\\n");
        t_relay();
        exit;
    }
"""
        if relay_registered
        else ""
    )
    # a small PBX: calls, MESSAGE, REFER… between registered users, record-routed; in-dialog
    # requests follow the route set; INVITE and MESSAGE from a user are proxy-authenticated
    pbx_block = (
        """    if (has_totag()) {
        if (loose_route()) {
{relay_in_dialog}            t_relay();
            exit;
        }
        if (is_method("ACK")) {
            if (t_check_trans()) { t_relay(); }
            exit;
        }
        sl_send_reply("404", "Not Here");
        exit;
    }
    if (is_method("CANCEL")) {
{relay_cancel}        if (t_check_trans()) { t_relay(); }
        exit;
    }
    if (is_method("INVITE|MESSAGE") && $fd == "REALM_NAME") {
{proxy_check}        consume_credentials();
    }
{message_b2bua}    if (!is_method("REGISTER|ACK")) {
        if (is_method("INVITE|SUBSCRIBE|REFER")) { record_route(); }
        if (!lookup("location")) {
            sl_send_reply("480", "Temporarily Unavailable");
            exit;
        }
{relay_initial}        t_relay();
        exit;
    }
""".replace("REALM_NAME", REALM)
        if pbx
        else ""
    )
    pbx_block = pbx_block.replace("{proxy_check}", digest_check("proxy", "1", USERS))
    # a MESSAGE answered 202 here and sent anew to the binding (the uac module: a new Call-ID,
    # From the PBX), as a back-to-back user agent relays it (Asterisk's res_pjsip_messaging)
    pbx_block = pbx_block.replace("{message_b2bua}", """    if (is_method("MESSAGE")) {
        if (!lookup("location")) {
            sl_send_reply("480", "Temporarily Unavailable");
            exit;
        }
        xlog("L_NOTICE", "b2bua: MESSAGE anew to $ru\\n");
        $uac_req(method) = "MESSAGE";
        $uac_req(ruri) = $ru;
        $uac_req(furi) = "sip:pbx@REALM_NAME";
        $uac_req(turi) = $tu;
        $uac_req(hdrs) = "Content-Type: " + $cT + "\\r\\n";
        $uac_req(body) = $rb;
        uac_req_send();
        sl_send_reply("202", "Accepted");
        exit;
    }
""".replace("REALM_NAME", REALM) if message_b2bua else "")
    # media through rtpengine: every SDP offer/answer of the PBX's calls rewritten by it (the
    # initial offer with ``offer_flags``, its answers with ``answer_flags``; later offers in the
    # dialog with the plain rewrite: rtpengine keeps each side's protocol), deleted at BYE/CANCEL
    relay_module = reply_route = ""
    if message_b2bua:
        relay_module = 'loadmodule "uac.so"\n'
    relay_in_dialog = relay_cancel = relay_initial = ""
    if rtpengine is not None:
        ng_socket, offer_flags, answer_flags = rtpengine
        base = "replace-origin replace-session-connection"
        relay_module += (f'loadmodule "rtpengine.so"\nmodparam("rtpengine", "rtpengine_sock", "{ng_socket}")\n'
                         'modparam("rtpengine", "rtpengine_tout_ms", 2000)\n')
        relay_in_dialog = (
            f'            if (is_method("INVITE") && has_body("application/sdp")) {{ rtpengine_offer("{base}"); }}\n'
            f'            if (is_method("INVITE")) {{ t_on_reply("RELAY_ANSWER"); }}\n'
            f'            if (is_method("ACK") && has_body("application/sdp")) {{ rtpengine_answer("{base}"); }}\n'
            '            if (is_method("BYE")) { rtpengine_delete(); }\n')
        relay_cancel = '        rtpengine_delete();\n'
        relay_initial = (
            f'        if (is_method("INVITE") && has_body("application/sdp")) {{ rtpengine_offer("{base} {offer_flags}"); }}\n'
            '        if (is_method("INVITE")) { t_on_reply("RELAY_ANSWER"); }\n')
        reply_route = (
            "onreply_route[RELAY_ANSWER] {\n"
            f'    if (has_body("application/sdp")) {{ rtpengine_answer("{base} {answer_flags}"); }}\n'
            "}\n")
    # the dialog module tracking each call: OPTIONS in the dialog to both ends every ``keepalive``
    # seconds (a failed one ends the call), and after ``timeout`` seconds a BYE to both ends
    if dialog is not None:
        keepalive, dialog_timeout = dialog
        relay_module += ('loadmodule "dialog.so"\nmodparam("dialog", "dlg_flag", 4)\n'
                         f'modparam("dialog", "ka_timer", 1)\nmodparam("dialog", "ka_interval", {keepalive})\n'
                         f'modparam("dialog", "default_timeout", {dialog_timeout})\n'
                         'modparam("dialog", "send_bye", 1)\n')
        relay_initial += ('        if (is_method("INVITE")) { dlg_manage(); dlg_set_property("ka-src"); '
                          'dlg_set_property("ka-dst"); }\n')
    # SIP outbound (RFC 5626) and GRUU (RFC 5627) at the registrar: outbound_mode 1 (supported),
    # a Flow-Timer in the 2xx, a STUN server on the SIP UDP port for keep-alives (§8); GRUUs are
    # the registrar's own (gruu_enabled, its default), and lookup() resolves them
    # a service route (RFC 3608) in every 2xx to REGISTER, as an IMS S-CSCF gives it
    service_route_line = (f'        append_to_reply("Service-Route: <{service_route}>\\r\\n");\n'
                          if service_route is not None else "")
    outbound_modules = ""
    if flow_timer is not None:
        # an in-dialog request to a GRUU (the remote target a GRUU-using UA gave) names this
        # domain: the location service resolves it (RFC 5627 §5.5)
        relay_in_dialog = '            if (uri == myself) { lookup("location"); }\n' + relay_in_dialog
        outbound_modules = ('loadmodule "outbound.so"\nloadmodule "stun.so"\n'
                            'modparam("registrar", "outbound_mode", 1)\n'
                            f'modparam("registrar", "flow_timer", {flow_timer})\n'
                            'modparam("registrar", "gruu_enabled", 1)\n'
                            'modparam("registrar", "use_path", 1)\nmodparam("registrar", "path_mode", 2)\n')
    # SIP over WebSocket as Kamailio's own example configuration does it (WITH_WEBSOCKETS): xhttp
    # takes the HTTP Upgrade on the WS/WSS ports, the websocket module the handshake (it wants
    # the "sip" subprotocol); a request that came over a WebSocket (nat_uac_test 64) has its
    # REGISTER Contact's source kept (fix_nated_register → received) and the Contacts of other
    # requests and of replies aliased, so requests to WebSocket clients go back over their connection
    ws_listen = ws_modules = ws_route = ws_event = ""
    if websocket is not None:
        ws, wss = websocket
        ws_listen = f"listen=tcp:{host}:{ws}\nlisten=tls:{host}:{wss}\ntcp_accept_no_cl=yes\n"
        ws_modules = ('loadmodule "xhttp.so"\nloadmodule "websocket.so"\nloadmodule "nathelper.so"\n'
                      'modparam("nathelper|registrar", "received_avp", "$avp(RECEIVED)")\n')
        ws_route = """    if (nat_uac_test("64")) {
        force_rport();
        if (is_method("REGISTER")) {
            fix_nated_register();
        } else if (!has_totag() || !is_method("ACK")) {
            add_contact_alias();
        }
    }
"""
        relay_in_dialog = "            handle_ruri_alias();\n" + relay_in_dialog
        ws_event = f"""onreply_route {{
    if (nat_uac_test("64")) {{
        add_contact_alias();
    }}
}}
event_route[xhttp:request] {{
    set_reply_close();
    set_reply_no_connect();
    if ($Rp != {ws} && $Rp != {wss}) {{
        xhttp_reply("403", "Forbidden", "", "");
        exit;
    }}
    if ($hdr(Upgrade) =~ "websocket" && $hdr(Connection) =~ "Upgrade" && $rm =~ "GET") {{
        xlog("L_NOTICE", "websocket handshake from $si:$sp for $hu\\n");
        if (ws_handle_handshake()) {{
            exit;
        }}
    }}
    xhttp_reply("404", "Not Found", "", "");
}}
"""
    pbx_block = (pbx_block.replace("{relay_in_dialog}", relay_in_dialog).replace("{relay_cancel}", relay_cancel)
                 .replace("{relay_initial}", relay_initial))
    return f"""{kamailio_head(host, udp, tcp)}listen=tls:{host}:{tls}
{ws_listen}alias="localhost:{udp}"
alias="localhost:{tcp}"
alias="localhost:{tls}"
alias="{REALM}"
enable_tls=yes
tcp_connection_lifetime=30
server_signature=yes
mpath="{_module_dir()}"

{_PROXY_MODULES}
loadmodule "sanity.so"
loadmodule "usrloc.so"
loadmodule "registrar.so"
loadmodule "auth.so"
loadmodule "tls.so"
loadmodule "ctl.so"
loadmodule "htable.so"

modparam("ctl", "binrpc", "unix:{rundir}/kamailio_ctl")
modparam("usrloc", "db_mode", 0)
modparam("registrar", "max_expires", {max_expires})
modparam("registrar", "min_expires", {min(10, max_expires) if min_expires is None else min_expires})
modparam("registrar", "min_expires_mode", {0 if min_expires is None else 1})
{auth_lines}
modparam("tls", "config", "{tls_cfg}")
modparam("htable", "htable", "stale=>size=8;autoexpire=300;")
modparam("rr", "enable_full_lr", 1)
{relay_module}{ws_modules}{outbound_modules}

request_route {{
    xlog("L_NOTICE", "request $rm $ru from $si:$sp ($pr) route=$hdr(Route)\n");
{SANE_REQUEST}{ws_route}    if (is_method("OPTIONS") && ($rU == $null || $rU == "ping")) {{
        append_to_reply("Allow: INVITE, ACK, CANCEL, OPTIONS, BYE, REGISTER\\r\\n");
        append_to_reply("Supported: path, outbound, gruu\\r\\n");
        append_to_reply("Accept: application/sdp, text/plain\\r\\n");
        sl_send_reply("200", "OK");
        exit;
    }}
{forward_block}{pbx_block}    if (is_method("REGISTER")) {{
{digest_check("www", qop_flag, USERS, unknown_user_404=unknown_user_404)}{stale_block}        consume_credentials();
{service_route_line}        if (!save("location")) {{
            sl_reply_error();
        }}
        exit;
    }}
{relay_block}    if (is_method("ACK")) {{
        exit;
    }}
    sl_send_reply("404", "Not Here");
    exit;
}}
{reply_route}{ws_event}"""


@contextlib.contextmanager
def kamailio(
    algorithm: str = "MD5",
    host: str = "127.0.0.1",
    timeout: float = 15.0,
    *,
    qop: str = "auth",
    stale_once: bool = False,
    next_hop: str | None = None,
    relay_registered: bool = False,
    pbx: bool = False,
    max_expires: int = 3600,
    min_expires: int | None = None,
    ports: tuple[int, int, int] | None = None,
    rtpengine: tuple[str, str, str] | None = None,
    dialog: tuple[int, int] | None = None,
    websocket: bool = False,
    flow_timer: int | None = None,
    service_route: str | None = None,
    auth_params: dict[str, int | str] | None = None,
    unknown_user_404: bool = False,
    message_b2bua: bool = False,
) -> Iterator[KamailioPeer]:
    """Start Kamailio as a Digest-challenging registrar on free UDP/TCP/TLS ports.

    REGISTER without credentials → 401 (``qop`` one of "auth", "auth-int",
    "auth,auth-int", "none"; ``algorithm``); a wrong password or unknown user → 403;
    right → 200 with the binding. ``stale_once``: the first correct credentials of each
    Call-ID get a fresh challenge with ``stale=true`` instead (as after nonce expiry).
    ``next_hop`` (a SIP URI): INVITEs are challenged with 407 (Proxy-Authenticate) and,
    once authorised, record-routed and relayed there statefully (in-dialog requests
    follow the route set). OPTIONS to the server → 200 with Allow/Supported/Accept/Server.
    ``relay_registered``: any other request (not ACK/CANCEL) whose Request-URI user is
    registered is relayed statefully to the binding (``lookup("location")`` + ``t_relay()``;
    over a stream, on the connection the REGISTER came on when the Contact is its far end).
    ``pbx``: a small PBX between registered users: INVITE/MESSAGE from the realm's users are
    proxy-authenticated (407), INVITE/SUBSCRIBE/REFER record-routed, every new request relayed
    to the callee's binding (480 when not registered), in-dialog requests by the route set.
    ``max_expires``: the longest registration granted (seconds). ``min_expires``: a shorter
    one asked for is refused with 423 (Interval Too Brief) and Min-Expires (Kamailio's
    ``min_expires_mode`` 1; default: raised to 10 s silently). ``ports``: (udp, tcp, tls) to
    listen on (default: free ports) — to restart "the same" server. ``rtpengine`` (with
    ``pbx``): (its ng socket, offer flags, answer flags) — the calls' SDP is rewritten by that
    rtpengine (``rtpengine_peer.py``) and their media relayed through it. ``dialog`` (with
    ``pbx``): (keepalive, timeout) seconds — the dialog module tracks each call, sends OPTIONS
    in the dialog to both ends every ``keepalive`` s and BYE to both ends after ``timeout`` s.
    ``websocket``: SIP over WebSocket (RFC 7118) on two more ports (``ws_port``, and
    ``wss_port`` over TLS), as Kamailio's example configuration serves WebRTC clients.
    ``flow_timer``: SIP outbound (RFC 5626) at the registrar — the outbound and stun modules,
    ``outbound_mode`` 1, this ``Flow-Timer`` (seconds) in its 2xx, STUN answered on the UDP port;
    and GRUUs (RFC 5627, ``gruu_enabled``). ``service_route`` (a SIP URI): every 2xx to REGISTER
    carries it as ``Service-Route`` (RFC 3608), as an IMS S-CSCF does. ``auth_params``: more
    (or other) parameters of the auth module, e.g. ``{"nonce_count": 1}`` (an ``nc`` must grow
    under one nonce), ``{"one_time_nonce": 1}``, ``{"add_authinfo_hdr": 1}`` (2xx with
    ``Authentication-Info``), ``{"nonce_expire": 5}``. ``unknown_user_404``: a REGISTER with
    credentials for a user it does not know gets 404 (a wrong password still 403): a registrar
    that leaks which users exist. ``message_b2bua`` (with ``pbx``): a MESSAGE to a registered
    user is answered 202 by the PBX and sent anew to the binding with the same body (a new
    Call-ID, From ``sip:pbx@…``), as a back-to-back user agent does, instead of being relayed.
    Other requests → 404.
    """
    binary = require("kamailio")
    workdir = Path(tempfile.mkdtemp(prefix="skinnysip-kamailio-"))
    cert, key = make_self_signed(workdir)
    tls_cfg = workdir / "tls.cfg"
    tls_cfg.write_text(
        f"[server:default]\nmethod = TLSv1.2+\nverify_certificate = no\nrequire_certificate = no\n"
        f"certificate = {cert}\nprivate_key = {key}\n\n"
        "[client:default]\nmethod = TLSv1.2+\nverify_certificate = no\nrequire_certificate = no\n"
    )
    cfg = workdir / "kamailio.cfg"
    log_file = workdir / "kamailio.log"
    pid_file = workdir / "kamailio.pid"
    # free ports are free when picked, not when Kamailio binds them: a parallel test may take one
    # first, and Kamailio exits ("Address already in use"). Then it is started again on new
    # ports (three tries), unless the caller fixed the ports.
    for attempt in range(3):
        if ports is not None:
            udp, tcp, tls = ports
        else:
            udp = free_port(socket.SOCK_DGRAM, host)
            tcp = free_port(socket.SOCK_STREAM, host)
            tls = free_port(socket.SOCK_STREAM, host)
        ws_ports = (free_port(socket.SOCK_STREAM, host), free_port(socket.SOCK_STREAM, host)) if websocket else None
        cfg.write_text(_kamailio_cfg(host, udp, tcp, tls, algorithm, tls_cfg, workdir, qop, stale_once, next_hop,
                                     relay_registered, pbx, max_expires, min_expires, rtpengine, dialog, ws_ports,
                                     flow_timer, service_route, auth_params, unknown_user_404, message_b2bua))
        check = subprocess.run([binary, "-c", "-f", str(cfg)], capture_output=True, text=True, timeout=30)
        if check.returncode != 0:
            raise RuntimeError(f"kamailio rejected its config:\n{check.stderr[-3000:]}")
        with open(log_file, "wb") as log:
            proc = subprocess.Popen(
                [binary, "-f", str(cfg), "-DD", "-E", "-P", str(pid_file), "-Y", str(workdir), "-m", "64", "-M", "8"],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        try:
            deadline = time.monotonic() + timeout
            for listening in (tcp, tls, *(ws_ports or ())):
                wait_tcp(host, listening, max(0.1, deadline - time.monotonic()), proc)
            break
        except (TimeoutError, ExitedError) as exc:
            exited = isinstance(exc, ExitedError)
        stop_group(proc)
        if not exited or ports is not None or attempt == 2:
            log_text = log_file.read_text(errors="replace")[-3000:]
            shutil.rmtree(workdir, ignore_errors=True)
            raise RuntimeError(f"kamailio did not start on udp/tcp/tls {udp}/{tcp}/{tls} of {host} "
                               f"({'it exited' if exited else f'not listening after {timeout} s'}):\n{log_text}")
    try:
        version = subprocess.run([binary, "-v"], capture_output=True, text=True, timeout=10).stdout
        m = re.search(r"version: kamailio ([\d.]+) \(([^)]*)\)", version)
        server = f"kamailio ({m.group(1)} ({m.group(2)}))" if m else "kamailio"
        yield KamailioPeer(
            host=host,
            udp_port=udp,
            tcp_port=tcp,
            tls_port=tls,
            realm=REALM,
            users=dict(USERS),
            algorithm=algorithm,
            ca_file=str(cert),
            server_header=server,
            log_file=str(log_file),
            ctl_socket=f"unix:{workdir}/kamailio_ctl",
            ws_port=ws_ports[0] if ws_ports else 0,
            wss_port=ws_ports[1] if ws_ports else 0,
        )
    finally:
        stop_group(proc)
        shutil.rmtree(workdir, ignore_errors=True)


def stop_group(proc: subprocess.Popen[bytes]) -> None:
    """Stop a peer started with ``start_new_session``: SIGTERM to its process group, SIGKILL
    after 10 s."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)


@dataclass
class EdgeProxy:
    """A Kamailio edge proxy (RFC 5626 §5) in front of a registrar: ``udp_port``/``tcp_port``
    on 127.0.0.1, its log."""

    udp_port: int
    tcp_port: int
    log_file: str

    def port(self, transport: str) -> int:
        return self.udp_port if transport == "udp" else self.tcp_port


@contextlib.contextmanager
def kamailio_edge(registrar_udp_port: int, *, outbound: bool = True, ports: tuple[int, int] | None = None,
                  timeout: float = 15.0) -> Iterator[EdgeProxy]:
    """Kamailio as the edge proxy of an outbound deployment (RFC 5626 §5, as its outbound
    module's documentation sets it up): a UA's new request loses its preloaded Route and goes
    to the registrar at 127.0.0.1:``registrar_udp_port`` — a REGISTER with a Path (``add_path``:
    with ``outbound``, a flow token naming the UA's flow and ``ob``; RFC 3327), an INVITE,
    SUBSCRIBE or REFER record-routed; a request whose Route names the edge's flow token (the
    registrar's, along a Path, or one in a dialog) goes out on that flow (``loose_route``). ``outbound``: load the outbound and stun modules (without them the edge is a
    plain Path proxy, which a registrar doing outbound must refuse, RFC 5626 §6). ``ports``:
    (udp, tcp) to listen on (default: free ports), for a registrar configured with the edge's
    address before the edge starts."""
    binary = require("kamailio")
    workdir = Path(tempfile.mkdtemp(prefix="skinnysip-kamailio-edge-"))
    udp, tcp = ports or (free_port(socket.SOCK_DGRAM), free_port(socket.SOCK_STREAM))
    modules = 'loadmodule "outbound.so"\nloadmodule "stun.so"\n' if outbound else ""
    registrar = f"sip:127.0.0.1:{registrar_udp_port}"
    (workdir / "edge.cfg").write_text(f"""{kamailio_head("127.0.0.1", udp, tcp)}mpath="{_module_dir()}"

{_PROXY_MODULES}
loadmodule "path.so"
{modules}
request_route {{
    xlog("L_NOTICE", "edge: $rm $ru from $si:$sp ($pr)\\n");
    if (!mf_process_maxfwd_header("10")) {{
        sl_send_reply("483", "Too Many Hops");
        exit;
    }}
    if (is_method("CANCEL")) {{
        if (t_check_trans()) {{ t_relay(); }}
        exit;
    }}
    if (!has_totag() && !($si == "127.0.0.1" && $sp == {registrar_udp_port})) {{
        # a UA's new request: its preloaded Route (us) goes, and it goes to the registrar
        remove_hf("Route");
        if (is_method("REGISTER") && !add_path()) {{
            sl_send_reply("503", "Cannot Add Path");
            exit;
        }}
        if (is_method("INVITE|SUBSCRIBE|REFER")) {{ record_route(); }}
        $du = "{registrar}";
        t_relay();
        exit;
    }}
    if (loose_route()) {{
        xlog("L_NOTICE", "edge: routed to $du\\n");
        t_relay();
        exit;
    }}
    if (is_method("ACK") && t_check_trans()) {{ t_relay(); }}
}}
""")
    log_file = workdir / "edge.log"
    with open(log_file, "wb") as log:
        proc = subprocess.Popen([binary, "-f", str(workdir / "edge.cfg"), "-DD", "-E", "-Y", str(workdir),
                                 "-m", "32", "-M", "8"], stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        try:
            wait_tcp("127.0.0.1", tcp, timeout, proc)
        except (TimeoutError, ExitedError) as exc:
            raise RuntimeError(f"the edge proxy did not start ({exc}):\n"
                               f"{log_file.read_text(errors='replace')[-3000:]}") from None
        yield EdgeProxy(udp, tcp, str(log_file))
    finally:
        stop_group(proc)
        shutil.rmtree(workdir, ignore_errors=True)


RING_NO_ANSWER = """<?xml version="1.0" encoding="ISO-8859-1" ?>
<!DOCTYPE scenario SYSTEM "sipp.dtd">
<scenario name="ring, never answer; expect CANCEL">
  <recv request="INVITE" crlf="true"/>
  <send>
    <![CDATA[
SIP/2.0 100 Trying
[last_Via:]
[last_From:]
[last_To:];tag=[pid]SIPpTag01[call_number]
[last_Call-ID:]
[last_CSeq:]
Content-Length: 0

]]>
  </send>
  <send>
    <![CDATA[
SIP/2.0 180 Ringing
[last_Via:]
[last_From:]
[last_To:];tag=[pid]SIPpTag01[call_number]
[last_Call-ID:]
[last_CSeq:]
Contact: <sip:[local_ip]:[local_port];transport=[transport]>
Content-Length: 0

]]>
  </send>
  <recv request="CANCEL"/>
  <send>
    <![CDATA[
SIP/2.0 200 OK
[last_Via:]
[last_From:]
[last_To:];tag=[pid]SIPpTag01[call_number]
[last_Call-ID:]
[last_CSeq:]
Content-Length: 0

]]>
  </send>
  <send>
    <![CDATA[
SIP/2.0 487 Request Terminated
[last_Via:]
[last_From:]
[last_To:];tag=[pid]SIPpTag01[call_number]
[last_Call-ID:]
CSeq: [cseq] INVITE
Content-Length: 0

]]>
  </send>
  <recv request="ACK" crlf="true"/>
  <timewait milliseconds="500"/>
</scenario>
"""


# SIPp's built-in "uas" ends with a 4 s timewait; over TCP a client that closes its
# connection after the BYE's 200 (as it should) makes SIPp count the call failed. This
# scenario is the same exchange without the timewait (and with Record-Route copied into
# the 200); used for TCP, and behind a record-routing proxy.
# SIPp: the 200 that answers a BYE (used on both paths of the scenario below)
_BYE_OK = """  <send>
    <![CDATA[
SIP/2.0 200 OK
[last_Via:]
[last_From:]
[last_To:]
[last_Call-ID:]
[last_CSeq:]
Contact: <sip:[local_ip]:[local_port];transport=[transport]>
Content-Length: 0

]]>
  </send>
"""

ANSWER_NO_TIMEWAIT = """<?xml version="1.0" encoding="ISO-8859-1" ?>
<!DOCTYPE scenario SYSTEM "sipp.dtd">
<scenario name="answer: 180, 200 with SDP, ACK, BYE">
  <recv request="INVITE" crlf="true"/>
  <send>
    <![CDATA[
SIP/2.0 180 Ringing
[last_Via:]
[last_From:]
[last_To:];tag=[pid]SIPpTag01[call_number]
[last_Call-ID:]
[last_CSeq:]
Contact: <sip:[local_ip]:[local_port];transport=[transport]>
Content-Length: 0

]]>
  </send>
  <send retrans="500">
    <![CDATA[
SIP/2.0 200 OK
[last_Via:]
[last_From:]
[last_To:];tag=[pid]SIPpTag01[call_number]
[last_Call-ID:]
[last_CSeq:]
[last_Record-Route:]
Contact: <sip:[local_ip]:[local_port];transport=[transport]>
Content-Type: application/sdp
Content-Length: [len]

v=0
o=user1 53655765 2353687637 IN IP[local_ip_type] [local_ip]
s=-
c=IN IP[media_ip_type] [media_ip]
t=0 0
m=audio [media_port] RTP/AVP 0
a=rtpmap:0 PCMU/8000

]]>
  </send>
  <recv request="ACK" rtd="true" crlf="true" optional="true" next="acked"/>
  <!-- A proxy with several worker processes (Kamailio children=2) may relay the BYE ahead
       of the ACK that the client sent first; a UAS must cope, so this path takes BYE, then
       the late ACK. -->
  <recv request="BYE"/>
""" + _BYE_OK + """  <recv request="ACK" crlf="true" next="done"/>
  <label id="acked"/>
  <recv request="BYE"/>
""" + _BYE_OK + """  <label id="done"/>
</scenario>
"""


@dataclass
class SippResult:
    returncode: int
    successful_calls: int
    failed_calls: int
    log: str
    messages: str = ""
    screen: str = ""
    errors: str = ""


@dataclass
class SippPeer:
    host: str
    port: int
    transport: str
    scenario: str
    proc: subprocess.Popen[bytes]
    workdir: Path
    result: SippResult | None = field(default=None)

    def finish(self, timeout: float = 10.0) -> SippResult:
        """Wait (bounded) for SIPp to end its one call and return its statistics."""
        if self.result is not None:
            return self.result
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.send_signal(signal.SIGUSR1)  # SIPp: dump and quit
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        self.result = _sipp_result(self.proc.returncode, self.workdir)
        return self.result


def _sipp_result(returncode: int, workdir: Path) -> SippResult:
    """SIPp's own account of a run in ``workdir``: the cumulative successful/failed call
    counts of the last line of its statistics file (``*_.csv``), its output (``sipp.out``),
    message log, screen dump and unexpected-message log."""

    def text(pattern: str) -> str:
        return "".join(p.read_text(errors="replace") for p in sorted(workdir.glob(pattern)))

    stats = {"successful": 0, "failed": 0}
    stat_files = list(workdir.glob("*_.csv"))
    if stat_files:
        lines = stat_files[0].read_text(errors="replace").strip().splitlines()
        if len(lines) >= 2:
            header = lines[0].split(";")
            values = lines[-1].split(";")
            row = dict(zip(header, values, strict=False))
            stats["successful"] = int(row.get("SuccessfulCall(C)", 0) or 0)
            stats["failed"] = int(row.get("FailedCall(C)", 0) or 0)
    return SippResult(returncode, stats["successful"], stats["failed"], text("sipp.out"), text("*_messages.log"),
                      text("*_screen.log"), text("*_errors.log"))


@contextlib.contextmanager
def sipp_uas(
    scenario: str = "answer", transport: str = "udp", host: str = "127.0.0.1", xml: str | None = None,
    calls: int = 1,
) -> Iterator[SippPeer]:
    """Start SIPp as a UAS for ``calls`` calls (``-m``, default one) on a free port.

    ``scenario``: ``"answer"`` (SIPp's built-in ``uas`` on UDP, the same exchange without
    its closing 4 s timewait on TCP: 180, 200, ACK, BYE → 200), ``"answer-record-route"``
    (the same, copying Record-Route into the 200 as RFC 3261 §12.1.1 requires of a UAS —
    the built-in ``uas`` does not, so it cannot sit behind a record-routing proxy) or
    ``"ring-no-answer"`` (100, 180, then CANCEL → 200 + 487, ACK). ``transport``: udp or tcp.
    """
    binary = require("sipp")
    workdir = Path(tempfile.mkdtemp(prefix="skinnysip-sipp-"))
    kind = socket.SOCK_DGRAM if transport == "udp" else socket.SOCK_STREAM
    port = free_port(kind, host)
    args = [binary, "-i", host, "-p", str(port), "-m", str(calls), "-t", "u1" if transport == "udp" else "t1"]
    args += ["-nostdin", "-trace_stat", "-trace_msg", "-stf", str(workdir / "sipp_.csv")]
    args += ["-message_file", str(workdir / "sipp_messages.log"), "-timeout", "60s", "-timeout_error"]
    if xml is not None:
        path = workdir / "scenario.xml"
        path.write_text(xml)
        args += ["-sf", str(path)]
    elif scenario == "answer" and transport == "udp":
        args += ["-sn", "uas"]
    elif scenario in ("answer", "answer-record-route"):
        xml = workdir / "answer.xml"
        xml.write_text(ANSWER_NO_TIMEWAIT)
        args += ["-sf", str(xml)]
    elif scenario == "ring-no-answer":
        xml = workdir / "ring_no_answer.xml"
        xml.write_text(RING_NO_ANSWER)
        args += ["-sf", str(xml)]
    else:
        raise ValueError(f"unknown SIPp scenario {scenario!r}")
    out = open(workdir / "sipp.out", "wb")  # noqa: SIM115 - closed in finally
    proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=workdir)
    peer = SippPeer(host, port, transport, scenario, proc, workdir)
    try:
        if transport == "tcp":
            wait_tcp(host, port, 10)
        else:
            time.sleep(0.3)
            if proc.poll() is not None:
                raise RuntimeError(f"sipp exited at start: {(workdir / 'sipp.out').read_text(errors='replace')}")
        yield peer
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=5)
        out.close()
        shutil.rmtree(workdir, ignore_errors=True)


async def sipp_uac(
    host: str,
    port: int,
    *,
    transport: str = "udp",
    calls: int = 1,
    rate: float = 10.0,
    pause_ms: int = 0,
    timeout: float = 20.0,
    rport: bool = False,
    xml: str | None = None,
    extra: Sequence[str] = (),
) -> SippResult:
    """Run SIPp's built-in ``uac`` scenario against ``host:port`` (INVITE with SDP, 200, ACK,
    pause ``pause_ms``, BYE, 200) for ``calls`` calls at ``rate`` calls per second, from a
    free local port, over ``transport`` (udp or tcp: ``-t u1``/``-t t1``). ``rport``: the
    same scenario with ``rport`` in every Via (RFC 3581), so that responses go back to where
    the request came from (through a relay) instead of to the Via's port. Bounded: SIPp's
    own ``-timeout`` (a failure when reached) and a kill ``timeout`` + 5 s later. ``xml``: a
    test's own scenario instead of the built-in one; ``extra``: more SIPp options
    (``-rtp_echo``, say). Returns its
    exit code (0: every call successful), its counts and its screen/error/message logs."""
    binary = require("sipp")
    workdir = Path(tempfile.mkdtemp(prefix="skinnysip-sipp-uac-"))
    kind = socket.SOCK_DGRAM if transport == "udp" else socket.SOCK_STREAM
    target = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    scenario = ["-sn", "uac"]
    if xml is not None:  # a test's own scenario
        (workdir / "scenario.xml").write_text(xml)
        scenario = ["-sf", str(workdir / "scenario.xml")]
    elif rport:
        dump = subprocess.run([binary, "-sd", "uac"], capture_output=True, text=True, timeout=10)  # exits 99
        xml = dump.stdout.replace(";branch=[branch]", ";rport;branch=[branch]")
        assert xml.count(";rport;") == 3, "SIPp's uac scenario changed"
        (workdir / "uac_rport.xml").write_text(xml)
        scenario = ["-sf", str(workdir / "uac_rport.xml")]
    args = [binary, *scenario, target, "-i", host, "-p", str(free_port(kind, host)),
            "-t", "u1" if transport == "udp" else "t1", "-m", str(calls), "-r", str(rate), "-d", str(pause_ms),
            "-nostdin", "-timeout", f"{max(1, int(timeout))}s", "-timeout_error",
            "-trace_stat", "-stf", str(workdir / "sipp_.csv"),
            "-trace_screen", "-screen_file", str(workdir / "sipp_screen.log"),
            "-trace_err", "-error_file", str(workdir / "sipp_errors.log"),
            "-trace_msg", "-message_file", str(workdir / "sipp_messages.log"), *extra]
    try:
        with open(workdir / "sipp.out", "wb") as out:
            proc = await asyncio.create_subprocess_exec(*args, stdout=out, stderr=subprocess.STDOUT,
                                                        stdin=subprocess.DEVNULL, cwd=workdir)
            try:
                await asyncio.wait_for(proc.wait(), timeout + 5)
            finally:
                if proc.returncode is None:
                    proc.kill()
                    await proc.wait()
        assert proc.returncode is not None
        return _sipp_result(proc.returncode, workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
