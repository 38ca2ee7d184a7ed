"""Command line: ``skinnysip serve``, ``skinnysip sip …``, ``skinnysip sccp …``."""

from __future__ import annotations

from collections.abc import Callable, Iterator, MutableMapping
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
import typer.main
from typer.core import TyperGroup

from skinnysip import __version__
from skinnysip.cli import common

if TYPE_CHECKING:
    from typer._click import Command

#: the root's settings, shared by the scratch apps the lazy sub-commands are built in
_ROOT_SETTINGS: dict[str, Any] = {"no_args_is_help": True, "add_completion": False,
                                  "rich_markup_mode": common.MARKUP}


# Sub-commands are imported when they run (or when a help page lists them), not at start-up:
# ``skinnysip sip options`` does not pay for the lab, the phone, SCCP (numpy) or load. Each
# registers itself exactly as it did on the root, on a scratch app with the root's settings,
# so its click command, help texts and exit codes are the ones typer always built.

def _add_sip(app: typer.Typer) -> None:
    from skinnysip.cli import sip as sip_cli

    app.add_typer(sip_cli.app, name="sip", help="SIP/SIPS probes: options, register, invite, auth.")


def _add_sccp(app: typer.Typer) -> None:
    from skinnysip.cli import sccp as sccp_cli

    app.add_typer(sccp_cli.app, name="sccp", help="SCCP station: probe, register, linestate, call.")


def _add_load(app: typer.Typer) -> None:
    from skinnysip.cli import load as load_cli

    app.add_typer(load_cli.app, name="load",
                  help="SIP load in SIPp's spirit: options, register, call, message, user.")


def _add_lab(app: typer.Typer) -> None:
    from skinnysip.cli import lab as lab_cli

    app.command("lab", help="The embedded lab: SIP registrar/proxy, SCCP call manager, echo/tone/conference "
                "services. Runs until Ctrl-C (exit 0); a bad config or a busy port: one line, exit 2.")(
        lab_cli.lab_cmd)


def _add_phone(app: typer.Typer) -> None:
    from skinnysip.cli import phone as phone_cli

    app.command("phone", help="A SIP softphone: register, call and answer, hold, transfer, DTMF, messages.",
                epilog=common.EXIT_STATUS_HELP, cls=phone_cli.PhoneCommand)(phone_cli.phone_cmd)


#: the root's sub-commands in the order help lists them (typer's order: commands, then groups);
#: a name maps to the function that registers it, None for the light ones defined below
_COMMANDS: dict[str, Callable[[typer.Typer], None] | None] = {
    "lab": _add_lab, "phone": _add_phone, "serve": None, "version": None,
    "sip": _add_sip, "sccp": _add_sccp, "load": _add_load,
}


def _build(name: str, add: Callable[[typer.Typer], None]) -> Command:
    scratch = typer.Typer(**_ROOT_SETTINGS)
    add(scratch)
    command = typer.main.get_group(scratch).commands[name]
    common.plain_metavars(command)
    return command


class _LazyCommands(MutableMapping[str, "Command"]):
    """The root group's ``commands``: names known at once, each command built on first look-up
    (``commands["sip"]``); listing the names (``list(commands)``) builds nothing."""

    def __init__(self, built: MutableMapping[str, Command]) -> None:
        self._built: dict[str, Command | None] = {name: built.get(name) for name in _COMMANDS}
        self._built.update(built)

    def __getitem__(self, name: str) -> Command:
        command = self._built[name]
        if command is None:
            add = _COMMANDS[name]
            assert add is not None
            command = self._built[name] = _build(name, add)
        return command

    def __setitem__(self, name: str, command: Command) -> None:
        self._built[name] = command

    def __delitem__(self, name: str) -> None:
        del self._built[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._built)

    def __len__(self) -> int:
        return len(self._built)


class _RootGroup(TyperGroup):
    """typer's group with lazily built sub-commands (:class:`_LazyCommands`)."""

    def __init__(self, **attrs: Any) -> None:
        super().__init__(**attrs)
        common.plain_metavars(self)  # its own options and the light commands built with it
        self.commands = _LazyCommands(self.commands)

    def list_commands(self, ctx: typer.Context) -> list[str]:  # type: ignore[override]
        return list(self.commands)


app = typer.Typer(
    name="skinnysip",
    help="Probe, register and call SIP and Cisco SCCP (Skinny) servers; see every byte on the wire.",
    epilog=common.EXIT_STATUS_HELP,
    cls=_RootGroup,
    **_ROOT_SETTINGS,
)


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"skinnysip {__version__}")
        raise typer.Exit(0)


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", "-V", callback=_print_version, is_eager=True,
                                 help="Print the version and exit."),
) -> None:
    """Probe, register and call SIP and Cisco SCCP (Skinny) servers; see every byte on the wire."""


