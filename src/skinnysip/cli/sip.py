"""``skinnysip sip options|register|invite|auth|traceroute|request|usrloc HOST …``: the SIP probes on the command line.

By default a readable summary and a compact ladder (``→`` sent, ``←`` received) are
printed; ``--json`` prints exactly the HTTP API's response body; ``--pcap FILE`` writes the
exchange as pcapng. HOST is written as people write it: ``HOST``, ``HOST:PORT``,
``[v6]:PORT``, ``sip:host:port;transport=tcp`` or ``sips:host`` (a port or transport given
both there and by ``--port``/``--transport`` must agree). Exit status in the sipsak manner
(:data:`~skinnysip.cli.common.EXIT_STATUS_HELP`): 0 a 2xx final response (``auth``:
authenticated), 1 any other final response (``auth``: login refused), 2 usage error, 3 no
usable answer. Times on the command line are in milliseconds, as in the API. The password
comes from ``--password``, ``$SKINNYSIP_PASSWORD`` or (``auth`` only) a hidden prompt, and
is never printed.
"""

from __future__ import annotations

import asyncio
import functools
import time
from typing import Any

import click

from skinnysip.addresses import check_host
from skinnysip.cli.common import (
    EXIT_ANSWERED,
    EXIT_NO_ANSWER,
    EXIT_OK,
    EXIT_STATUS_HELP,
    EXIT_USAGE,
    ApiResult,
    Group,
    NagiosArgs,
    argument,
    check_source,
    checked_ip,
    console,
    emit,
    fail,
    field_table,
    header_fields,
    ladder,
    merge_target,
    nagios_options,
    nagios_verdict,
    option,
    parse_target,
    password_from,
    pem_text,
    perf_value,
    printable,
    readable_file,
    stacked,
    transport_value,
    write_pcap,
)
from skinnysip.net.realtime import collector_paused
from skinnysip.probes import sip as probes
from skinnysip.probes.sip import check_party, check_uri, check_user
from skinnysip.sip.request import MAX_REQUEST_BODY, check_one_request

app = Group("sip", help="SIP/SIPS probes: options, register, invite, auth, traceroute, request (any method), "
            "usrloc (is a registered user reachable?).")


def _validated(kind: str, value: str | None, check: Any) -> str | None:
    if value is None:
        return None
    try:
        return check(value)  # type: ignore[no-any-return]
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint=kind) from exc


def _request(
    host: str, port: int | None, transport: str | None, sips: bool, user: str | None,
    password: str | None, domain: str | None, from_: str | None, to: str | None, uri: str | None,
    timeout: int, t1: int | None, ca_file: str | None, insecure: bool, *, host_user: str = "to",
    source: tuple[str | None, int] = (None, 0), headers: tuple[str, ...] = (),
) -> probes.ProbeRequest:
    """The probe request of a command line. A HOST written as a URI with a user part
    (``sip:bob@host``) names whom to address: the To and Request-URI (``host_user="to"``:
    OPTIONS, INVITE, as sipsak's ``-s``) or the registering user (``"user"``: REGISTER,
    digest login) — unless ``--to``/``--uri`` (or ``--user``) say otherwise. ``source``: the
    ``--local-ip`` and ``--local-port`` (0: any) to send from; ``headers``: the ``--header``
    options."""
    target = merge_target(parse_target(host), port, transport_value(transport))
    if target.uri is not None:
        if host_user == "to" and to is None and uri is None:
            to = target.uri
        elif host_user == "user" and user is None:
            user = target.user
    if sips and target.transport not in (None, "tls", "wss"):
        raise click.BadParameter(f"--sips needs tls or wss, but the transport is {target.transport}",
                                 param_hint="--transport")
    scheme = "sips" if sips or target.scheme == "sips" else "sip"
    chosen = target.transport or ("tls" if scheme == "sips" else "udp")  # a ws:// URL's is ws (merge_target)
    return probes.ProbeRequest(
        host=target.host,
        port=target.port,
        transport=chosen,  # type: ignore[arg-type]
        scheme=scheme,  # type: ignore[arg-type]
        uri=_validated("--uri", uri, check_uri),
        from_uri=_validated("--from", from_, check_party),
        to_uri=_validated("--to", to, check_party),
        username=_validated("--user", user, check_user),
        password=password,
        domain=domain,
        timeout=timeout / 1000,
        t1=(t1 or 500) / 1000,
        tls_verify=not insecure,
        ca_file=readable_file(ca_file, "--ca-file"),
        ws_path=target.path or "/",
        source_ip=checked_ip(source[0]),
        source_port=source[1],
        headers=header_fields(headers),
    )


