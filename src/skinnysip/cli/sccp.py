"""``skinnysip sccp probe|register|linestate|call HOST …`` and ``skinnysip sccp lab-cm``.

By default a readable summary is printed (registration, lines, call states, RTP counts both
ways) with a compact ladder (``→`` sent, ``←`` received); ``--json`` prints exactly the HTTP
API's response body; ``--pcap FILE`` writes the exchange as pcapng. HOST may carry the port
(``HOST:PORT``, ``[v6]:PORT``). Exit status in the sipsak manner
(:data:`~skinnysip.cli.common.EXIT_STATUS_HELP`): 0 got what was asked (KeepAliveAck;
registered; configuration complete; call connected), 1 the call manager answered otherwise
(RegisterReject, a busy or failed call), 2 usage error, 3 no usable answer. Times on the
command line are milliseconds, as in the API.
"""

from __future__ import annotations

import asyncio
import importlib
from typing import TYPE_CHECKING, Any

import click

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
    ladder,
    merge_target,
    nagios_options,
    nagios_verdict,
    option,
    parse_target,
    readable_file,
    stacked,
    write_pcap,
)
from skinnysip.net.realtime import collector_paused
from skinnysip.result import validation_message

if TYPE_CHECKING:
    from skinnysip.probes import sccp as probes


def _probes() -> Any:
    """The SCCP operations, imported on first use: they pull in numpy and the codec tables,
    which ``skinnysip sip …`` and ``--help`` do not need (start-up time)."""
    return importlib.import_module("skinnysip.probes.sccp")


app = Group("sccp", help="SCCP station: probe, register, linestate, call.")

#: request field (API name) → the command-line flag that sets it
FLAGS = {
    "host": "HOST", "server": "HOST", "port": "--port", "deviceName": "--device", "deviceType": "--device-type",
    "timeout": "--timeout", "tls": "--tls", "tlsVerify": "--insecure", "protocolVersion": "--protocol-version",
    "lineNumber": "--line", "dialNumber": "--dial", "holdMs": "--hold",
}


def flag_error(field: str, message: str) -> str:
    """``--flag: message`` for a request-model validation error on ``field`` (API name):
    the flag the user typed, never the API field, without pydantic's ``Value error,``."""
    return f"{FLAGS.get(field, field)}: {validation_message(message)}"


def _request(**kwargs: Any) -> probes.SCCPRequest:
    try:
        return _probes().SCCPRequest.model_validate({k: v for k, v in kwargs.items() if v is not None})
    except ValueError as exc:  # the request model's ValidationError (a ValueError): the first error
        errors = getattr(exc, "errors", None)
        if errors is None:
            raise
        err = errors()[0]
        field = str(err.get("loc", ("",))[0])
        raise click.BadParameter(flag_error(field, str(err.get("msg")))) from None


def exit_status(result: Any) -> int:
    """0: got what was asked; 1: the call manager answered otherwise (RegisterReject, the
    call failed or was not connected, the configuration incomplete); 3: nothing usable came
    back (refused, timed out before any answer, TLS failure, malformed stream)."""
    if result.success:
        return EXIT_OK
    answered = (result.rejected or result.registered or bool(result.keep_alive_ack)
                or result.status in ("call-failed", "rejected"))
    return EXIT_ANSWERED if answered else EXIT_NO_ANSWER


def _ladder(result: probes.SCCPResult) -> None:
    ladder(result.exchange, lambda m: _detail(m.summary, (m.decoded or {}).get("fields", {})))


_LADDER_FIELDS = {
    "Register": ("deviceName", "deviceType", "protocolVer"),
    "RegisterAck": ("keepAliveInterval", "maxProtocolVer"),
    "RegisterReject": ("text",),
    "CallState": ("callState", "lineInstance", "callReference"),
    "KeypadButton": ("kpButton",),
    "StartTone": ("tone",),
    "LineStat": ("lineNumber", "lineDirNumber"),
    "OpenReceiveChannel": ("passThruPartyId", "millisecondPacketSize", "compressionType"),
    "OpenReceiveChannelAck": ("ipAddr", "portNumber", "passThruPartyId"),
    "StartMediaTransmission": ("remoteIpAddr", "remotePortNumber", "passThruPartyId"),
    "DialedNumber": ("dialedNumber",),
}


def _detail(name: str, fields: dict[str, Any]) -> str:
    keys = _LADDER_FIELDS.get(name, ())
    return " ".join(f"{k}={fields[k]}" for k in keys if k in fields)


