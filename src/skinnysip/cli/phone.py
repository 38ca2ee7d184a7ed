"""``skinnysip phone sip:alice@example.com …``: the softphone on the command line.

Three ways to run it:

- **one call**: ``--call TARGET --duration S`` places a call, keeps it up S seconds, hangs
  up; exit 0 when it connected, 1 when it did not (refused, busy, no answer) or the
  registration was refused, 3 when the server could not be reached.
- **answering**: ``--auto-answer [DELAY_S] --duration S`` answers every call (after DELAY_S)
  for S seconds; each call lasts until the far end hangs up. Exit 0 when every call
  connected.
- **interactive** (otherwise): commands on stdin in the baresip manner — ``dial TARGET``,
  ``accept [ID]``, ``reject [ID] [CODE]``, ``hangup [ID]``, ``hold [ID]``, ``resume [ID]``,
  ``mute [ID]``, ``unmute [ID]`` (silence sent instead of our audio; no re-INVITE),
  ``transfer TARGET [ID]``, ``atransfer OTHER_ID [ID]`` (attended, RFC 3891), ``dtmf DIGITS [ID]``,
  ``message TARGET TEXT``, ``calls``,
  ``reg`` (the registration's state), ``register``, ``unregister`` (now), ``sleep S``, ``quit``. ``--exec 'dial bob; sleep 5; hangup; quit'`` runs commands
  first (a script). The current call is the newest live one. ``transfer`` and ``hangup`` go
  on in the background — a transfer may wait up to 60 s for the transferee's final NOTIFY, a
  BYE 32 s for its answer — and the next command does not wait for them; a transfer prints
  ``transfer of call N: done (the target answered 200)`` (or that the call ended first) or an
  ``error:`` line when it ends.

``--json`` prints one JSON event per line (the API's WebSocket form); otherwise one line per
event; ``--pcap FILE`` writes the phone's exchange as pcapng when it stops, with every call's
RTP and RTCP (each stream's bounded :class:`~skinnysip.net.media.PacketLog`). SIGINT/SIGTERM:
calls are hung up and the phone unregistered before exit. Servers (``--registrar``,
``--proxy``, ``--sccp``) are written ``HOST``, ``HOST:PORT``, ``[v6]:PORT`` or (SIP) a
``sip:``/``sips:`` URI whose ``;transport=`` must agree with ``--transport``. Exit status as
every command (:data:`~skinnysip.cli.common.EXIT_STATUS_HELP`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shlex
import signal
import sys
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import click

from skinnysip.addresses import format_host, hostport
from skinnysip.cli.common import (
    EXIT_ANSWERED,
    EXIT_NO_ANSWER,
    EXIT_OK,
    EXIT_STATUS_HELP,
    EXIT_USAGE,
    Command,
    FloatRange,
    Target,
    argument,
    check_source,
    checked_ip,
    comma_list,
    console,
    err_console,
    exit_with,
    merge_target,
    option,
    parse_target,
    password_from,
    port_range,
    printable,
    readable_file,
    transport_value,
    writable_directory,
    write_pcap,
)
from skinnysip.sdp import SRTP_MODES, check_srtp_suites

EXIT_NO_CALL, EXIT_UNREACHABLE = EXIT_ANSWERED, EXIT_NO_ANSWER

#: account field named in a ValueError → the flag the user typed
#: calls whose RTP/RTCP ``--pcap`` writes at most (the newest)
MAX_PCAP_CALLS = 50
_FLAGS = {"aor": "AOR", "registrar": "--registrar", "outbound_proxy": "--proxy", "source": "--play",
          "record_dir": "--record", "auth_user": "--user", "transport": "--transport", "srtp": "--srtp",
          "dtmf": "--dtmf", "expires": "--expires", "listen_port": "--listen-port", "listen_host": "--local-ip",
          "soundcard": "--soundcard",
          "codecs": "--codecs", "instance_id": "--instance-id", "identity_key": "--identity-key",
          "identity_x5u": "--identity-x5u", "identity_attest": "--attest",
          "identity_certificate": "--identity-cert", "identity_ca": "--identity-ca"}


def _fail(message: str, code: int = EXIT_USAGE) -> click.exceptions.Exit:
    err_console.print(f"error: {printable(message)}", markup=False, highlight=False, soft_wrap=True)
    return exit_with(code)


def _flag_message(text: str) -> str:
    """An account ``ValueError`` (``registrar: bad host``) with the CLI flag instead of the field."""
    from skinnysip.result import validation_message

    text = validation_message(text)
    field, colon, rest = text.partition(":")
    if colon and field in _FLAGS:
        return f"{_FLAGS[field]}:{rest}"
    return text


def _server(text: str | None, flag: str) -> Target | None:
    if text is None:
        return None
    return parse_target(text, flag)


class PhoneCommand(Command):
    """The ``phone`` command: its arguments go through :func:`fix_auto_answer` before parsing
    (only its own: other commands' arguments are never rewritten)."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        return super().parse_args(ctx, fix_auto_answer(args))


@click.command("phone", cls=PhoneCommand, epilog=EXIT_STATUS_HELP,
               help="A SIP softphone: register, call and answer, hold, transfer, DTMF, messages.")
@argument("aor", required=False, help="Your address of record, e.g. sip:alice@example.com (SIP).")
@option("--sccp", metavar="HOST[:PORT]", help="Be an SCCP phone on this call manager.")
@option("--device", "-d", default="SEP001122334455", metavar="NAME", help="SCCP device name: SEP + 12 hex digits.")
@option("--device-type", default=7, type=click.IntRange(0, 65535), help="SCCP device type (7 = 7960).")
@option("--sccp-tls", is_flag=True, help="SCCP over TLS (port 2443 by default).")
@option("--registrar", metavar="HOST[:PORT]",
        help="Registrar (or a sip: URI, or a ws:/wss: URL for SIP over WebSocket) [default: the AOR's host].")
@option("--proxy", metavar="HOST[:PORT]",
        help="Outbound proxy (or a sip: URI, or a ws:/wss: URL: a WebRTC gateway; loose route).")
@option("--transport", "-t", metavar="udp|tcp|tls|ws|wss",
        help="Transport, any case [default: from --registrar/--proxy, else udp].")
@option("--user", "-u", help="Digest auth user [default: the AOR's user].")
@option("--password", metavar="PASSWORD",
        help="Digest password, answering the registrar's and proxies' challenges to REGISTER, INVITE, "
             "MESSAGE... (or $SKINNYSIP_PASSWORD; never prompted; SIP only).")
@option("--proxy-realm", metavar="REALM",
        help="The realm of your own proxy or PBX: its credentials are reused across calls and messages, so a "
             "new INVITE, MESSAGE, SUBSCRIBE or PUBLISH draws no 401/407 first (RFC 3261 §22.3; credentials "
             "are always reused within a Call-ID).")
@option("--ca-file", help="PEM bundle to verify the server with (TLS).")
@option("--insecure", "-k", is_flag=True, help="Do not verify the TLS certificate.")
@option("--no-register", is_flag=True, help="Do not register (direct calls).")
@option("--local-ip", metavar="IP", help="This host's address to listen on and send from, SIP and media "
        "(pjsua --bound-addr, SIPp -i) [default: the one the routing table picks for the server].")
@option("--listen-port", default=0, type=click.IntRange(0, 65535), help="Local SIP port [default: any].")
@option("--rtp-ports", metavar="FIRST-LAST", help="Range the calls' RTP/RTCP port pairs are taken from (baresip "
        "rtp_ports) [default: any free pair].")
@option("--expires", default=600, type=click.IntRange(10, 86400), help="Registration expiry asked for, s.")
@option("--auto-answer", type=FloatRange(0, 3600),
        help="Answer calls after DELAY_S seconds [default 0 if given alone].")
@option("--ring-timeout", default=180.0, metavar="S", type=FloatRange(0.1, 3600), show_default=True,
        help="Seconds an incoming call rings unanswered before it is refused 480 (SIP).")
@option("--stun", "stun_server", metavar="HOST[:PORT]",
        help="STUN server outside your NAT: each call's SDP gives the address it sees the RTP socket at "
             "(RFC 8489; port 3478 by default; SIP).")
@option("--ice", is_flag=True, help="Be an ICE lite agent (RFC 8445 §2.5): ICE credentials and host candidates "
        "in our SDP, the far end's connectivity checks answered, media where it nominates (SIP).")
@option("--ws-invalid-host", is_flag=True,
        help="Over ws/wss, give a random ….invalid host in Via and Contact as browser phones (JsSIP, SIP.js) do: "
             "the server must reach us by the connection (RFC 7118).")
@option("--keepalive", "keepalive_interval", type=FloatRange(0.1, 3600), default=25.0, show_default=True,
        metavar="SECONDS",
        help="Seconds between keep-alives to the registrar/proxy (CRLF CRLF; a ping on a WebSocket, which must "
             "be answered within 10 s or the phone connects again; SIP).")
@option("--outbound", is_flag=True,
        help="SIP outbound (RFC 5626): register with +sip.instance and reg-id; when the registrar agrees, "
             "keep-alives every Flow-Timer (CRLF pings that must be answered; STUN over UDP) and a failed flow "
             "is registered again at once (SIP).")
@option("--gruu", is_flag=True, help="Ask the registrar for GRUUs (RFC 5627) and use the public one as our Contact "
        "in calls (SIP).")
@option("--instance-id", metavar="URN", help="The +sip.instance of --outbound/--gruu, e.g. urn:uuid:… [default: a "
        "new UUID each run] (SIP).")
@option("--mwi", is_flag=True, help="Subscribe to your mailbox's message-waiting state (SUBSCRIBE "
        "message-summary, RFC 3842, refreshed; SIP).")
@option("--watch", "watch_presence", multiple=True, metavar="TARGET", help="Subscribe to TARGET's presence "
        "(RFC 3856; PIDF, RFC 3863) and print each change; repeatable (SIP).")
@option("--blf", "watch_dialog", multiple=True, metavar="TARGET", help="Busy lamp: subscribe to TARGET's dialog "
        "state (RFC 4235) and print idle/calling/ringing/busy as it changes; repeatable (SIP).")
@option("--presence", "presence", metavar="open|closed[:NOTE]", help="Publish our own presence (PUBLISH, RFC "
        "3903), refreshed, removed at the end (SIP).")
@option("--identity-key", metavar="PEM", help="STIR/SHAKEN (RFC 8224, RFC 8588): sign each INVITE with this "
        "EC P-256 private key (an Identity header, ES256; with --identity-x5u; SIP).")
@option("--identity-x5u", metavar="URL", help="The http(s) URL of --identity-key's certificate, as the "
        "PASSporT's x5u and the Identity's info.")
@option("--attest", "identity_attest", default="A", help="SHAKEN attestation of our INVITEs: A (full), B "
        "(partial) or C (gateway).")
@option("--identity-cert", "identity_certificate", metavar="PEM", help="Verify the Identity of INVITEs we get "
        "with this certificate (no fetch; SIP).")
@option("--identity-fetch", is_flag=True, help="Verify the Identity of INVITEs we get with the certificate "
        "its x5u/info URL names, fetched over http(s) (3 s, 64 KiB, through the target policy; SIP).")
@option("--identity-ca", metavar="PEM", help="Trust anchors the Identity's certificate must chain to (SIP).")
@option("--identity-required", is_flag=True, help="Refuse INVITEs whose Identity does not verify: 428 without "
        "one, else RFC 8224's 436/437/438 or 403 Stale Date (SIP).")
@option("--call", help="Place one call to TARGET.")
@option("--duration", type=FloatRange(0, 86400), help="Seconds a --call lasts / --auto-answer runs.")
@option("--play", help="WAV file to send [default: a 440 Hz tone].")
@option("--tone", default=440.0, type=FloatRange(20, 3900), help="Tone to send when no --play, Hz.")
@option("--record", help="Directory for each call's WAV recordings.")
@option("--soundcard", help="Sound card as microphone and speaker (SIP): 'default', a PortAudio device name or "
        "index, or MIC,SPEAKER (needs the 'soundcard' extra).")
@option("--dtmf", "dtmf_mode", default="rfc4733", help="rfc4733 or info.")
@option("--codecs", metavar="LIST", help="Audio codecs offered and accepted, in order, e.g. PCMA,PCMU (SIP; of "
        "PCMU, PCMA, G722, opus) [default: all available, wideband first].")
@option("--srtp", default="off", help="SRTP with SDES keys (RFC 4568): optional (RTP/AVP + a=crypto, plain RTP "
        "if refused) or mandatory (RTP/SAVP) [mandatory if given alone]; dtls: DTLS-SRTP (RFC 5764, "
        "UDP/TLS/RTP/SAVP + a=fingerprint). Any but off answers DTLS-SRTP offers.")
@option("--srtp-suites", metavar="LIST", help="SDES suites offered, in order, and the only ones accepted, e.g. "
        "AEAD_AES_256_GCM,AES_CM_128_HMAC_SHA1_80 (of AES_CM_128_HMAC_SHA1_80, AES_CM_128_HMAC_SHA1_32, "
        "AEAD_AES_128_GCM, AEAD_AES_256_GCM) [default: offer the two AES_CM ones, accept any].")
@option("--exec", "execute", help="Commands to run first, separated by ';'.")
@option("--json", "as_json", is_flag=True, help="One JSON event per line.")
@option("--pcap", metavar="FILE",
        help="Write the exchange as pcapng (SIP/SCCP and the calls' RTP/RTCP) when the phone stops.")
def phone_cmd(
    aor: str | None, sccp: str | None, device: str, device_type: int, sccp_tls: bool, registrar: str | None,
    proxy: str | None, transport: str | None, user: str | None, password: str | None, proxy_realm: str | None,
    ca_file: str | None, insecure: bool, no_register: bool, local_ip: str | None, listen_port: int, rtp_ports: str | None, expires: int,
    auto_answer: float | None, ring_timeout: float, stun_server: str | None, ice: bool, ws_invalid_host: bool,
    keepalive_interval: float, outbound: bool, gruu: bool, instance_id: str | None, mwi: bool,
    watch_presence: tuple[str, ...], watch_dialog: tuple[str, ...], presence: str | None,
    identity_key: str | None, identity_x5u: str | None, identity_attest: str, identity_certificate: str | None,
    identity_fetch: bool, identity_ca: str | None, identity_required: bool,
    call: str | None, duration: float | None, play: str | None, tone: float, record: str | None,
    soundcard: str | None, dtmf_mode: str, codecs: str | None, srtp: str, srtp_suites: str | None,
    execute: str | None, as_json: bool, pcap: str | None,
) -> None:
    """A softphone (SIP, or SCCP with --sccp): register, call and answer, hold, transfer, DTMF,
    messages (SIP), recordings."""
    from skinnysip.net.stun import parse_server
    from skinnysip.phone.identity import IdentityService
    from skinnysip.phone.sip_phone import SIPAccount, instance_id_for
    from skinnysip.rtp.codecs import payload_types

    try:
        chosen = transport_value(transport)
    except click.BadParameter as exc:
        raise _fail(f"--transport: {exc.message}") from None
    if dtmf_mode not in ("rfc4733", "info"):
        raise _fail("--dtmf: rfc4733 or info")
    if srtp not in SRTP_MODES:
        raise _fail("--srtp: optional, mandatory or dtls (or off)")
    if call is not None and auto_answer is not None:
        raise _fail("--call and --auto-answer: choose one")
    from skinnysip.net.media import check_port_range

    try:
        media_ports = port_range(rtp_ports, "--rtp-ports")
        if media_ports is not None:
            check_port_range(media_ports, "--rtp-ports")
    except click.BadParameter as exc:
        raise _fail(f"--rtp-ports: {exc.message}") from None
    except ValueError as exc:
        raise _fail(str(exc)) from None
    if play is not None:
        from skinnysip.rtp.audio import WavSource

        try:
            WavSource(play)
        except ValueError as exc:
            raise _fail(f"--play: {exc}") from exc
    writable_directory(record, "--record")  # the calls make their files there: refused now
    if sccp is not None:
        if aor is not None:
            raise _fail("an AOR is for SIP; with --sccp give --device")
        acc_sccp = _sccp_account(sccp, device, device_type, sccp_tls, insecure, readable_file(ca_file, "--ca-file"),
                                 auto_answer, play or f"tone:{tone}", record, media_ports, checked_ip(local_ip))
        check_source(acc_sccp.local_ip, 0, stream=True, flags="--local-ip", target=acc_sccp.host)
        raise exit_with(_guarded(acc_sccp, call, duration, execute, as_json, pcap))
    if aor is None:
        raise _fail("give your AOR (sip:user@domain), or --sccp HOST for an SCCP phone")
    suites = comma_list(srtp_suites)
    if suites is not None:
        try:
            check_srtp_suites(suites)
        except ValueError as exc:
            raise _fail(f"--srtp-suites: {str(exc).removeprefix('srtp suites: ')}") from None
    if soundcard is not None:  # a card that is not there: refused now, not at the first call
        from skinnysip.net.soundcard import SoundCardError, check_device

        try:
            check_device(soundcard)
        except SoundCardError as exc:
            raise _fail(f"--soundcard: {exc}") from None
    secret = password_from(password, prompt=False)
    servers = {"--registrar": _server(registrar, "--registrar"), "--proxy": _server(proxy, "--proxy")}
    for flag, server in servers.items():
        if server is not None:
            try:
                chosen = merge_target(server, None, chosen, flag).transport
            except click.BadParameter as exc:
                raise _fail(f"--transport: {exc.message}") from None
    # a ws:// or wss:// server made ``chosen`` ws/wss (another transport given was refused above)
    paths = [server.path for server in servers.values() if server is not None and server.path is not None]
    try:
        acc = SIPAccount(aor=aor if aor.startswith(("sip:", "sips:")) else f"sip:{aor}", password=secret,
                         auth_user=user, registrar=_hostport(servers["--registrar"]),
                         outbound_proxy=_hostport(servers["--proxy"]), proxy_realm=proxy_realm,
                         transport=chosen or "udp",  # type: ignore[arg-type]
                         tls_verify=not insecure, ca_file=readable_file(ca_file, "--ca-file"), expires=expires,
                         register=not no_register,
                         listen_host=checked_ip(local_ip), listen_port=listen_port, auto_answer=auto_answer,
                         ring_timeout=ring_timeout,
                         stun_server=stun_server, ice=ice, mwi=mwi, source=play or f"tone:{tone}",
                         record_dir=record, dtmf=dtmf_mode, srtp=srtp, soundcard=soundcard,  # type: ignore[arg-type]
                         codecs=comma_list(codecs), rtp_ports=media_ports, srtp_suites=suites,
                         ws_path=paths[0] if paths else "/", ws_invalid_host=ws_invalid_host,
                         keepalive_interval=keepalive_interval, outbound=outbound, gruu=gruu,
                         instance_id=instance_id, watch_presence=tuple(watch_presence),
                         watch_dialog=tuple(watch_dialog), identity_key=identity_key, identity_x5u=identity_x5u,
                         identity_attest=identity_attest.upper(), identity_certificate=identity_certificate,
                         identity_fetch=identity_fetch, identity_ca=identity_ca,
                         identity_required=identity_required)
        acc.uri()
        instance_id_for(acc)
        IdentityService.for_account(acc)
        if stun_server is not None:
            parse_server(stun_server)
        if acc.codecs is not None:
            payload_types(acc.codecs)
    except ValueError as exc:
        raise _fail(_flag_message(str(exc))) from exc
    check_source(acc.listen_host, acc.listen_port, stream=acc.transport != "udp", flags="--local-ip/--listen-port")
    if presence is not None:
        basic, _, note = presence.partition(":")
        if basic not in ("open", "closed"):
            raise _fail("--presence: open or closed, then :NOTE if you like (e.g. open:at my desk)")
        execute = f"presence {basic} {shlex.quote(note)}" + (f"; {execute}" if execute else "")
    raise exit_with(_guarded(acc, call, duration, execute, as_json, pcap))


def _hostport(target: Target | None) -> str | None:
    if target is None:
        return None
    return format_host(target.host) if target.port is None else hostport(target.host, target.port)


def _guarded(acc: Any, target: str | None, duration: float | None, execute: str | None, as_json: bool,
             pcap: str | None = None) -> int:
    """Run the phone; Ctrl-C is a normal end, anything unexpected one line (no traceback)."""
    try:
        return asyncio.run(_run(acc, target, duration, execute, as_json, pcap))
    except KeyboardInterrupt:
        return EXIT_OK
    except click.exceptions.Exit as done:
        return int(done.exit_code)
    except Exception as exc:  # noqa: BLE001 - the last guard before the user
        err_console.print(f"error: {type(exc).__name__}: {printable(str(exc))}", markup=False, highlight=False,
                          soft_wrap=True)
        return EXIT_NO_CALL


def _exchange(phone: Any) -> list[Any]:
    """Everything the phone sent and received: the SIP endpoint's trace, or the SCCP calls'
    exchanges in time order."""
    from skinnysip.net.trace import to_wire_messages

    endpoint = getattr(phone, "endpoint", None)
    if endpoint is not None:
        return to_wire_messages(endpoint.trace)
    return sorted((m for c in phone.calls for m in c.exchange), key=lambda m: m.time)


def _media(calls: Iterable[Any]) -> list[Any]:
    """The RTP/RTCP packets of ``calls`` (each stream's bounded log), at most
    :data:`~skinnysip.pcap.MAX_MEDIA_PACKETS` (the first calls' first); a dim line says how
    many were left out."""
    from skinnysip.pcap import MAX_MEDIA_PACKETS

    out: list[Any] = []
    left = 0
    for call in calls:
        packets = call.media_packets()
        room = MAX_MEDIA_PACKETS - len(out)
        out.extend(packets[:room])
        left += max(0, len(packets) - room)
    if left:
        err_console.print(f"--pcap: {left} RTP/RTCP packets not written (limit {MAX_MEDIA_PACKETS})",
                          markup=False, style="dim")
    return out


def _sccp_account(server: str, device: str, device_type: int, tls: bool, insecure: bool, ca_file: str | None,
                  auto_answer: float | None, source: str, record: str | None,
                  rtp_ports: tuple[int, int] | None = None, local_ip: str | None = None) -> Any:
    from skinnysip.phone.sccp_phone import SCCPAccount

    try:
        target = parse_target(server, "--sccp")
    except click.BadParameter as exc:
        raise _fail(f"--sccp: {exc.message}") from None
    if target.scheme is not None:
        raise _fail("--sccp: a SIP URI is not an SCCP call manager; give HOST[:PORT]")
    host, port = target.host, target.port
    try:
        account = SCCPAccount(host=host, port=port, tls=tls, tls_verify=not insecure, ca_file=ca_file,
                              device_name=device, device_type=device_type, auto_answer=auto_answer, source=source,
                              record_dir=record, rtp_ports=rtp_ports, local_ip=local_ip)
        account.station_config("0.0.0.0")  # checks the device name and type now
        return account
    except ValueError as exc:
        raise _fail(f"--device: {exc}") from exc


async def _run(acc: Any, target: str | None, duration: float | None, execute: str | None, as_json: bool,
               pcap: str | None = None) -> int:
    from skinnysip.phone.api import CallState, IncomingCall, PhoneError, RegistrationChanged, event_to_dict
    from skinnysip.phone.sccp_phone import SCCPAccount, SCCPPhone
    from skinnysip.phone.sip_phone import SIPPhone

    phone: Any = SCCPPhone(acc) if isinstance(acc, SCCPAccount) else SIPPhone(acc)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    asked: list[Any] = []
    seen: dict[int, Any] = {}  # every call of the run by id (the newest MAX_PCAP_CALLS), for --pcap
    failures: list[str] = []  # reasons of every failed registration (the registrar's answer, or none)

    def show(event: Any) -> None:
        call = getattr(event, "call", None)
        if call is not None and pcap is not None and call.id not in seen:
            seen[call.id] = call
            while len(seen) > MAX_PCAP_CALLS:
                del seen[next(iter(seen))]
        if isinstance(event, RegistrationChanged) and event.state.value == "failed":
            failures.append(event.reason)
        data = event_to_dict(event)
        if as_json:
            print(json.dumps(data), flush=True)
            return
        kind = data.pop("event")
        data.pop("time", None)
        text = ", ".join(f"{k}={_shown(v)}" for k, v in data.items() if v not in (None, "", False, []))
        console.print(f"{kind}: {printable(text)}", markup=False, highlight=False)
        console.print(f"  [{_current(phone)}]", markup=False, highlight=False, style="dim")

    async def printer() -> None:
        async for event in phone.events():
            show(event)
            if isinstance(event, IncomingCall) and acc.auto_answer is not None:
                asked.append(event.call)

    try:
        await phone.start()
    except PhoneError as exc:
        err_console.print(f"error: {printable(exc.reason)}", markup=False, highlight=False, soft_wrap=True)
        await phone.close()
        write_pcap(pcap, _exchange(phone), _media([*seen.values(), *phone.calls]))
        return EXIT_UNREACHABLE
    printing = loop.create_task(printer())
    code = EXIT_OK
    failed, last_reason = False, ""
    try:
        if execute:
            await _commands(phone, [c for c in execute.split(";") if c.strip()], stop)
        if target is not None:
            try:
                placed = await phone.call(target)
            except PhoneError as exc:
                console.print(f"error: {printable(exc.reason)}", markup=False, highlight=False)
                return EXIT_NO_CALL
            asked.append(placed)
            waiting = loop.create_task(placed.wait_connected(60))
            stopping = loop.create_task(stop.wait())
            await asyncio.wait({waiting, stopping}, return_when=asyncio.FIRST_COMPLETED)
            stopping.cancel()
            if placed.state is CallState.CONFIRMED:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), duration if duration is not None else 3600)
        elif acc.auto_answer is not None or duration is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), duration if duration is not None else 86400)
        elif not execute:
            await _interactive(phone, stop)
        code = EXIT_OK if all(c.connected is not None for c in asked) else EXIT_NO_CALL
        failed = getattr(getattr(phone, "registration", None), "value", None) == "failed"
        last_reason = str(getattr(phone, "registration_reason", ""))
    finally:
        await phone.close()
        await asyncio.sleep(0)
        printing.cancel()
        with contextlib.suppress(BaseException):
            await printing
        while not phone._events.empty():
            show(phone._events.get_nowait())
        write_pcap(pcap, _exchange(phone), _media(dict.fromkeys([*asked, *seen.values(), *phone.calls])))
    if failed:  # every event shown by now: answered once (403, RegisterReject, then maybe closed): 1, else 3
        code = max(code, min(_registration_failure(r) for r in failures or [last_reason]))
    return code