def exit_status(result: probes.SIPProbeResult) -> int:
    """0: a 2xx final response (``auth``: authenticated; ``usrloc``: the request came back to
    us through the server and was answered 2xx); 1: the server gave another final response
    (``auth``: login refused; ``usrloc``: registration refused, or the request not delivered);
    3: no usable answer (nothing, or nothing parseable)."""
    if isinstance(result, probes.DigestAuthResult):
        if result.success and result.authenticated:
            return EXIT_OK
    elif isinstance(result, probes.UsrlocResult):
        if result.success and result.delivered and result.status_code is not None and 200 <= result.status_code < 300:
            return EXIT_OK
    elif result.success and result.status_code is not None and 200 <= result.status_code < 300:
        return EXIT_OK
    return EXIT_ANSWERED if result.status_code is not None else EXIT_NO_ANSWER


# -------------------------------------------------------------------- rendering


def _ladder(result: probes.SIPProbeResult) -> None:
    ladder(result.exchange, dropped=result.dropped_messages)


def _fields(result: probes.SIPProbeResult) -> list[tuple[str, Any]]:
    rows: list[tuple[str, Any]] = [
        ("server", f"{result.server}/{result.transport}"),
        ("status", f"{result.status_code} {result.status_text}" if result.status_code else None),
        ("error", result.error),
        ("server agent", result.server_agent),
        ("rtt", f"{result.rtt:.1f} ms" if result.rtt is not None else None),
    ]
    if isinstance(result, probes.OptionsResult):
        rows += [
            ("allow", ", ".join(result.allowed_methods or []) or None),
            ("supported", ", ".join(result.supported_extensions or []) or None),
            ("accept", ", ".join(result.content_types or []) or None),
        ]
    elif isinstance(result, probes.RegisterResult):
        rows += [
            ("requires auth", result.requires_auth),
            ("auth", f"{result.auth_scheme} realm={result.auth_realm!r}" if result.auth_scheme else None),
            ("algorithms", ", ".join(result.auth_algorithms) or None),
            ("qop", ", ".join(result.auth_qop) or None),
            ("contact expires", result.contact_expires),
        ]
    elif isinstance(result, probes.InviteResult):
        rows += [
            ("provisional", ", ".join(map(str, result.provisional)) or None),
            ("requires auth", result.requires_auth or None),
            ("cancelled", result.cancelled or None),
            ("cleanup", result.cleanup),
        ]
    elif isinstance(result, probes.DigestAuthResult):
        rows += [
            ("authenticated", result.authenticated),
            ("no auth required", result.no_auth_required or None),
            ("challenge", result.challenge_code),
            ("realm", result.realm),
            ("algorithm", result.algorithm),
            ("qop", result.qop),
            ("nonce", result.nonce),
            ("server proved password", result.server_authenticated),
            ("nonce reused (nc + 1)", result.nonce_reuse),
            ("login replayed", result.replay),
            ("unknown user answered", result.unknown_user_status),
            ("wrong password answered", result.wrong_password_status),
            ("users can be enumerated", result.user_enumeration),
            ("unregistered", result.unregistered),
        ]
    elif isinstance(result, probes.TracerouteResult):
        rows += [
            ("reached", result.reached),
            ("hops", len(result.hops)),
        ]
    elif isinstance(result, probes.UsrlocResult):
        rows += [
            ("registered", f"{result.registered} ({result.register_status})" if result.register_status else None),
            ("sent to the AOR", result.method if result.registered else None),
            ("delivered to us", result.delivered if result.registered else None),
            ("delivery time", f"{result.delivery_time:.1f} ms" if result.delivery_time is not None else None),
            ("proxies on the way", result.hops if not result.b2bua else None),
            ("sent anew by a B2BUA", f"yes ({result.hops} Via)" if result.b2bua else None),
            ("delivered from", result.delivered_from),
            ("delivered to", result.delivered_uri),
            ("unregistered", result.unregistered),
        ]
    if result.tls is not None:
        t = result.tls
        rows += [
            ("tls", f"{t.version} {t.cipher} verified={t.verified}"),
            ("certificate", f"subject={t.subject} issuer={t.issuer}"),
            ("cert names", ", ".join(t.subject_alt_names) or None),
            ("cert expires", t.not_after),
        ]
    return rows


