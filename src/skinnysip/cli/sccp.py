"""``skinnysip sccp probe|register|linestate|call HOST …`` and ``skinnysip sccp lab-cm``.

By default a readable summary is printed (registration, lines, call states, RTP counts both
ways) with a compact ladder (``→`` sent, ``←`` received); ``--json`` prints exactly the HTTP
API's response body. Exit status 0 on success, 1 on failure, 2 for bad arguments. Times on
the command line are milliseconds, as in the API.
"""

from __future__ import annotations

import asyncio
import importlib
from typing import TYPE_CHECKING, Any

import typer

from skinnysip.cli.common import console, emit, field_table, ladder
from skinnysip.result import ResultModel

if TYPE_CHECKING:
    from skinnysip.probes import sccp as probes


def _probes() -> Any:
    """The SCCP operations, imported on first use: they pull in numpy and the codec tables,
    which ``skinnysip sip …`` and ``--help`` do not need (start-up time)."""
    return importlib.import_module("skinnysip.probes.sccp")

app = typer.Typer(no_args_is_help=True, help="SCCP station: probe, register, linestate, call; lab call manager.")


def _request(**kwargs: Any) -> probes.SCCPRequest:
    from pydantic import ValidationError

    try:
        return _probes().SCCPRequest.model_validate({k: v for k, v in kwargs.items() if v is not None})
    except ValidationError as exc:
        err = exc.errors()[0]
        field = ".".join(str(p) for p in err.get("loc", ()))
        raise typer.BadParameter(f"{field}: {err.get('msg')}") from None


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


def _render(result: ResultModel) -> None:
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


HostArg = typer.Argument(..., help="Call manager host name or IP address.")
PortOpt = typer.Option(None, "--port", "-p", help="TCP port (default 2000, 2443 with --tls).")
DeviceOpt = typer.Option("SEP001122334455", "--device", "-d", help="Device name (SEP + 12 hex digits, …).")
DeviceTypeOpt = typer.Option(7, "--device-type", help="Register deviceType (7 = Cisco 7960, 8 = 7940, 115 = 7941…).")
TLSOpt = typer.Option(False, "--tls", help="Use TLS (port 2443 by default).")
InsecureOpt = typer.Option(False, "--insecure", "-k", help="With --tls: do not verify the certificate.")
CAOpt = typer.Option(None, "--ca-file", help="With --tls: PEM bundle of trusted CAs.")
PVOpt = typer.Option(11, "--protocol-version", help="Register protocolVer (≥ 17 asks for the v17 layouts).")
TimeoutOpt = typer.Option(10000, "--timeout", "-t", help="Per-step timeout in ms.")
JSONOpt = typer.Option(False, "--json", help="Print the API response body as JSON.")
LineOpt = typer.Option(1, "--line", help="Line instance to call from.")


def _go(op: str, ca_file: str | None, json_: bool, **kwargs: Any) -> None:
    req = _request(**kwargs)
    result = asyncio.run(_probes().run_operation(op, req, ca_file=ca_file))
    emit(result, json_, _render)


@app.command()
def probe(host: str = HostArg, port: int | None = PortOpt, device: str = DeviceOpt, device_type: int = DeviceTypeOpt,
          tls: bool = TLSOpt, insecure: bool = InsecureOpt, ca_file: str | None = CAOpt,
          protocol_version: int = PVOpt, timeout: int = TimeoutOpt, json_: bool = JSONOpt) -> None:
    """Connect and send KeepAlive; report KeepAliveAck and the round trip."""
    _go("probe", ca_file, json_, host=host, port=port, deviceName=device, deviceType=device_type, tls=tls,
        tlsVerify=not insecure, protocolVersion=protocol_version, timeout=timeout)


@app.command()
def register(host: str = HostArg, port: int | None = PortOpt, device: str = DeviceOpt, device_type: int = DeviceTypeOpt,
             tls: bool = TLSOpt, insecure: bool = InsecureOpt, ca_file: str | None = CAOpt,
             protocol_version: int = PVOpt, timeout: int = TimeoutOpt, json_: bool = JSONOpt) -> None:
    """Register the device (RegisterAck / RegisterReject), then unregister."""
    _go("register", ca_file, json_, host=host, port=port, deviceName=device, deviceType=device_type, tls=tls,
        tlsVerify=not insecure, protocolVersion=protocol_version, timeout=timeout)


