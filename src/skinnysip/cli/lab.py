"""``skinnysip lab``: the embedded lab alone (SIP registrar/proxy on UDP, TCP and TLS, the SCCP
call manager, the services), and the helper behind ``skinnysip serve --lab``.

A bad configuration or a busy port is one line on stderr and exit status 2, never a
traceback. Ctrl-C (or SIGTERM) stops the lab.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from skinnysip.cli.common import EXIT_USAGE, Command, fail, option
from skinnysip.lab.config import ConfigError, LabSettings, load_settings

if TYPE_CHECKING:  # the lab (numpy, media) is imported when a lab starts, not with every command
    from skinnysip.lab.runner import Lab

__all__ = ["describe", "lab_cmd", "serve_with_lab", "settings_from_options"]


def settings_from_options(config: Path | None, *, sip_port: int | None = None, sips_port: int | None = None,
                          sccp_port: int | None = None, hosts: list[str] | None = None,
                          ws_port: int | None = None, wss_port: int | None = None, stir: bool = False,
                          stir_x5u: str | None = None) -> LabSettings:
    """The lab settings of ``config`` (None: the defaults) with the command-line overrides;
    a bad value exits with one line naming the key. ``stir``: sign calls (``stir.sign``);
    ``stir_x5u``: where the certificate is served (``serve``'s own URL) when the config
    names no other."""
    try:
        settings = load_settings(config)
        settings = settings.with_overrides(sip_port=sip_port, sips_port=sips_port, sccp_port=sccp_port,
                                           hosts=tuple(hosts) if hosts else None, ws_port=ws_port,
                                           wss_port=wss_port, stir_sign=True if stir else None)
        if settings.stir_sign and settings.stir_x5u is None and stir_x5u is not None:
            settings = settings.with_overrides(stir_x5u=stir_x5u)
        return settings
    except ConfigError as exc:
        fail(f"lab config: {exc}", EXIT_USAGE)


def describe(lab: Lab) -> list[str]:
    """The lines printed at start: addresses, accounts, devices, extensions."""
    info = lab.info()
    lines = [f"skinnysip lab: domain {info['domain']} (digest {info['algorithm']}, qop auth)",
             "  SIP   " + "  ".join(info["listeners"]),
             f"  SCCP  {info['sccp']} (TCP)"]
    for account in info["accounts"]:
        password = account["password"] or "(password from the config)"
        lines.append(f"  account {account['user']} / {password}  {account['aor']}")
    for device in info["devices"]:
        lines.append(f"  SCCP device {device['name']}  line {device['line']}")
    lines.append("  extensions " + ", ".join(f"{n} {k}" for n, k in info["extensions"].items()))
    if info["stir"]["sign"]:
        lines.append(f"  STIR/SHAKEN: users' calls signed (attest {info['stir']['attest']}), certificate at "
                     f"{info['stir']['x5u']}")
    lines.extend(f"  note: {n}" for n in info["notes"])
    return lines


async def _start(settings: LabSettings) -> Lab:
    from skinnysip.lab.runner import Lab, LabError

    lab = Lab(settings)
    try:
        await lab.start()
    except LabError as exc:
        fail(f"lab: {exc.reason}", EXIT_USAGE)
    return lab


@click.command("lab", cls=Command,
               help="The embedded lab: SIP registrar/proxy, SCCP call manager, echo/tone/conference services. "
                    "Runs until Ctrl-C (exit 0); a bad config or a busy port: one line, exit 2.")
@option("--config", type=click.Path(path_type=Path), show_default=False, help="Lab configuration (TOML).")
@option("--sip-port", type=click.IntRange(0, 65535), show_default=False,
        help="SIP port for UDP and TCP [default: 5060].")
@option("--sips-port", type=click.IntRange(0, 65535), show_default=False, help="SIP over TLS port [default: 5061].")
@option("--sccp-port", type=click.IntRange(0, 65535), show_default=False, help="SCCP port [default: 2000].")
@option("--ws-port", type=click.IntRange(0, 65535), show_default=False,
        help="SIP over WebSocket port, for browser phones (e.g. 5066) [default: none].")
@option("--wss-port", type=click.IntRange(0, 65535), show_default=False,
        help="SIP over secure WebSocket port (e.g. 7443) [default: none].")
@option("--host", multiple=True, show_default=False,
        help="Address to listen on (repeatable) [default: 127.0.0.1 and ::1].")
def lab_cmd(config: Path | None, sip_port: int | None, sips_port: int | None, sccp_port: int | None,
            ws_port: int | None, wss_port: int | None, host: tuple[str, ...]) -> None:
    """Run the lab: a SIP registrar and record-routing proxy (UDP, TCP, TLS; digest auth),
    the SCCP call manager and the services (600 echo, 601 tone, 602 playback, 603
    conference, 604 DTMF echo, music on hold), until Ctrl-C."""
    settings = settings_from_options(config, sip_port=sip_port, sips_port=sips_port, sccp_port=sccp_port,
                                     hosts=list(host), ws_port=ws_port, wss_port=wss_port)

    async def run() -> None:
        lab = await _start(settings)
        try:
            for line in describe(lab):
                click.echo(line)
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                with contextlib.suppress(NotImplementedError, RuntimeError):
                    loop.add_signal_handler(sig, stop.set)
            await stop.wait()
        finally:
            await lab.close()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run())


def serve_with_lab(settings: LabSettings, make_app: Callable[[Lab], Any], host: str, port: int) -> None:
    """``serve --lab``: start the lab, then the API server (uvicorn) in the same event loop
    with the app ``make_app(lab)``; the lab stops when the server does."""
    import uvicorn

    async def run() -> None:
        lab = await _start(settings)
        try:
            for line in describe(lab):
                click.echo(line)
            server = uvicorn.Server(uvicorn.Config(make_app(lab), host=host, port=port, log_level="info"))
            await server.serve()
        finally:
            await lab.close()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run())