def render(result: ApiResult) -> None:
    """Print a headline (``ok`` only for what exits 0), a summary table and the ladder of
    ``result`` (a SIP probe result)."""
    from rich.markup import escape

    assert isinstance(result, probes.SIPProbeResult)
    status = exit_status(result)
    if status == EXIT_OK:
        headline = "[green]authenticated[/green]" if isinstance(result, probes.DigestAuthResult) else "[green]ok[/green]"
    elif status == EXIT_ANSWERED and isinstance(result, probes.DigestAuthResult) and result.success:
        headline = f"[red]not authenticated:[/red] {escape(printable(f'{result.status_code} {result.status_text}'))}"
    elif status == EXIT_ANSWERED and isinstance(result, probes.UsrlocResult) and result.success:
        headline = f"[red]not delivered:[/red] {escape(printable(f'{result.status_code} {result.status_text}'))}"
    elif status == EXIT_ANSWERED:
        answer = escape(printable(f"{result.status_code} {result.status_text}".rstrip()))
        headline = f"[red]answered {answer}[/red]" + (f": {escape(printable(result.error))}" if result.error else "")
    else:
        headline = f"[red]failed:[/red] {escape(printable(result.error or 'no answer'))}"
    console.print(headline)
    field_table(_fields(result) if result.status_code is not None else
                [("server", f"{result.server}/{result.transport}")])
    if isinstance(result, probes.TracerouteResult):
        _hops(result.hops)
    _ladder(result)


def _hops(hops: list[probes.TraceHop]) -> None:
    """One line a traceroute step, as sipsak -T prints them: Max-Forwards, who answered, rtt,
    the answer (or why none came), its To tag and the Contact of an answer that has one."""
    from rich.markup import escape

    for hop in hops:
        if hop.status_code is None:
            line = f"{hop.max_forwards:>3}  *  {hop.error or 'no answer'}"
        else:
            line = (f"{hop.max_forwards:>3}  {hop.agent or '?'}  ({hop.rtt:.3f} ms)  {hop.status_code} "
                    f"{hop.status_text}  tag={hop.to_tag}" + (f"  contact={hop.contact}" if hop.contact else ""))
        console.print(escape(printable(line)), soft_wrap=True)


# -------------------------------------------------------------------- commands

HostArg = argument("host", metavar="HOST",
                   help="SIP server: HOST, HOST:PORT, [IPv6]:PORT, sip:HOST:PORT;transport=tcp, sips:HOST or "
                        "a WebSocket URL ws://HOST:PORT/PATH, wss://… (SIP over WebSocket, RFC 7118) "
                        "(sip:bob@HOST addresses bob: To and Request-URI; register: the user).")
PortOpt = option("--port", "-p", type=click.IntRange(1, 65535), metavar="PORT",
                 help="Server port [default: from HOST, else DNS SRV (RFC 3263), else 5060, 5061 for tls, "
                      "80 for ws, 443 for wss].")
TransportOpt = option("--transport", "-t", metavar="udp|tcp|tls|ws|wss", show_default=False,
                      help="Transport, any case [default: from HOST, else udp; tls for sips:].")
SipsOpt = option("--sips", is_flag=True, help="Use sips: URIs (implies --transport tls unless wss).")
LocalIpOpt = option("--local-ip", metavar="IP", help="Send from this address of this host (SIPp -i) "
                    "[default: the one the routing table picks for HOST].")
LocalPortOpt = option("--local-port", default=0, type=click.IntRange(0, 65535), metavar="PORT",
                      help="Send from this local port (sipsak -l; 0: any).")
UserOpt = option("--user", "-u", metavar="USER", help="User part of the URIs we build / Digest username.")
DomainOpt = option("--domain", metavar="DOMAIN", help="SIP domain for the URIs [default: HOST].")
FromOpt = option("--from", "from_", metavar="URI", help="From: user part or full URI.")
ToOpt = option("--to", metavar="URI", help="To: user part or full URI.")
UriOpt = option("--uri", metavar="URI", help="Request-URI.")
TimeoutOpt = option("--timeout", default=10000, type=click.IntRange(100, 120000), metavar="MS",
                    help="ms to wait for each final response (and to connect).")