@app.command()
def linestate(host: str = HostArg, port: int | None = PortOpt, device: str = DeviceOpt,
              device_type: int = DeviceTypeOpt, tls: bool = TLSOpt, insecure: bool = InsecureOpt,
              ca_file: str | None = CAOpt, protocol_version: int = PVOpt, timeout: int = TimeoutOpt,
              json_: bool = JSONOpt) -> None:
    """Register and list lines, speed dials and soft keys."""
    _go("linestate", ca_file, json_, host=host, port=port, deviceName=device, deviceType=device_type, tls=tls,
        tlsVerify=not insecure, protocolVersion=protocol_version, timeout=timeout)


@app.command()
def call(host: str = HostArg, dial: str = typer.Option(..., "--dial", help="Number to dial (0-9 * # A-D +)."),
         hold: int = typer.Option(0, "--hold", help="Stay connected this many ms with RTP both ways."),
         port: int | None = PortOpt, device: str = DeviceOpt, device_type: int = DeviceTypeOpt, line: int = LineOpt,
         tls: bool = TLSOpt, insecure: bool = InsecureOpt, ca_file: str | None = CAOpt,
         protocol_version: int = PVOpt, timeout: int = TimeoutOpt, json_: bool = JSONOpt) -> None:
    """Register, dial, hold with real RTP, hang up; print call states and RTP counts."""
    _go("call-setup", ca_file, json_, host=host, port=port, deviceName=device, deviceType=device_type, tls=tls,
        tlsVerify=not insecure, protocolVersion=protocol_version, timeout=timeout, dialNumber=dial, holdMs=hold,
        lineNumber=line)


@app.command("lab-cm")
def lab_cm(
    host: str = typer.Option("127.0.0.1", help="Address to listen on."),
    port: int = typer.Option(2000, min=0, max=65535, help="TCP port (0 = any free port)."),
    device: list[str] | None = typer.Option(  # noqa: B008
        None, "--device", help="NAME=NUMBER[:LABEL], repeatable (default: SEP001122334455=1001, SEP00112233445A=1002)."
    ),
    echo: str = typer.Option("600", help="Echo extension."),
    tone: str = typer.Option("601", help="1 kHz tone extension."),
    keepalive: int = typer.Option(30, min=1, max=3600, help="keepAliveInterval sent in RegisterAck (s)."),
    tls_cert: str | None = typer.Option(None, help="PEM certificate: listen with TLS."),
    tls_key: str | None = typer.Option(None, help="PEM private key for --tls-cert."),
) -> None:
    """Run the lab SCCP call manager (echo, tone and station-to-station calls) until Ctrl-C."""
    from skinnysip.lab.callmanager import LabCallManager, LabConfig, LabDevice, LabLine

    kwargs: dict[str, Any] = dict(host=host, port=port, echo_extension=echo, tone_extension=tone,
                                  keep_alive_interval=keepalive, tls_cert=tls_cert, tls_key=tls_key)
    if device:
        devices = []
        for spec in device:
            name, _, rest = spec.partition("=")
            number, _, label = rest.partition(":")
            if not name or not number:
                raise typer.BadParameter(f"expected NAME=NUMBER[:LABEL], got {spec!r}", param_hint="--device")
            devices.append(LabDevice(name, [LabLine(number, label or number, label or number)]))
        config = LabConfig(devices=devices, **kwargs)
    else:
        config = LabConfig.demo(**kwargs)

    async def run() -> None:
        async with LabCallManager(config) as cm:
            names = ", ".join(f"{d.name}={d.lines[0].number}" for d in config.devices)
            console.print(f"lab call manager on {host}:{cm.port} ({'TLS' if tls_cert else 'TCP'}); devices {names}; "
                          f"echo {echo}, tone {tone}")
            assert cm.server is not None
            await cm.server.serve_forever()

    try:
        asyncio.run(run())
    except KeyboardInterrupt:
        pass
