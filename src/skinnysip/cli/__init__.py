"""Command line: ``skinnysip serve``, ``skinnysip sip …``, ``skinnysip sccp …``."""

from __future__ import annotations

import gc
import importlib
from typing import NoReturn

import click

from skinnysip import __version__
from skinnysip.cli import common
from skinnysip.cli.common import Group, option
from skinnysip.net.realtime import collector_paused

#: set by :func:`run`: this process is the command line's own, and its collector may be frozen
_own_process = False

# Sub-commands are imported when they run (or when a help page lists them), not at start-up:
# ``skinnysip sip options`` does not pay for the lab, the phone, SCCP (numpy) or load.

#: the root's sub-commands in the order help lists them: a name maps to (module, attribute) of
#: its command, None for the light ones defined below
_COMMANDS: dict[str, tuple[str, str] | None] = {
    "lab": ("skinnysip.cli.lab", "lab_cmd"), "phone": ("skinnysip.cli.phone", "phone_cmd"),
    "serve": None, "version": None,
    "sip": ("skinnysip.cli.sip", "app"), "sccp": ("skinnysip.cli.sccp", "app"), "load": ("skinnysip.cli.load", "app"),
}


class _RootGroup(Group):
    """The root group: its sub-commands are imported on first look-up (:data:`_COMMANDS`);
    listing their names imports nothing. Ctrl-C ends any command with exit status 130."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(_COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        command = self.commands.get(cmd_name)
        where = _COMMANDS.get(cmd_name)
        if command is None and where is not None:
            # An import makes long-lived objects only: the collector's passes over them are
            # wasted. Paused, they would all be walked by the next collection instead (~4 ms
            # of 'sip options' start-up), so a process of its own then freezes them: no
            # collection walks what was there before the command ran (issue 12).
            with collector_paused():
                module = importlib.import_module(where[0])
                if _own_process:
                    gc.freeze()
            command = getattr(module, where[1])
            assert isinstance(command, click.Command)
            self.commands[cmd_name] = command
        return command

    def invoke(self, ctx: click.Context) -> object:
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt:
            raise common.exit_with(130) from None


def _print_version(ctx: click.Context, param: click.Parameter, value: bool) -> None:
    if value and not ctx.resilient_parsing:
        click.echo(f"skinnysip {__version__}")
        ctx.exit(0)


@click.group("skinnysip", cls=_RootGroup, epilog=common.EXIT_STATUS_HELP)
@option("--version", "-V", is_flag=True, callback=_print_version, is_eager=True, expose_value=False,
        help="Print the version and exit.")
def app() -> None:
    """Probe, register and call SIP and Cisco SCCP (Skinny) servers; see every byte on the wire."""


def _reachable(host: str) -> str:
    """The address a client on this machine reaches a server listening on ``host`` at (the
    wildcard addresses are not one)."""
    return {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host, host)


@app.command("serve")
@option("--host", default="127.0.0.1", help="Address to listen on.")
@option("--port", default=8080, type=click.IntRange(1, 65535), help="TCP port to listen on.")
@option("--allow", multiple=True, envvar="SKINNYSIP_ALLOW", show_default=False,
        help="Target the API may connect to: address, CIDR network, host name or *.domain (repeatable); "
             "lifts the default denials of an exposed server (loopback, private ranges).")
@option("--deny", multiple=True, envvar="SKINNYSIP_DENY", show_default=False,
        help="Target the API must not connect to: address, CIDR network, host name or *.domain (repeatable).")
@option("--token", envvar="SKINNYSIP_TOKEN", show_default=False,
        help="Bearer token clients must send (default beyond loopback: one generated and printed at start).")
@option("--lab", is_flag=True, help="Also run the embedded lab (SIP 5060/5061, SCCP 2000, demo "
        "accounts 1001-1003) in the same process; the page shows it.")
@option("--lab-config", type=click.Path(), show_default=False,  # a str: pathlib is no start-up cost
        help="Lab configuration (TOML) for --lab.")
@option("--sip-port", type=click.IntRange(1, 65535), show_default=False,
        help="Lab SIP port, UDP and TCP (default 5060; implies --lab).")
@option("--sips-port", type=click.IntRange(1, 65535), show_default=False,
        help="Lab SIP over TLS port (default 5061; implies --lab).")
@option("--sccp-port", type=click.IntRange(1, 65535), show_default=False,
        help="Lab SCCP call manager port (default 2000; implies --lab).")
@option("--stir", is_flag=True, help="The lab signs its users' calls (STIR/SHAKEN, RFC 8224/8588, attest A) with a "
        "certificate served at /api/lab/stir.pem, their x5u (implies --lab).")
def serve(host: str, port: int, allow: tuple[str, ...], deny: tuple[str, ...], token: str | None, lab: bool,
          lab_config: str | None, sip_port: int | None, sips_port: int | None, sccp_port: int | None,
          stir: bool) -> None:
    """Run the HTTP API (OpenAPI page at /docs) and the web page at /.

    Listening beyond loopback, the API requires a bearer token and refuses targets in
    loopback, private, link-local, metadata, multicast and broadcast ranges unless --allow
    lifts them (403 with the reason)."""
    import uvicorn

    from skinnysip.addresses import hostport
    from skinnysip.api.app import create_app
    from skinnysip.api.guard import ServiceSettings

    try:
        settings = ServiceSettings.for_listen(host, allow=list(allow), deny=list(deny), token=token,
                                              environ={})
    except ValueError as exc:
        click.echo(f"error: {exc}", err=True)
        raise common.exit_with(2) from None
    _check_listen(host, port)  # a busy port or unknown host: one line, before any banner
    wants_lab = lab or stir or any(v is not None for v in (lab_config, sip_port, sips_port, sccp_port))
    from pathlib import Path

    from skinnysip.cli import lab as lab_cli

    lab_settings = (lab_cli.settings_from_options(None if lab_config is None else Path(lab_config),
                                                  sip_port=sip_port, sips_port=sips_port,
                                                  sccp_port=sccp_port, stir=stir,
                                                  stir_x5u=f"http://{hostport(_reachable(host), port)}/api/lab/stir.pem")
                    if wants_lab else None)
    click.echo(f"skinnysip {__version__}: http://{hostport(host, port)}/  (API docs at /docs)")
    if settings.token_generated:
        click.echo(f"bearer token: {settings.token}  (send 'Authorization: Bearer <token>'; set --token or SKINNYSIP_TOKEN to choose one)")
    if settings.policy is not None:
        click.echo(f"target policy: {settings.policy}")
    if lab_settings is not None:
        lab_cli.serve_with_lab(lab_settings, lambda running: create_app(settings, lab=running), host, port)
        return
    # loop="asyncio": the server, its phones and the lab are proven on asyncio's loop (web and API
    # tests). uvloop once crashed it (a UDP probe to a closed port raised in a loop, when the SIP
    # transport used the loop's datagram transport); the transport now reads its own socket and
    # `load` runs on uvloop (net/event_loop.py), but the server has not been proven on it
    uvicorn.run(create_app(settings), host=host, port=port, log_level="info", loop="asyncio")


@app.command("version")
def version() -> None:
    """Print the version."""
    click.echo(__version__)


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
    import atexit
    import sys

    # When the process ends, the interpreter's last collections would walk every object the
    # command made (~20 ms of 'sip options' here, issue 12): frozen objects are skipped. At
    # exit, not when main returns: a caller that goes on (a test, a script) keeps its collector
    # as it was. Registered before the command's own handlers, it runs after them (LIFO);
    # weakref finalizers and the flush of stdout/stderr still run.
    atexit.unregister(gc.freeze)
    atexit.register(gc.freeze)
    args = sys.argv[1:]
    if "--nagios" in args and args[:1] in (["sip"], ["sccp"]):
        _nagios_main(args[0].upper())
    try:
        app(standalone_mode=True)
    except KeyboardInterrupt:
        sys.exit(130)
    except Exception as exc:  # noqa: BLE001 - the last guard before the user
        reason = str(exc).splitlines()[0] if str(exc) else ""
        print(f"error: {type(exc).__name__}{': ' + reason if reason else ''}", file=sys.stderr)
        sys.exit(common.EXIT_USAGE)


def run() -> None:
    """The command line of a process of its own (the ``skinnysip`` console script and
    ``python -m skinnysip``, through :func:`skinnysip.__main__.run`): :func:`main`; when the
    command printed a result (the probes: :data:`common.result_out`), the process then ends
    at once with its exit status (:func:`quick_exit`), else as usual. The objects made by
    loading the command are frozen for the collector (:func:`gc.freeze`, in
    ``_RootGroup.get_command``). A caller that goes on after the command (a script, a test)
    calls :func:`main` instead, which leaves its collector as it was."""
    global _own_process
    _own_process = True
    try:
        main()
    except SystemExit as exc:
        if not common.result_out:
            raise
        quick_exit(exit_status(exc.code))


def exit_status(code: object) -> int:
    """The process exit status of ``SystemExit(code)``, as the interpreter maps it: None is 0,
    an int is itself, anything else is printed on stderr and is 1."""
    import sys

    if code is None:
        return 0
    if isinstance(code, int):
        return code
    print(code, file=sys.stderr)
    return 1


def quick_exit(status: int) -> NoReturn:
    """End the process with ``status``: first the ``atexit`` handlers (the command's own,
    logging's flush, temporary directories' removal, the dataclass cache) and a flush of
    stdout and stderr, then :func:`os._exit`, skipping the interpreter's finalisation — every
    module's objects freed one by one, ~3 ms of a ~115 ms ``sip options`` (issue 12's
    start-up budget). When a thread that is not a daemon still runs, the ordinary
    :func:`sys.exit`, which waits for it."""
    import atexit
    import os
    import sys
    import threading

    current = threading.current_thread()
    if any(t is not current and not t.daemon and t.is_alive() for t in threading.enumerate()):
        sys.exit(status)
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            if stream is not None:
                stream.flush()
        except (OSError, ValueError):  # a reader that went away (| head) or a closed stream
            pass
    os._exit(status)


def _nagios_main(service: str) -> None:
    """A probe run as a monitoring plugin (``--nagios``): whatever stops it before it ran —
    bad arguments, a local error, an unexpected exception — is one ``SERVICE UNKNOWN - reason``
    line on stdout and exit 3 (the Monitoring Plugins guidelines); the probe's own line and
    status come from the command."""
    import sys

    common.NAGIOS["service"] = service
    unknown = common.NAGIOS_UNKNOWN
    try:
        status = app(standalone_mode=False)
    except click.ClickException as exc:
        print(common.nagios_line(service, unknown, exc.format_message()))
        sys.exit(unknown)
    except (KeyboardInterrupt, click.exceptions.Abort):
        print(common.nagios_line(service, unknown, "interrupted"))
        sys.exit(unknown)
    except Exception as exc:  # noqa: BLE001 - the last guard before the monitor
        print(common.nagios_line(service, unknown, f"{type(exc).__name__}: {exc}"))
        sys.exit(unknown)
    status = status if isinstance(status, int) else 0
    if status not in (0, 1, 2, 3):  # Ctrl-C (130) or another ending a monitor cannot read
        print(common.nagios_line(service, unknown, "interrupted" if status == 130 else f"ended with status {status}"))
        status = unknown
    sys.exit(status)