T1Opt = option("--t1", type=click.IntRange(50, 10000), metavar="MS", help="RFC 3261 T1 in ms [default: 500].")
CaOpt = option("--ca-file", metavar="FILE", help="PEM bundle to verify the server certificate with.")
InsecureOpt = option("--insecure", "-k", is_flag=True, help="Do not verify the TLS certificate.")
JsonOpt = option("--json", "as_json", is_flag=True, help="Print exactly the HTTP API's JSON body.")
PcapOpt = option("--pcap", metavar="FILE", help="Write the exchange as pcapng (Wireshark, tshark).")
HeaderOpt = option("--header", "-H", "headers", multiple=True, metavar="'NAME: VALUE'",
                   help="A header field added to each request (repeatable; sipsak -j): X-…, P-Asserted-Identity, "
                        "Route, Event…; a User-Agent replaces ours; the fields skinnysip writes are refused.")
NagiosOpt, WarningOpt, CriticalOpt = nagios_options("SIP", "2xx; auth: authenticated", "a refused login")


#: the first parameters of every probe command (HOST, how to reach it, fields added) and the last
#: (timing, TLS checking and output)
_TARGET = (HostArg, PortOpt, TransportOpt, SipsOpt, LocalIpOpt, LocalPortOpt, HeaderOpt)
_OUTPUT = (TimeoutOpt, T1Opt, CaOpt, InsecureOpt, JsonOpt, PcapOpt, NagiosOpt, WarningOpt, CriticalOpt)
#: whom an OPTIONS addresses (options, traceroute)
_ADDRESSING = (UserOpt, DomainOpt, FromOpt, ToOpt, UriOpt)


def _login_password(password: str | None) -> str:
    """The password of a command that logs in (auth, usrloc): ``--password``, else
    ``$SKINNYSIP_PASSWORD``, else a hidden prompt on a terminal; a usage error without one."""
    secret = password_from(password, prompt=True)
    if secret is None:
        raise click.BadParameter("no password: use --password, $SKINNYSIP_PASSWORD or a terminal", param_hint="--password")
    return secret


def _run(operation: Any, request: probes.ProbeRequest, as_json: bool, pcap: str | None,
         nagios: NagiosArgs = (False, None, None)) -> None:
    check_source(request.source_ip, request.source_port, stream=request.transport not in ("udp", None),
                 target=request.host)
    with collector_paused():  # one bounded run, then the process ends
        result = asyncio.run(operation(request))
    write_pcap(pcap, result.exchange)
    emit(result, as_json, render, exit_status(result), nagios_report(result, *nagios[1:]) if nagios[0] else None)


def nagios_report(result: probes.SIPProbeResult, warning: float | None, critical: float | None) -> tuple[int, str]:
    """The monitoring plugin's state and line for ``result`` (:func:`nagios_verdict`): OK for
    what exits 0, WARNING for another final answer, CRITICAL for no answer, a refused login or
    a usrloc request not delivered; the round trip ``rtt`` against the thresholds. Performance
    data: ``rtt`` in ms (a traceroute adds ``hops``, a usrloc ``delivery`` in ms)."""
    status = exit_status(result)
    answer = f"{result.status_code} {result.status_text}".strip() if result.status_code is not None else None
    where = f"{result.server}/{result.transport}"
    login = isinstance(result, probes.DigestAuthResult)
    reach = isinstance(result, probes.UsrlocResult)
    extra: list[str] = []
    if isinstance(result, probes.TracerouteResult):
        extra.append(perf_value("hops", len(result.hops)))
    if isinstance(result, probes.UsrlocResult) and result.delivery_time is not None:
        extra.append(perf_value("delivery", result.delivery_time, "ms"))
    if status == EXIT_OK and isinstance(result, probes.UsrlocResult):
        text = f"{result.method} to the registered AOR came back through {where}"
    elif status == EXIT_OK:
        text = f"{'authenticated: ' if login else ''}{answer} from {where}"
    elif answer is not None:
        prefix = "login refused: " if login else "not delivered: " if reach and not result.error else ""
        text = f"{prefix}{answer} from {where}" + (f" ({result.error})" if result.error else "")
    else:
        text = result.error or f"no answer from {where}"
    rtt = result.rtt if answer is not None else None
    if rtt is not None and result.server_agent and not reach:  # usrloc: the agent is ours or the AOR's
        text += f" ({result.server_agent})"
    return nagios_verdict("SIP", status, text, rtt, warning, critical, answered_critical=login or reach, perf=extra)