@app.command()
def serve(
    host: str = typer.Option("127.0.0.1", help="Address to listen on."),
    port: int = typer.Option(8080, min=1, max=65535, help="TCP port to listen on."),
    allow: Annotated[list[str] | None, typer.Option(
        "--allow", envvar="SKINNYSIP_ALLOW", show_default=False,
        help="Target the API may connect to: address, CIDR network, host name or *.domain (repeatable); "
             "lifts the default denials of an exposed server (loopback, private ranges).",
    )] = None,
    deny: Annotated[list[str] | None, typer.Option(
        "--deny", envvar="SKINNYSIP_DENY", show_default=False,
        help="Target the API must not connect to: address, CIDR network, host name or *.domain (repeatable).",
    )] = None,
    token: str | None = typer.Option(
        None, "--token", envvar="SKINNYSIP_TOKEN", show_default=False,
        help="Bearer token clients must send (default beyond loopback: one generated and printed at start).",
    ),
    lab: bool = typer.Option(False, "--lab", help="Also run the embedded lab (SIP 5060/5061, SCCP 2000, demo "
                             "accounts 1001-1003) in the same process; the page shows it."),
    lab_config: Annotated[Path | None, typer.Option(
        "--lab-config", show_default=False, help="Lab configuration (TOML) for --lab.")] = None,
    sip_port: int | None = typer.Option(None, "--sip-port", min=1, max=65535, show_default=False,
                                        help="Lab SIP port, UDP and TCP (default 5060; implies --lab)."),
    sips_port: int | None = typer.Option(None, "--sips-port", min=1, max=65535, show_default=False,
                                         help="Lab SIP over TLS port (default 5061; implies --lab)."),
    sccp_port: int | None = typer.Option(None, "--sccp-port", min=1, max=65535, show_default=False,
                                         help="Lab SCCP call manager port (default 2000; implies --lab)."),
) -> None:
    """Run the HTTP API (OpenAPI page at /docs) and the web page at /.

    Listening beyond loopback, the API requires a bearer token and refuses targets in
    loopback, private, link-local, metadata, multicast and broadcast ranges unless --allow
    lifts them (403 with the reason)."""
    import uvicorn

    from skinnysip.addresses import hostport
    from skinnysip.api.app import create_app
    from skinnysip.api.guard import ServiceSettings

    try:
        settings = ServiceSettings.for_listen(host, allow=allow or [], deny=deny or [], token=token,
                                              environ={})
    except ValueError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    _check_listen(host, port)  # a busy port or unknown host: one line, before any banner
    wants_lab = lab or any(v is not None for v in (lab_config, sip_port, sips_port, sccp_port))
    from skinnysip.cli import lab as lab_cli

    lab_settings = (lab_cli.settings_from_options(lab_config, sip_port=sip_port, sips_port=sips_port,
                                                  sccp_port=sccp_port) if wants_lab else None)
    typer.echo(f"skinnysip {__version__}: http://{hostport(host, port)}/  (API docs at /docs)")
    if settings.token_generated:
        typer.echo(f"bearer token: {settings.token}  (send 'Authorization: Bearer <token>'; set --token or SKINNYSIP_TOKEN to choose one)")
    if settings.policy is not None:
        typer.echo(f"target policy: {settings.policy}")
    if lab_settings is not None:
        lab_cli.serve_with_lab(lab_settings, lambda running: create_app(settings, lab=running), host, port)
        return
    # loop="asyncio": the SIP transport reads ICMP errors from the socket's error queue
    # (IP_RECVERR + recvmsg), which uvloop's transport sockets do not offer (under uvloop a UDP
    # probe to a closed port raised in a loop and the server crashed)
    uvicorn.run(create_app(settings), host=host, port=port, log_level="info", loop="asyncio")


@app.command()
def version() -> None:
    """Print the version."""
    typer.echo(__version__)


def _check_listen(host: str, port: int) -> None:
    """Bind ``host:port`` once (as uvicorn will, SO_REUSEADDR) and let go, so a busy port or
    a host that is not ours fails with one line (exit 2) before anything is printed."""
    import socket

    from skinnysip.addresses import hostport, strip_brackets

    try:
        infos = socket.getaddrinfo(strip_brackets(host), port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        common.fail(f"--host: cannot resolve {host!r} ({exc.strerror})")
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(address)
        except OSError as exc:
            common.fail(f"cannot listen on {hostport(host, port)}: {exc.strerror or exc}")


def main() -> None:
    """The ``skinnysip`` entry point. A last guard: whatever goes wrong, one line on stderr
    and exit 2, never a traceback (Ctrl-C: exit 130)."""
    import sys

    try:
        app(standalone_mode=True)
    except KeyboardInterrupt:
        sys.exit(130)
    except Exception as exc:  # noqa: BLE001 - the last guard before the user
        reason = str(exc).splitlines()[0] if str(exc) else ""
        print(f"error: {type(exc).__name__}{': ' + reason if reason else ''}", file=sys.stderr)
        sys.exit(common.EXIT_USAGE)