def _render(result: ApiResult) -> None:
    assert isinstance(result, _probes().SCCPResult)
    r = result
    ok = "[green]success[/green]" if r.success else "[red]failed[/red]"
    console.print(f"SCCP {r.operation} {r.host}:{r.port}/{r.transport}: {ok} ({r.status})")
    rows: list[tuple[str, Any]] = [
        ("error", r.error),
        ("device", f"{r.device_name} type {r.device_type} ({r.device_type_name})"),
        ("registered", r.registered if r.operation != "probe" else None),
        ("rejected", f"yes: {r.reject_reason}" if r.rejected else None),
        ("keepalive", f"{r.keep_alive_interval} s" if r.keep_alive_interval else None),
        ("protocol version", r.protocol_version),
        ("keepalive ack", r.keep_alive_ack),
        ("connect", f"{r.connect_ms:.1f} ms" if r.connect_ms is not None else None),
        ("latency", f"{r.latency_ms:.1f} ms" if r.latency_ms is not None else None),
        ("tls", f"{r.tls.version} {r.tls.cipher} verified={r.tls.verified}" if r.tls else None),
        ("capabilities", ", ".join(r.capabilities) or None),
    ]
    for ln in r.lines:
        rows.append((f"line {ln.line_number}", f"{ln.dir_number} label={ln.label!r} name={ln.display_name!r}"))
    for sd in r.speed_dials:
        rows.append((f"speed dial {sd.number}", f"{sd.dir_number} {sd.display_name!r}"))
    if r.soft_keys:
        rows.append(("soft keys", ", ".join(f"{k.label}({k.event})" for k in r.soft_keys)))
    if r.call is not None:
        c = r.call
        rows += [
            ("dialled", c.dialed),
            ("call states", " → ".join(c.states) or "none"),
            ("tones", ", ".join(c.tones) or None),
            ("prompts", ", ".join(c.prompts) or None),
            ("parties", f"{c.calling_party} → {c.called_party}" if c.calling_party or c.called_party else None),
            ("media", f"{c.codec} local {c.local_rtp} remote {c.remote_rtp}" if c.codec else
             c.media_error and f"no RTP: {c.media_error}"),
            ("RTP sent", c.rtp_packets_sent),
            ("RTP received", c.rtp_packets_received),
            ("RTP echoed back", c.echo_matched if c.echo_matched else None),
            ("RTP lost / jitter", f"{c.rtp_packets_lost} / {c.rtp_jitter_ms:.2f} ms" if c.rtp_packets_received else None),
        ]
    rows.append(("unregistered", r.unregistered if r.registered else None))
    field_table(rows)
    _ladder(r)


HostArg = argument("host", metavar="HOST", help="Call manager: HOST, HOST:PORT or [IPv6]:PORT.")
PortOpt = option("--port", "-p", type=click.IntRange(1, 65535), metavar="PORT",
                 help="TCP port [default: from HOST, else 2000, 2443 with --tls].")
DeviceOpt = option("--device", "-d", default="SEP001122334455", metavar="NAME",
                   help="Device name (SEP + 12 hex digits, …).")
DeviceTypeOpt = option("--device-type", default=7, type=int, metavar="N",
                       help="Register deviceType (7 = Cisco 7960, 8 = 7940, 115 = 7941…).")
TLSOpt = option("--tls", is_flag=True, help="Use TLS (port 2443 by default).")
InsecureOpt = option("--insecure", "-k", is_flag=True, help="With --tls: do not verify the certificate.")
CAOpt = option("--ca-file", metavar="FILE", help="With --tls: PEM bundle of trusted CAs.")
PVOpt = option("--protocol-version", default=11, type=int, metavar="N",
               help="Register protocolVer (17 or more asks for the v17 layouts).")
TimeoutOpt = option("--timeout", default=10000, type=int, metavar="MS", help="Timeout of the whole operation, ms.")
JSONOpt = option("--json", "json_", is_flag=True, help="Print the API response body as JSON.")
LineOpt = option("--line", default=1, type=int, metavar="N", help="Line instance to call from.")
PcapOpt = option("--pcap", metavar="FILE", help="Write the exchange as pcapng (Wireshark, tshark).")


NagiosOpt, WarningOpt, CriticalOpt = nagios_options(
    "SCCP", "KeepAliveAck; registered; the configuration complete; the call connected",
    "a RegisterReject or a failed call")