@app.command("options", epilog=EXIT_STATUS_HELP)
@stacked(*_TARGET)
@stacked(*_ADDRESSING)
@stacked(*_OUTPUT)
def options_cmd(
    host: str, port: int | None, transport: str | None, sips: bool, local_ip: str | None, local_port: int,
    headers: tuple[str, ...],
    user: str | None, domain: str | None,
    from_: str | None, to: str | None, uri: str | None, timeout: int, t1: int | None, ca_file: str | None,
    insecure: bool, as_json: bool, pcap: str | None, nagios: bool, warning: float | None, critical: float | None,
) -> None:
    """OPTIONS: status, allowed methods, extensions, accepted types, server agent."""
    req = _request(host, port, transport, sips, user, None, domain, from_, to, uri, timeout, t1, ca_file, insecure,
                   source=(local_ip, local_port), headers=headers)
    _run(probes.options, req, as_json, pcap, (nagios, warning, critical))


@app.command("register", epilog=EXIT_STATUS_HELP)
@stacked(*_TARGET)
@UserOpt
@DomainOpt
@FromOpt
@UriOpt
@stacked(*_OUTPUT)
def register_cmd(
    host: str, port: int | None, transport: str | None, sips: bool, local_ip: str | None, local_port: int,
    headers: tuple[str, ...],
    user: str | None, domain: str | None,
    from_: str | None, uri: str | None, timeout: int, t1: int | None, ca_file: str | None,
    insecure: bool, as_json: bool, pcap: str | None, nagios: bool, warning: float | None, critical: float | None,
) -> None:
    """REGISTER with Expires: 0 (no credentials sent): does the server require authentication,
    and how? A 401/407 challenge exits 1 (use "sip auth" to log in)."""
    req = _request(host, port, transport, sips, user, None, domain, from_, None, uri, timeout, t1, ca_file, insecure,
                   host_user="user", source=(local_ip, local_port), headers=headers)
    _run(probes.register, req, as_json, pcap, (nagios, warning, critical))


@app.command("invite", epilog=EXIT_STATUS_HELP)
@stacked(*_TARGET)
@UserOpt
@option("--password", metavar="PASSWORD",
        help="Digest password, used only with --user and only if the server challenges the INVITE "
             "(or $SKINNYSIP_PASSWORD; never prompted).")
@DomainOpt
@FromOpt
@ToOpt
@UriOpt
@option("--identity-key", metavar="PEM", help="Sign the INVITE (STIR/SHAKEN, RFC 8224/8588: Date and Identity, "
        "ES256) with this EC P-256 private key; with --identity-x5u.")
@option("--identity-x5u", metavar="URL", help="The http(s) URL of --identity-key's certificate (x5u, info).")
@option("--attest", default="A", help="SHAKEN attestation of the signed INVITE: A, B or C.")
@stacked(*_OUTPUT)
def invite_cmd(
    host: str, port: int | None, transport: str | None, sips: bool, local_ip: str | None, local_port: int,
    headers: tuple[str, ...],
    user: str | None, password: str | None,
    domain: str | None, from_: str | None, to: str | None, uri: str | None, identity_key: str | None,
    identity_x5u: str | None, attest: str, timeout: int, t1: int | None, ca_file: str | None, insecure: bool,
    as_json: bool, pcap: str | None, nagios: bool, warning: float | None, critical: float | None,
) -> None:
    """INVITE with SDP; CANCEL after --timeout if only ringing; ACK/BYE so no call is left.
    Exits 0 when the call connected (2xx)."""
    secret = password_from(password, prompt=False) if user else None
    req = _request(host, port, transport, sips, user, secret, domain, from_, to, uri, timeout, t1, ca_file, insecure,
                   source=(local_ip, local_port), headers=headers)
    if identity_key is not None or identity_x5u is not None:
        from skinnysip.sip.identity import IdentityError, IdentitySigner

        if identity_key is None or identity_x5u is None:
            fail("--identity-key and --identity-x5u go together (the key signs, x5u names its certificate)",
                 EXIT_USAGE)
        pem = pem_text(identity_key, "--identity-key") or ""
        try:
            req.identity = IdentitySigner.from_pem(pem.encode("ascii"), identity_x5u, attest.upper())
        except IdentityError as exc:
            fail(f"--identity-key: {exc.reason}", EXIT_USAGE)
    _run(probes.invite, req, as_json, pcap, (nagios, warning, critical))