def _registration_failure(reason: str) -> int:
    """Exit status of a failed registration: 1 when the registrar answered (``403 Forbidden``,
    a RegisterReject), 3 when nothing usable came back (timeout, connection lost)."""
    status = reason[:3]
    answered = (len(reason) > 3 and status.isascii() and status.isdigit() and reason[3] == " ") or "Reject" in reason
    return EXIT_ANSWERED if answered else EXIT_NO_ANSWER


def _current(phone: Any) -> str:
    """The always-visible status: registration and the current (newest live) call."""
    reg = getattr(phone.registration, "value", str(phone.registration))
    if not phone.calls:
        return f"{reg}; no call"
    call = phone.calls[-1]
    hold = " on hold" if call.local_hold else (" held by the far end" if call.remote_hold else "")
    hold += " muted" if call.muted else ""
    more = f" (+{len(phone.calls) - 1} more)" if len(phone.calls) > 1 else ""
    return f"{reg}; call {call.id} {call.state.value}{hold} {call.remote}{more}"


HELP = ("commands: dial TARGET | accept [ID] | reject [ID] [CODE] | hangup [ID] | hold [ID] | resume [ID] | "
        "mute [ID] | unmute [ID] | transfer TARGET [ID] | atransfer OTHER_ID [ID] | dtmf DIGITS [ID] | message TARGET TEXT | calls | reg | "
        "register | unregister | watch TARGET [presence|dialog] | blf TARGET | unwatch TARGET [presence|dialog] | "
        "watches | presence open|closed [NOTE] | presence off | "
        "sleep S | quit")