LocalIpOpt = option("--local-ip", metavar="IP", help="Connect from this address of this host, the station's own "
                    "IP for its media too [default: the one the routing table picks for HOST].")

#: HOST and the options every station command takes, in help order
_station_options = stacked(HostArg, PortOpt, DeviceOpt, DeviceTypeOpt, TLSOpt, InsecureOpt, CAOpt, PVOpt, LocalIpOpt,
                           TimeoutOpt, JSONOpt, PcapOpt, NagiosOpt, WarningOpt, CriticalOpt)


def _go(op: str, ca_file: str | None, json_: bool, pcap: str | None, host: str, port: int | None,
        nagios: NagiosArgs = (False, None, None), **kwargs: Any) -> None:
    target = merge_target(parse_target(host), port, None)
    if target.scheme is not None:
        raise click.BadParameter("a SIP URI is not an SCCP call manager; give HOST or HOST:PORT", param_hint="HOST")
    req = _request(host=target.host, port=target.port, **kwargs)
    check_source(req.local_ip, 0, stream=True, flags="--local-ip", target=req.host)
    with collector_paused():  # one bounded run, then the process ends
        result = asyncio.run(_probes().run_operation(op, req, ca_file=readable_file(ca_file, "--ca-file")))
    write_pcap(pcap, result.exchange)
    emit(result, json_, _render, exit_status(result), nagios_report(result, *nagios[1:]) if nagios[0] else None)


def nagios_report(result: Any, warning: float | None, critical: float | None) -> tuple[int, str]:
    """The monitoring plugin's state and line for an SCCP ``result``
    (:func:`~skinnysip.cli.common.nagios_verdict`): OK for what exits 0, CRITICAL for a
    RegisterReject, a failed call or no answer, WARNING for an incomplete configuration
    (``linestate``); the round trip is the KeepAliveAck's or the RegisterAck's
    (``latencyMs``)."""
    status = exit_status(result)
    where = f"{result.host}:{result.port}/{result.transport}"
    if not result.success:
        text = f"{result.device_name} at {where}: {result.error or result.status}"
    elif result.operation == "probe":
        text = f"KeepAliveAck from {where}"
    elif result.operation == "linestate":
        text = (f"{result.device_name} at {where}: {len(result.lines)} lines, {len(result.speed_dials)} speed dials, "
                f"{len(result.soft_keys)} soft keys")
    elif result.operation == "call-setup":
        text = (f"{result.device_name} at {where}: call connected, RTP sent {result.rtp_packets_sent}, "
                f"received {result.rtp_packets_received}")
    else:
        text = f"{result.device_name} registered at {where} ({result.device_type_name})"
    rtt = result.latency_ms if status != EXIT_NO_ANSWER else None
    return nagios_verdict("SCCP", status, text, rtt, warning, critical,
                          answered_critical=result.operation != "linestate")


def _station(op: str, host: str, port: int | None, device: str, device_type: int, tls: bool, insecure: bool,
             ca_file: str | None, protocol_version: int, local_ip: str | None, timeout: int, json_: bool,
             pcap: str | None, nagios: bool, warning: float | None, critical: float | None, **more: Any) -> None:
    """Run station operation ``op`` with the options every station command takes (``more``:
    the operation's own fields, camelCase as the API names them)."""
    _go(op, ca_file, json_, pcap, host, port, (nagios, warning, critical), deviceName=device,
        deviceType=device_type, tls=tls, tlsVerify=not insecure, protocolVersion=protocol_version, timeout=timeout,
        localIp=checked_ip(local_ip), **more)


@app.command("probe", epilog=EXIT_STATUS_HELP)
@_station_options
def probe(**options: Any) -> None:
    """Connect and send KeepAlive; report KeepAliveAck and the round trip (exit 0 on KeepAliveAck)."""
    _station("probe", **options)


@app.command("register", epilog=EXIT_STATUS_HELP)
@_station_options
def register(**options: Any) -> None:
    """Register the device (RegisterAck / RegisterReject), then unregister (exit 0 when registered,
    1 on RegisterReject)."""
    _station("register", **options)


@app.command("linestate", epilog=EXIT_STATUS_HELP)
@_station_options
def linestate(**options: Any) -> None:
    """Register and list lines, speed dials and soft keys (exit 0 when the configuration is complete)."""
    _station("linestate", **options)