@app.command("auth", epilog=EXIT_STATUS_HELP)
@stacked(*_TARGET)
@option("--user", "-u", required=True, metavar="USER", help="Digest username.")
@option("--password", metavar="PASSWORD",
        help="Digest password [default: $SKINNYSIP_PASSWORD, else a hidden prompt on a terminal]; "
             "never printed.")
@DomainOpt
@FromOpt
@UriOpt
@option("--digest-checks", is_flag=True,
        help="After the login, also try whether the server takes the nonce again under the next nc "
             "(credential reuse, RFC 3261 §22.3) and whether it takes the login's Authorization replayed "
             "(RFC 7616 §3.4: nc is there to detect replays): two more REGISTERs.")
@option("--enumeration-check", is_flag=True,
        help="Also log in as a user that cannot exist and as --user with a wrong password (Expires: 0, no "
             "binding made) and compare the answers: different ones tell anyone which users exist (what svwar "
             "looks for). The wrong password counts towards any lock-out policy.")
@stacked(*_OUTPUT)
def auth_cmd(
    host: str, port: int | None, transport: str | None, sips: bool, local_ip: str | None, local_port: int,
    headers: tuple[str, ...],
    user: str, password: str | None,
    domain: str | None, from_: str | None, uri: str | None, digest_checks: bool, enumeration_check: bool,
    timeout: int, t1: int | None,
    ca_file: str | None, insecure: bool, as_json: bool, pcap: str | None, nagios: bool, warning: float | None,
    critical: float | None,
) -> None:
    """Digest login by REGISTER (MD5/SHA-256/SHA-512-256); the test binding is removed after.
    Exits 0 when authenticated, 1 when the login was refused."""
    req = _request(host, port, transport, sips, user, _login_password(password), domain, from_, None, uri, timeout, t1,
                   ca_file, insecure, host_user="user", source=(local_ip, local_port), headers=headers)
    req.digest_checks = digest_checks
    req.enumeration_check = enumeration_check
    _run(probes.digest_auth, req, as_json, pcap, (nagios, warning, critical))


@app.command("traceroute", epilog=EXIT_STATUS_HELP)
@stacked(*_TARGET)
@stacked(*_ADDRESSING)
@option("--max-hops", default=20, type=click.IntRange(1, probes.MAX_TRACE_HOPS), metavar="N",
        help="Steps at most (Max-Forwards 0 … N-1).")
@stacked(*_OUTPUT)
def traceroute_cmd(
    host: str, port: int | None, transport: str | None, sips: bool, local_ip: str | None, local_port: int,
    headers: tuple[str, ...],
    user: str | None, domain: str | None, from_: str | None, to: str | None, uri: str | None, max_hops: int,
    timeout: int, t1: int | None, ca_file: str | None, insecure: bool, as_json: bool, pcap: str | None,
    nagios: bool, warning: float | None, critical: float | None,
) -> None:
    """OPTIONS with Max-Forwards 0, 1, 2… (sipsak -T): each proxy on the path answers 483 Too Many
    Hops in turn, until the destination answers. Exits 0 when it answered 2xx."""
    req = _request(host, port, transport, sips, user, None, domain, from_, to, uri, timeout, t1, ca_file, insecure,
                   source=(local_ip, local_port), headers=headers)
    _run(functools.partial(probes.traceroute, max_hops=max_hops), req, as_json, pcap, (nagios, warning, critical))


@app.command("request", epilog=EXIT_STATUS_HELP)
@argument("method", metavar="METHOD", help="The method: MESSAGE, NOTIFY, INFO, PUBLISH, SUBSCRIBE, an extension… "
          "(case-sensitive, RFC 3261 §7.1; not INVITE, ACK, CANCEL or REGISTER).")