async def _interactive(phone: Any, stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    console.print(HELP, markup=False, highlight=False)
    while not stop.is_set():
        reader = loop.run_in_executor(None, sys.stdin.readline)
        stopping = asyncio.ensure_future(stop.wait())
        done, _ = await asyncio.wait({reader, stopping}, return_when=asyncio.FIRST_COMPLETED)
        stopping.cancel()
        if reader not in done:
            return
        line = reader.result()
        if not line:
            return  # end of input
        if not await _commands(phone, [line], stop):
            return


def _shown(value: Any) -> str:
    """An event field for a person: a list as its items, a dialog (RFC 4235) as its state,
    direction and the other party, a caller's identity (RFC 8224) as what its check found."""
    if isinstance(value, dict) and "verified" in value:
        claims = f"attest {value.get('attest')} orig {value.get('orig')} dest {','.join(value.get('dest') or [])}"
        if value["verified"]:
            return f"verified ({claims}, chain {value.get('chain')})"
        return f"NOT verified: {value.get('code')} {value.get('reason')} ({claims})"
    if not isinstance(value, list):
        return str(value)
    return "; ".join(" ".join(str(item[k]) for k in ("state", "direction", "remote") if item.get(k))
                     if isinstance(item, dict) else str(item) for item in value)


async def _commands(phone: Any, lines: list[str], stop: asyncio.Event) -> bool:
    """Run command lines; False after ``quit``. Errors are printed, never raised."""
    from skinnysip.phone.api import PhoneError

    for line in lines:
        try:
            words = shlex.split(line.strip())
        except ValueError as exc:
            console.print(f"error: {exc}", markup=False, highlight=False)
            continue
        if not words:
            continue
        verb, args = words[0].lower().lstrip("/"), words[1:]
        try:
            if verb in ("quit", "exit", "q"):
                stop.set()
                return False
            await _command(phone, verb, args)
        except PhoneError as exc:
            console.print(f"error: {printable(exc.reason)}", markup=False, highlight=False)
        except (ValueError, IndexError) as exc:
            console.print(f"error: {verb}: {exc or 'missing argument'}; {HELP}", markup=False, highlight=False)
        except Exception as exc:  # last resort: one command's fault must not end the phone and its calls
            console.print(f"error: {verb}: {type(exc).__name__}: {printable(str(exc))}", markup=False, highlight=False)
    return True


def _pick(phone: Any, args: list[str]) -> Any:
    from skinnysip.phone.api import PhoneError

    ids = [a for a in args if a.isdigit()]
    if ids:
        return phone.find(int(ids[-1]))
    if not phone.calls:
        raise PhoneError("no call")
    return phone.calls[-1]


_BACKGROUND: set[asyncio.Task[None]] = set()


def _transfer_outcome(call: Any) -> str:
    status = getattr(call, "transfer_status", None)
    if status is None:
        return "the call ended before the transferee's final NOTIFY (the outcome was not told)"
    return f"done (the target answered {status})"


def _in_background(what: str, action: Awaitable[Any], done: Callable[[], str] | None = None) -> None:
    """Run a long action — a transfer waits up to 60 s for the transferee's final NOTIFY, a
    BYE up to 32 s for a far end that does not answer — without holding up the next command.
    A failure prints an ``error:`` line; success prints ``done()`` when given."""
    from skinnysip.phone.api import PhoneError

    async def run() -> None:
        try:
            await action
        except PhoneError as exc:
            console.print(f"error: {what}: {printable(exc.reason)}", markup=False, highlight=False)
        except Exception as exc:  # the command loop's last resort, for a command that went on alone
            console.print(f"error: {what}: {type(exc).__name__}: {printable(str(exc))}", markup=False,
                          highlight=False)
        else:
            if done is not None:
                console.print(f"{what}: {done()}", markup=False, highlight=False)

    task = asyncio.ensure_future(run())
    _BACKGROUND.add(task)
    task.add_done_callback(_BACKGROUND.discard)


async def _command(phone: Any, verb: str, args: list[str]) -> None:
    if verb == "dial":
        call = await phone.call(args[0])
        console.print(f"call {call.id} → {printable(str(call.remote))}", markup=False, highlight=False)
    elif verb in ("accept", "answer"):
        await _pick(phone, args).answer()
    elif verb == "reject":
        codes = [int(a) for a in args[1:] if a.isdigit()]
        await _pick(phone, args[:1]).reject(codes[0] if codes else 486)
    elif verb == "hangup":  # the call ends at once; its BYE's answer is not waited for here
        call = _pick(phone, args)
        _in_background(f"hangup of call {call.id}", call.hangup())
    elif verb == "hold":
        await _pick(phone, args).hold()
    elif verb == "resume":
        await _pick(phone, args).resume()
    elif verb in ("mute", "unmute"):  # silence instead of our audio; RTP goes on (no re-INVITE)
        await getattr(_pick(phone, args), verb)()
    elif verb in ("transfer", "atransfer"):  # atransfer OTHER_ID [ID]: ID's far end replaces OTHER_ID's call
        call = _pick(phone, args[1:])
        action = call.transfer(args[0]) if verb == "transfer" else call.transfer("", replaces=phone.find(int(args[0])))
        _in_background(f"transfer of call {call.id}", action, lambda: _transfer_outcome(call))
    elif verb == "dtmf":
        await _pick(phone, args[1:]).send_dtmf(args[0])
    elif verb == "message":
        await phone.message(args[0], " ".join(args[1:]))
    elif verb == "calls":
        for call in phone.calls:
            console.print(json.dumps({k: v for k, v in call.summary().items() if k != "media"}), markup=False,
                          highlight=False)
    elif verb in ("reg", "register", "unregister"):
        if verb != "reg":  # now: pjsua's rr/ru, baresip's uareg
            await getattr(phone, verb)()
        reason = printable(str(getattr(phone, "registration_reason", "")))
        console.print(f"registration: {phone.registration.value} {reason}",
                      markup=False, highlight=False)
    elif verb in ("watch", "blf", "unwatch", "watches", "presence") and not hasattr(phone, "watch"):
        from skinnysip.phone.api import PhoneError

        raise PhoneError(f"{verb}: presence and busy lamps are SIP's (RFC 3856, RFC 4235)")
    elif verb in ("watch", "blf", "unwatch"):  # watch TARGET [presence|dialog]; blf TARGET
        package = "dialog" if verb == "blf" else (args[1] if len(args) > 1 else "presence")
        if verb == "unwatch":
            if not await phone.unwatch(args[0], package):
                console.print(f"not watching {printable(args[0])} ({package})", markup=False, highlight=False)
        else:
            sub = phone.watch(args[0], package)
            console.print(f"watching {printable(sub.uri)} ({package})", markup=False, highlight=False)
    elif verb == "watches":
        for sub in phone.watches.values():
            console.print(json.dumps(sub.summary()), markup=False, highlight=False)
    elif verb == "presence":  # presence open|closed [NOTE…] | presence off
        if args[0] == "off":
            await phone.unpublish_presence()
        else:
            await phone.publish_presence(args[0], note=" ".join(args[1:]) or None)
        console.print(f"presence: {args[0]}", markup=False, highlight=False)
    elif verb == "sleep":
        await asyncio.sleep(min(3600.0, float(args[0])))
    else:
        raise ValueError(f"unknown command {verb!r}")


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


#: options whose value may be left out: option → (is this argument its value?, value to insert)
OPTIONAL_VALUES = {
    "--auto-answer": (_is_number, "0"),
    "--srtp": (lambda text: text in SRTP_MODES, "mandatory"),
}


def fix_auto_answer(argv: list[str]) -> list[str]:
    """Options of :data:`OPTIONAL_VALUES` may be given without their value: ``--auto-answer``
    alone means ``--auto-answer 0``, ``--srtp`` alone ``--srtp mandatory``; the value is
    inserted when the next argument is not one."""
    out: list[str] = []
    for i, arg in enumerate(argv):
        out.append(arg)
        if arg in OPTIONAL_VALUES:
            is_value, default = OPTIONAL_VALUES[arg]
            if i + 1 >= len(argv) or not is_value(argv[i + 1]):
                out.append(default)
    return out