@app.command("call", epilog=EXIT_STATUS_HELP)
@_station_options
@option("--dial", required=True, metavar="NUMBER", help="Number to dial (0-9 * # A-D +).")
@option("--hold", default=0, type=int, metavar="MS", help="Stay connected this many ms with RTP both ways.")
@LineOpt
def call(dial: str, hold: int, line: int, **options: Any) -> None:
    """Register, dial, hold with real RTP, hang up; print call states and RTP counts (exit 0 when
    the call connected, 1 when it was busy or failed)."""
    _station("call-setup", **options, dialNumber=dial, holdMs=hold, lineNumber=line)


@app.command("lab-cm", epilog="Exit status: 0 stopped by Ctrl-C; 2 usage or local error (bad arguments, "
             "unreadable --tls-cert/--tls-key, address not local or port in use).")
@option("--host", default="127.0.0.1", metavar="ADDRESS", help="Local address to listen on.")
@option("--port", "-p", default=2000, type=click.IntRange(0, 65535), metavar="PORT",
        help="TCP port (0 = any free port).")
@option("--device", "-d", multiple=True, metavar="NAME=NUMBER[:LABEL]",
        help="A device, repeatable [default: SEP001122334455=1001, SEP00112233445A=1002].")
@option("--echo", default="600", metavar="NUMBER", help="Echo extension.")
@option("--tone", default="601", metavar="NUMBER", help="1 kHz tone extension.")
@option("--keepalive", default=30, type=click.IntRange(1, 3600), metavar="S",
        help="keepAliveInterval sent in RegisterAck (s).")
@option("--tls-cert", metavar="FILE", help="PEM certificate: listen with TLS.")
@option("--tls-key", metavar="FILE", help="PEM private key for --tls-cert.")
def lab_cm(host: str, port: int, device: tuple[str, ...], echo: str, tone: str, keepalive: int,
           tls_cert: str | None, tls_key: str | None) -> None:
    """Run the lab SCCP call manager (echo, tone and station-to-station calls) until Ctrl-C."""
    import ssl

    from skinnysip.addresses import check_host
    from skinnysip.lab.callmanager import LabCallManager, LabConfig, LabDevice, LabLine

    try:
        check_host(host)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--host") from None
    readable_file(tls_cert, "--tls-cert")
    readable_file(tls_key, "--tls-key")
    kwargs: dict[str, Any] = dict(host=host, port=port, echo_extension=echo, tone_extension=tone,
                                  keep_alive_interval=keepalive, tls_cert=tls_cert, tls_key=tls_key)
    try:
        if device:
            devices = []
            for spec in device:
                name, _, rest = spec.partition("=")
                number, _, label = rest.partition(":")
                if not name or not number:
                    raise click.BadParameter(f"expected NAME=NUMBER[:LABEL], got {spec!r}", param_hint="--device")
                devices.append(LabDevice(name, [LabLine(number, label or number, label or number)]))
            config = LabConfig(devices=devices, **kwargs)
        else:
            config = LabConfig.demo(**kwargs)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--device") from None

    async def run() -> None:
        cm = LabCallManager(config)
        try:
            await cm.start()
        except (OSError, ssl.SSLError) as exc:
            await cm.stop()
            fail(_listen_error(exc, host, port), EXIT_USAGE)
        try:
            names = ", ".join(f"{d.name}={d.lines[0].number}" for d in config.devices)
            console.print(f"lab call manager on {host}:{cm.port} ({'TLS' if tls_cert else 'TCP'}); devices {names}; "
                          f"echo {echo}, tone {tone}", markup=False)
            assert cm.server is not None
            await cm.server.serve_forever()
        finally:
            await cm.stop()

    try:
        asyncio.run(run())
    except KeyboardInterrupt:
        pass


def _listen_error(exc: BaseException, host: str, port: int) -> str:
    """One line for a listener that could not start."""
    import errno
    import socket

    from skinnysip.addresses import hostport

    where = hostport(host, port)
    if isinstance(exc, socket.gaierror):
        return f"--host: cannot resolve {host!r} ({exc.strerror})"
    if isinstance(exc, OSError) and exc.errno == errno.EADDRINUSE:
        return f"cannot listen on {where}: address already in use"
    if isinstance(exc, OSError) and exc.errno == errno.EADDRNOTAVAIL:
        return f"cannot listen on {where}: not an address of this machine"
    if isinstance(exc, OSError):
        return f"cannot listen on {where}: {exc.strerror or exc}"
    return f"--tls-cert/--tls-key: cannot load ({exc})"