@stacked(*_TARGET)
@stacked(*_ADDRESSING)
@option("--password", metavar="PASSWORD", help="Digest password, used with --user when the server challenges "
        "(or $SKINNYSIP_PASSWORD; never prompted).")
@option("--body", metavar="TEXT", help="The body (UTF-8).")
@option("--body-file", metavar="FILE", help="The body, read from FILE as it is (at most 64 KiB).")
@option("--content-type", metavar="TYPE", help="Content-Type of the body [default: text/plain].")
@stacked(*_OUTPUT)
def request_cmd(
    method: str, host: str, port: int | None, transport: str | None, sips: bool, local_ip: str | None,
    local_port: int, headers: tuple[str, ...], user: str | None, domain: str | None, from_: str | None,
    to: str | None, uri: str | None, password: str | None, body: str | None, body_file: str | None,
    content_type: str | None, timeout: int, t1: int | None, ca_file: str | None, insecure: bool, as_json: bool,
    pcap: str | None, nagios: bool, warning: float | None, critical: float | None,
) -> None:
    """Any request but INVITE, ACK, CANCEL and REGISTER (sipsak with a message of your own): a MESSAGE, a
    NOTIFY with Event: check-sync that makes a phone fetch its configuration, an INFO, a
    PUBLISH… with --header fields and a --body; the answer, Digest when challenged.
    Exits 0 on a 2xx."""
    if body is not None and body_file is not None:
        raise click.BadParameter("give --body or --body-file, not both", param_hint="--body")
    payload = body.encode() if body is not None else b""
    if body_file is not None:
        path = readable_file(body_file, "--body-file") or body_file
        with open(path, "rb") as f:
            payload = f.read(MAX_REQUEST_BODY + 1)  # one octet more: too large shows
    try:
        check_one_request(method, payload, content_type)
    except ValueError as exc:
        field, _, reason = str(exc).partition(": ")
        flag = {"method": "METHOD", "content_type": "--content-type"}.get(field, "--body-file" if body_file else "--body")
        raise click.BadParameter(reason, param_hint=flag) from None
    secret = password_from(password, prompt=False) if user else None
    req = _request(host, port, transport, sips, user, secret, domain, from_, to, uri, timeout, t1, ca_file, insecure,
                   source=(local_ip, local_port), headers=headers)
    operation = functools.partial(probes.request, method=method, body=payload, content_type=content_type)
    _run(operation, req, as_json, pcap, (nagios, warning, critical))


@app.command("usrloc", epilog=EXIT_STATUS_HELP)
@stacked(*_TARGET)
@option("--user", "-u", required=True, metavar="USER", help="The user to register (the AOR is USER@DOMAIN) and "
        "Digest username.")
@option("--password", metavar="PASSWORD",
        help="Digest password [default: $SKINNYSIP_PASSWORD, else a hidden prompt on a terminal]; never printed.")
@DomainOpt
@UriOpt
@option("--method", default="MESSAGE", type=click.Choice(probes.USRLOC_METHODS, case_sensitive=False),
        help="What to send to the AOR through the server.")
@option("--expires", default=60, type=click.IntRange(1, 3600), metavar="S",
        help="Seconds the test binding asks for (it is removed at the end).")
@stacked(*_OUTPUT)
def usrloc_cmd(
    host: str, port: int | None, transport: str | None, sips: bool, local_ip: str | None, local_port: int,
    headers: tuple[str, ...], user: str, password: str | None, domain: str | None, uri: str | None, method: str,
    expires: int, timeout: int, t1: int | None, ca_file: str | None, insecure: bool, as_json: bool,
    pcap: str | None, nagios: bool, warning: float | None, critical: float | None,
) -> None:
    """Is a registered user reachable? (sipsak -U): REGISTER USER, send a MESSAGE (or OPTIONS)
    to USER's AOR through the server, answer it when it comes back to us, remove the binding.
    Exits 0 when it came back and was answered 2xx, 1 when the registration was refused or
    the server answered without delivering it."""
    req = _request(host, port, transport, sips, user, _login_password(password), domain, None, None, uri, timeout, t1,
                   ca_file, insecure, host_user="user", source=(local_ip, local_port), headers=headers)
    req.expires = expires
    _run(functools.partial(probes.usrloc, method=method.upper()), req, as_json, pcap, (nagios, warning, critical))


