"""``skinnysip sip options|register|invite|auth HOST …``: the SIP probes on the command line.

By default a readable summary and a compact ladder (``→`` sent, ``←`` received) are
printed; ``--json`` prints exactly the HTTP API's response body. The exit status is 0 when
the probe succeeded, 1 otherwise (for ``auth`` also when the login was refused), 2 for
bad arguments. Times on the command line are in
milliseconds, as in the API. The password comes from ``--password``,
``$SKINNYSIP_PASSWORD`` or a hidden prompt, and is never printed.
"""

from __future__ import annotations

import asyncio
import time
from enum import StrEnum
from typing import Any

import typer

from skinnysip.addresses import check_host
from skinnysip.cli.common import console, emit, field_table, ladder, password_from
from skinnysip.probes import sip as probes
from skinnysip.probes.sip import check_party, check_uri, check_user
from skinnysip.result import ResultModel

app = typer.Typer(no_args_is_help=True, help="SIP/SIPS probes: options, register, invite, auth; listen (a UAS).")


class TransportChoice(StrEnum):
    udp = "udp"
    tcp = "tcp"
    tls = "tls"


def _validated(kind: str, value: str | None, check: Any) -> str | None:
    if value is None:
        return None
    try:
        return check(value)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint=kind) from exc


def _request(
    host: str, port: int | None, transport: TransportChoice, sips: bool, user: str | None,
    password: str | None, domain: str | None, from_: str | None, to: str | None, uri: str | None,
    timeout: int, t1: int | None, ca_file: str | None, insecure: bool,
) -> probes.ProbeRequest:
    if sips and transport is not TransportChoice.tls:
        transport = TransportChoice.tls
    return probes.ProbeRequest(
        host=_validated("HOST", host, check_host) or host,
        port=port,
        transport=transport.value,
        scheme="sips" if sips else "sip",
        uri=_validated("--uri", uri, check_uri),
        from_uri=_validated("--from", from_, check_party),
        to_uri=_validated("--to", to, check_party),
        username=_validated("--user", user, check_user),
        password=password,
        domain=domain,
        timeout=timeout / 1000,
        t1=(t1 or 500) / 1000,
        tls_verify=not insecure,
        ca_file=ca_file,
    )


# -------------------------------------------------------------------- rendering


def _ladder(result: probes.SIPProbeResult) -> None:
    ladder(result.exchange)