@app.command("listen", epilog="Exit status: 0 stopped by Ctrl-C or SIGTERM; 2 usage or local error "
             "(bad arguments, unreadable --tls-cert/--tls-key, address not local or port in use).")
@option("--host", default="127.0.0.1", metavar="ADDRESS", help="Local address to listen on.")
@option("--port", "-p", default=5060, type=click.IntRange(0, 65535), metavar="PORT",
        help="Port to listen on (0: any free port).")
@option("--transport", "-t", default="udp", metavar="udp|tcp|tls|ws|wss",
        help="Transport, any case (ws/wss: SIP over WebSocket, any path).")
@option("--answer", default="200", metavar="ANSWER",
        help="INVITE answer: 200 (SDP + RTP echo), ring (180 until CANCEL), or a code 300-699 (486, 603, ...).")
@option("--tls-cert", metavar="FILE", help="PEM certificate (chain) for --transport tls or wss.")
@option("--tls-key", metavar="FILE", help="PEM private key for --tls-cert.")
@option("--max-dialogs", default=100, type=click.IntRange(1, 100000), metavar="N",
        help="Calls at once (more get 486).")
@option("--json", "as_json", is_flag=True, help="One JSON object per message sent or received.")
@PcapOpt
def listen_cmd(
    host: str, port: int, transport: str, answer: str, tls_cert: str | None, tls_key: str | None,
    max_dialogs: int, as_json: bool, pcap: str | None,
) -> None:
    """A UAS for testers (like sipp -sn uas): answers OPTIONS, INVITE (--answer), BYE, CANCEL;
    prints every request and response as it happens, until Ctrl-C. With --pcap the
    exchange (the last messages kept) is written when it stops."""
    import json
    import signal

    from skinnysip.addresses import hostport
    from skinnysip.net.sip_transport import SIPTransportError
    from skinnysip.net.trace import TraceRecord, to_wire_messages
    from skinnysip.probes.listen import ListenConfig, Responder

    if answer != "ring" and not (answer.isascii() and answer.isdigit() and len(answer) == 3
                                 and (answer == "200" or 300 <= int(answer) <= 699)):
        raise click.BadParameter("200, ring, or a status code 300-699", param_hint="--answer")
    chosen = transport_value(transport) or "udp"
    bind_host = _validated("--host", host, check_host) or host
    readable_file(tls_cert, "--tls-cert")
    readable_file(tls_key, "--tls-key")
    if chosen in ("tls", "wss") and not tls_cert:
        raise click.BadParameter(f"--transport {chosen} needs --tls-cert (and --tls-key)", param_hint="--tls-cert")

    def show(record: TraceRecord) -> None:
        if as_json:
            print(json.dumps({"direction": record.direction, "time": record.time, "local": record.local,
                              "remote": record.remote, "transport": record.transport, "summary": record.summary,
                              "callId": record.call_id}), flush=True)
        else:
            arrow = "→" if record.direction == "sent" else "←"
            console.print(f"{time.strftime('%H:%M:%S')} {arrow} {record.remote:<22} {printable(record.summary)}",
                          markup=False, highlight=False)

    async def run() -> None:
        config = ListenConfig(host=bind_host, port=port, transport=chosen, answer=answer,  # type: ignore[arg-type]
                              tls_cert=tls_cert, tls_key=tls_key, max_dialogs=max_dialogs)
        responder = Responder(config, on_record=show)
        try:
            local = await responder.start()
        except SIPTransportError as exc:
            await responder.close()
            fail(exc.reason, EXIT_USAGE)
        if not as_json:
            console.print(f"listening on {hostport(*local)}/{chosen}; INVITE → {answer}; Ctrl-C to stop",
                          markup=False, highlight=False)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                loop.add_signal_handler(sig, stop.set)
            except (NotImplementedError, RuntimeError, ValueError):  # not the main thread (tests)
                pass
        try:
            await stop.wait()
        finally:
            exchange = to_wire_messages(responder.endpoint.trace)
            await responder.close()
            write_pcap(pcap, exchange)

    try:
        asyncio.run(run())
    except KeyboardInterrupt:
        pass