def _fields(result: probes.SIPProbeResult) -> list[tuple[str, Any]]:
    rows: list[tuple[str, Any]] = [
        ("server", f"{result.server}/{result.transport}"),
        ("status", f"{result.status_code} {result.status_text}" if result.status_code else None),
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


def render(result: ResultModel) -> None:
    """Print a summary table and the ladder of ``result`` (a SIP probe result)."""
    assert isinstance(result, probes.SIPProbeResult)
    if result.success:
        headline = "[green]ok[/green]"
        if isinstance(result, probes.DigestAuthResult):
            headline = "[green]authenticated[/green]" if result.authenticated else "[red]not authenticated[/red]"
    else:
        headline = f"[red]failed:[/red] {result.error}"
    console.print(headline)
    field_table(_fields(result) if result.success else [("server", f"{result.server}/{result.transport}")])
    _ladder(result)


# -------------------------------------------------------------------- commands

HostArg = typer.Argument(..., help="SIP server: host name, IPv4 or IPv6 address.")
PortOpt = typer.Option(None, "--port", "-p", min=1, max=65535, help="Server port [default: DNS SRV (RFC 3263), else 5060, 5061 for tls].")
TransportOpt = typer.Option(TransportChoice.udp, "--transport", "-t", help="udp, tcp or tls.")
SipsOpt = typer.Option(False, "--sips", help="Use sips: URIs (implies --transport tls).")
UserOpt = typer.Option(None, "--user", "-u", help="User / Digest username.")
PasswordOpt = typer.Option(None, "--password", help="Digest password (or $SKINNYSIP_PASSWORD, or a prompt).")
DomainOpt = typer.Option(None, "--domain", help="SIP domain for the URIs [default: HOST].")
FromOpt = typer.Option(None, "--from", help="From: user part or full URI.")
ToOpt = typer.Option(None, "--to", help="To: user part or full URI.")
UriOpt = typer.Option(None, "--uri", help="Request-URI.")
TimeoutOpt = typer.Option(10000, "--timeout", min=100, max=120000, help="ms to wait for each final response.")
T1Opt = typer.Option(None, "--t1", min=50, max=10000, help="RFC 3261 T1 in ms [default: 500].")
CaOpt = typer.Option(None, "--ca-file", help="PEM bundle to verify the server certificate with.")
InsecureOpt = typer.Option(False, "--insecure", "-k", help="Do not verify the TLS certificate.")
JsonOpt = typer.Option(False, "--json", help="Print exactly the HTTP API's JSON body.")


def _run(operation: Any, request: probes.ProbeRequest, as_json: bool) -> None:
    result = asyncio.run(operation(request))
    try:
        emit(result, as_json, render)
    except typer.Exit as done:
        # ``auth`` is a yes/no question: a refused login is a failure for scripts too.
        if isinstance(result, probes.DigestAuthResult) and result.success and not result.authenticated:
            raise typer.Exit(1) from done
        raise


@app.command("options")
def options_cmd(
    host: str = HostArg, port: int | None = PortOpt, transport: TransportChoice = TransportOpt,
    sips: bool = SipsOpt, user: str | None = UserOpt, domain: str | None = DomainOpt,
    from_: str | None = FromOpt, to: str | None = ToOpt, uri: str | None = UriOpt,
    timeout: int = TimeoutOpt, t1: int | None = T1Opt, ca_file: str | None = CaOpt,
    insecure: bool = InsecureOpt, as_json: bool = JsonOpt,
) -> None:
    """OPTIONS: status, allowed methods, extensions, accepted types, server agent."""
    req = _request(host, port, transport, sips, user, None, domain, from_, to, uri, timeout, t1, ca_file, insecure)
    _run(probes.options, req, as_json)


@app.command("register")
def register_cmd(
    host: str = HostArg, port: int | None = PortOpt, transport: TransportChoice = TransportOpt,
    sips: bool = SipsOpt, user: str | None = UserOpt, domain: str | None = DomainOpt,
    from_: str | None = FromOpt, uri: str | None = UriOpt,
    timeout: int = TimeoutOpt, t1: int | None = T1Opt, ca_file: str | None = CaOpt,
    insecure: bool = InsecureOpt, as_json: bool = JsonOpt,
) -> None:
    """REGISTER with Expires: 0: does the server require authentication, and how?"""
    req = _request(host, port, transport, sips, user, None, domain, from_, None, uri, timeout, t1, ca_file, insecure)
    _run(probes.register, req, as_json)


@app.command("invite")
def invite_cmd(
    host: str = HostArg, port: int | None = PortOpt, transport: TransportChoice = TransportOpt,
    sips: bool = SipsOpt, user: str | None = UserOpt, password: str | None = PasswordOpt,
    domain: str | None = DomainOpt, from_: str | None = FromOpt, to: str | None = ToOpt,
    uri: str | None = UriOpt, timeout: int = TimeoutOpt, t1: int | None = T1Opt,
    ca_file: str | None = CaOpt, insecure: bool = InsecureOpt, as_json: bool = JsonOpt,
) -> None:
    """INVITE with SDP; CANCEL after --timeout if only ringing; ACK/BYE so no call is left."""
    secret = password_from(password, prompt=False) if user else None
    req = _request(host, port, transport, sips, user, secret, domain, from_, to, uri, timeout, t1, ca_file, insecure)
    _run(probes.invite, req, as_json)


@app.command("auth")
def auth_cmd(
    host: str = HostArg, port: int | None = PortOpt, transport: TransportChoice = TransportOpt,
    sips: bool = SipsOpt, user: str = typer.Option(..., "--user", "-u", help="Digest username."),
    password: str | None = PasswordOpt, domain: str | None = DomainOpt, from_: str | None = FromOpt,
    uri: str | None = UriOpt, timeout: int = TimeoutOpt, t1: int | None = T1Opt,
    ca_file: str | None = CaOpt, insecure: bool = InsecureOpt, as_json: bool = JsonOpt,
) -> None:
    """Digest login by REGISTER (MD5/SHA-256/SHA-512-256); the test binding is removed after."""
    secret = password_from(password, prompt=True)
    if secret is None:
        raise typer.BadParameter("no password: use --password, $SKINNYSIP_PASSWORD or a terminal", param_hint="--password")
    req = _request(host, port, transport, sips, user, secret, domain, from_, None, uri, timeout, t1, ca_file, insecure)
    _run(probes.digest_auth, req, as_json)


@app.command("listen")
def listen_cmd(
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on."),
    port: int = typer.Option(5060, "--port", "-p", min=0, max=65535, help="Port to listen on (0: any free port)."),
    transport: TransportChoice = TransportOpt,
    answer: str = typer.Option("200", "--answer", help="INVITE answer: 200 (SDP + RTP echo), ring (180 until "
                               "CANCEL), or a code 300-699 (486, 603, ...)."),
    tls_cert: str | None = typer.Option(None, "--tls-cert", help="PEM certificate (chain) for --transport tls."),
    tls_key: str | None = typer.Option(None, "--tls-key", help="PEM private key for --tls-cert."),
    max_dialogs: int = typer.Option(100, "--max-dialogs", min=1, max=100000, help="Calls at once (more get 486)."),
    as_json: bool = typer.Option(False, "--json", help="One JSON object per message sent or received."),
) -> None:
    """A UAS for testers (like sipp -sn uas): answers OPTIONS, INVITE (--answer), BYE, CANCEL;
    prints every request and response as it happens, until Ctrl-C."""
    import json

    from skinnysip.addresses import hostport
    from skinnysip.net.sip_transport import SIPTransportError
    from skinnysip.net.trace import TraceRecord
    from skinnysip.probes.listen import ListenConfig, Responder

    if answer != "ring" and not (answer.isdigit() and (answer == "200" or 300 <= int(answer) <= 699)):
        raise typer.BadParameter("200, ring, or a status code 300-699", param_hint="--answer")
    _validated("--host", host, check_host)

    def show(record: TraceRecord) -> None:
        if as_json:
            print(json.dumps({"direction": record.direction, "time": record.time, "local": record.local,
                              "remote": record.remote, "transport": record.transport, "summary": record.summary,
                              "callId": record.call_id}), flush=True)
        else:
            arrow = "→" if record.direction == "sent" else "←"
            console.print(f"{time.strftime('%H:%M:%S')} {arrow} {record.remote:<22} {record.summary}",
                          markup=False, highlight=False)

    async def run() -> None:
        config = ListenConfig(host=host, port=port, transport=transport.value, answer=answer, tls_cert=tls_cert,
                              tls_key=tls_key, max_dialogs=max_dialogs)
        responder = Responder(config, on_record=show)
        try:
            local = await responder.start()
        except SIPTransportError as exc:
            await responder.close()
            console.print(f"error: {exc.reason}", markup=False, highlight=False)
            raise typer.Exit(3) from exc
        if not as_json:
            console.print(f"listening on {hostport(*local)}/{transport.value}; INVITE → {answer}; Ctrl-C to stop",
                          markup=False, highlight=False)
        try:
            await asyncio.Event().wait()
        finally:
            await responder.close()

    try:
        asyncio.run(run())
    except KeyboardInterrupt:
        pass
