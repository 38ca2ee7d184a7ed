"""Helpers shared by the CLI sub-commands: exit status, targets, JSON output, secrets, errors.

Exit status, in the sipsak manner (:data:`EXIT_STATUS_HELP`, also in every command's
``--help`` and the README): 0 the command got what it asked for, 1 the server answered
otherwise, 2 usage or local error, 3 no usable answer.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NoReturn, Protocol, cast

import click

from skinnysip._regex import compile_on_use

if TYPE_CHECKING:
    from rich.console import Console

    from skinnysip.result import WireMessage


class ApiResult(Protocol):
    """What a command prints: a result whose ``to_api()`` is the HTTP API's JSON body."""

    def to_api(self) -> dict[str, Any]: ...


class _LazyConsole:
    """A :class:`rich.console.Console` made on first use with ``options``: rich costs start-up
    time (~15-25 ms) that a command printing only JSON does not need."""

    def __init__(self, **options: Any) -> None:
        self._options = options
        self._console: Console | None = None

    def __getattr__(self, name: str) -> Any:
        if self._console is None:
            from rich.console import Console

            self._console = Console(**self._options)
        return getattr(self._console, name)


#: C0 controls but tab and line feed, DEL and C1 controls: never sent to a terminal as they are
_CONTROL_RE = compile_on_use("[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def printable(text: str) -> str:
    """``text`` (a server's reason phrase, header value, display name or message; a file name)
    safe to print on a terminal: control characters (ESC, CR, BEL, C1, …; not tab or line feed)
    are shown as ``\\xNN`` escapes, so the wire cannot move the cursor, retitle the window
    or hide what came before it (RFC 3261 §25.1 allows no control character there anyway)."""
    return _CONTROL_RE.sub(lambda m: f"\\x{ord(m.group()):02x}", text)


#: the options of every rich console the CLI prints with: no highlighting, and no emoji codes
#: (rich would turn a server's or user's ``:abc:`` — a reason phrase, a file name — into a glyph)
CONSOLE_OPTIONS: dict[str, Any] = {"highlight": False, "emoji": False}
#: stdout and stderr consoles of every command (rich, made on first print)
console = cast("Console", _LazyConsole(**CONSOLE_OPTIONS))
err_console = cast("Console", _LazyConsole(stderr=True, **CONSOLE_OPTIONS))

#: got what was asked: a 2xx final; registered; authenticated; call connected
EXIT_OK = 0
#: the server answered otherwise: a 404 to REGISTER, a refused login, a busy call
EXIT_ANSWERED = 1
#: usage or local error: bad arguments, a file that cannot be read, a port already in use
EXIT_USAGE = 2
#: no usable answer: connection refused, timed out, TLS failure, malformed stream
EXIT_NO_ANSWER = 3

EXIT_STATUS_HELP = (
    "Exit status: 0 got what was asked (a 2xx final response; registered; authenticated; call "
    "connected); 1 the server answered otherwise (e.g. 404 to REGISTER, a refused login, a busy "
    "call); 2 usage or local error (bad arguments, unreadable file, port in use); 3 no usable "
    "answer (refused, timed out, TLS failure, malformed stream)."
)

#: Nagios/Icinga plugin exit statuses (the Monitoring Plugins Development Guidelines, "Plugin
#: Return Codes"), used with ``--nagios``
NAGIOS_OK, NAGIOS_WARNING, NAGIOS_CRITICAL, NAGIOS_UNKNOWN = 0, 1, 2, 3
NAGIOS_STATES = ("OK", "WARNING", "CRITICAL", "UNKNOWN")
#: a probe command's ``--nagios``, ``--warning`` and ``--critical`` (:func:`nagios_options`)
NagiosArgs = tuple[bool, float | None, float | None]
#: set by the entry point when ``--nagios`` is on the command line: a usage or local error then
#: prints one ``… UNKNOWN - reason`` line on stdout and exits 3, as a monitoring plugin must
NAGIOS: dict[str, str | None] = {"service": None}


def nagios_line(service: str, state: int, text: str, perfdata: Sequence[str] = ()) -> str:
    """One plugin output line: ``SERVICE STATE - text | perfdata…`` (``|`` and newlines in
    ``text`` would cut the line short: they become ``/`` and spaces)."""
    clean = printable(text).replace("|", "/").replace("\n", " ")
    return f"{service} {NAGIOS_STATES[state]} - {clean}" + (f" | {' '.join(perfdata)}" if perfdata else "")


def perf_value(label: str, value: float | None, unit: str = "", warn: float | None = None,
               crit: float | None = None, low: float | None = 0) -> str:
    """One performance datum ``label=value[unit];[warn];[crit];[min];`` (``U``: no value)."""
    def num(v: float | None) -> str:
        return "" if v is None else f"{v:g}"
    shown = "U" if value is None else f"{value:g}{unit}"
    return f"{label}={shown};{num(warn)};{num(crit)};{num(low)};"


def nagios_verdict(service: str, status: int, text: str, rtt: float | None, warning: float | None,
                   critical: float | None, *, answered_critical: bool = False,
                   perf: Sequence[str] = ()) -> tuple[int, str]:
    """A probe's monitoring-plugin state and line from its exit ``status`` (``EXIT_*``): OK
    for :data:`EXIT_OK`, WARNING for another answer (CRITICAL with ``answered_critical``: a
    refused login, a rejected device), CRITICAL for no answer; a round trip ``rtt`` (ms) at or
    above ``warning``/``critical`` raises the state to that. Performance data: ``rtt`` in ms
    with the thresholds, then ``perf``."""
    if status == EXIT_OK:
        state = NAGIOS_OK
    elif status == EXIT_ANSWERED:
        state = NAGIOS_CRITICAL if answered_critical else NAGIOS_WARNING
    else:
        state = NAGIOS_CRITICAL
    if rtt is not None:
        text += f" in {rtt:.3f} ms"
        if critical is not None and rtt >= critical:
            state, text = NAGIOS_CRITICAL, text + f" (>= {critical:g} ms)"
        elif warning is not None and rtt >= warning and state == NAGIOS_OK:
            state, text = NAGIOS_WARNING, text + f" (>= {warning:g} ms)"
    return state, nagios_line(service, state, text, [perf_value("rtt", rtt, "ms", warning, critical), *perf])


# --------------------------------------------------------------------------- click building blocks
#
# The commands are plain click (no typer: typer 0.29 converts every parameter through a pydantic
# TypeAdapter and so imports pydantic at every start). These classes keep what users saw:
# defaults and environment variables in the help, values named as argparse names them, an
# "Arguments:" section, sub-commands listed in the order they are defined.


class Option(click.Option):
    """A click option that shows its default and environment variable in the help, and names
    its value as argparse does (``--rate RATE``, from the parameter's name) unless a metavar
    is chosen; flags take no value and have none."""

    def __init__(self, param_decls: Sequence[str], *, show_default: bool | str | None = True,
                 show_envvar: bool = True, **attrs: Any) -> None:
        super().__init__(param_decls, show_default=show_default, show_envvar=show_envvar, **attrs)
        if self.metavar is None and not self.is_flag and not self.count and self.name:
            self.metavar = self.name.upper()


class Argument(click.Argument):
    """A click argument with a help text (click's own have none), listed by :class:`Command`."""

    def __init__(self, param_decls: Sequence[str], required: bool | None = None, *, help: str | None = None,
                 **attrs: Any) -> None:
        super().__init__(param_decls, required=required, **attrs)
        self.help = help


class _PendingOption:
    """An :class:`Option` declared by :func:`option` on a function, made when its
    :class:`Command` first needs its parameters: a group's commands that do not run never
    build theirs (``skinnysip sip options`` makes its ~20 options, not the ~160 of every
    ``sip`` command: ~1 ms of start-up, issue 12)."""

    __slots__ = ("attrs", "param_decls")

    def __init__(self, param_decls: Sequence[str], attrs: dict[str, Any]) -> None:
        self.param_decls, self.attrs = param_decls, attrs

    def make(self) -> Option:
        return Option(self.param_decls, **self.attrs)


class _MadeOnUse(click.Command):
    """A command or group whose options declared with :func:`option` are made on the first
    look at :attr:`params`."""

    _params: list[click.Parameter]
    _pending: bool

    @property
    def params(self) -> list[click.Parameter]:
        params = self._params
        if self._pending:
            params[:] = [p.make() if isinstance(p, _PendingOption) else p for p in params]
            self._pending = False
        return params

    @params.setter
    def params(self, value: list[click.Parameter]) -> None:
        self._params = value
        self._pending = any(isinstance(p, _PendingOption) for p in value)


class Command(_MadeOnUse):
    """A click command whose help lists its arguments (with their help) before the options;
    its :func:`option` s are made when it first needs them."""

    def format_options(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = []
        for param in self.get_params(ctx):
            if isinstance(param, Argument) and param.help:
                extra = "  [required]" if param.required else ""
                rows.append((param.metavar or (param.name or "").upper(), param.help + extra))
        if rows:
            with formatter.section("Arguments"):
                formatter.write_dl(rows)
        super().format_options(ctx, formatter)


class Group(_MadeOnUse, click.Group):
    """A click group of :class:`Command` s, listed in the order they were added (not sorted);
    with no arguments it shows its help (exit 2)."""

    command_class = Command

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(self.commands)


class FloatRange(click.FloatRange):
    """click's float range, but ``nan`` is refused (it compares false with both bounds, so
    click would let it through)."""

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        number = super().convert(value, param, ctx)
        if number != number:  # nan
            self.fail(f"{value!r} is not a number.", param, ctx)
        return number


def option(*param_decls: str, **attrs: Any) -> Callable[[Any], Any]:
    """``@click.option`` making an :class:`Option`: on a function that becomes a
    :class:`Command` or :class:`Group` (never click's own classes, which would not make it),
    when the command first needs its parameters (:class:`_PendingOption`); on a command
    already made, at once."""
    def decorator(f: Any) -> Any:
        if isinstance(f, click.Command):
            f.params.append(Option(param_decls, **attrs))
        else:  # as click's own decorators keep them until the command is made
            f.__dict__.setdefault("__click_params__", []).append(_PendingOption(param_decls, attrs))
        return f
    return decorator


def argument(*param_decls: str, **attrs: Any) -> Callable[[Any], Any]:
    """``@click.argument`` making an :class:`Argument` (which takes ``help``)."""
    return click.argument(*param_decls, cls=Argument, **attrs)


def nagios_options(service: str, ok: str, critical: str) -> tuple[Callable[[Any], Any], ...]:
    """``--nagios``, ``--warning MS`` and ``--critical MS`` of a probe command of ``service``
    (SIP, SCCP): ``ok`` says what is OK, ``critical`` which answers are CRITICAL."""
    return (
        option("--nagios", is_flag=True,
               help=f"Run as a Nagios/Icinga plugin: one line '{service} STATE - text | rtt=…ms;…' and exit 0 OK "
                    f"({ok}), 1 WARNING (another answer, or --warning passed), 2 CRITICAL (no answer, "
                    f"{critical}, or --critical passed), 3 UNKNOWN (usage or local error)."),
        option("--warning", "-w", type=FloatRange(0, 600000), metavar="MS",
               help="--nagios: WARNING when the round trip takes at least this many ms."),
        option("--critical", "-c", type=FloatRange(0, 600000), metavar="MS",
               help="--nagios: CRITICAL when the round trip takes at least this many ms."),
    )


def stacked(*decorators: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """One decorator applying ``decorators`` as if written one above the other in this order
    (the first is the outermost: click lists parameters in that order)."""
    def apply(f: Any) -> Any:
        for decorator in reversed(decorators):
            f = decorator(f)
        return f
    return apply


def exit_with(code: int) -> click.exceptions.Exit:
    """The exception that ends a command with exit status ``code`` (``raise exit_with(1)``)."""
    return click.exceptions.Exit(code)


def fail(message: str, code: int = EXIT_USAGE) -> NoReturn:
    """Print ``error: message`` (one line, stderr, no markup) and exit with ``code``; under
    ``--nagios`` (:data:`NAGIOS`), a ``… UNKNOWN - message`` line on stdout and exit 3."""
    service = NAGIOS["service"]
    if service is not None:
        click.echo(nagios_line(service, NAGIOS_UNKNOWN, message))
        raise exit_with(NAGIOS_UNKNOWN)
    err_console.print(f"error: {printable(message)}", markup=False, highlight=False, soft_wrap=True)
    raise exit_with(code)


#: True once :func:`emit` printed a command's result: the command has nothing left to finish
#: (its event loop, sockets and files are closed), so :func:`skinnysip.cli.run` may end the
#: process without the interpreter's finalisation
result_out = False


def emit(result: ApiResult, as_json: bool, render: Callable[[Any], None], status: int,
         nagios: tuple[int, str] | None = None) -> NoReturn:
    """Print ``result`` (the API body with ``--json``, else ``render``) and exit with ``status``
    (one of the ``EXIT_*`` codes, chosen by the command from the result) — or, with
    ``nagios`` (a monitoring plugin's state and line, :func:`nagios_verdict`), print that line
    and exit with that state. Sets :data:`result_out`."""
    global result_out
    result_out = True
    if nagios is not None:
        click.echo(nagios[1])
        raise exit_with(nagios[0])
    body = result.to_api()
    if as_json:
        click.echo(json.dumps(body, indent=2))
    else:
        render(result)
    raise exit_with(status)


def password_from(option: str | None, *, prompt: bool, env: str = "SKINNYSIP_PASSWORD") -> str | None:
    """The password: the option, else ``$SKINNYSIP_PASSWORD``, else a hidden prompt when
    ``prompt`` is true and stdin is a terminal. Never echoed."""
    if option is not None:
        return option
    if env in os.environ:
        return os.environ[env]
    if prompt and sys.stdin.isatty():
        return str(click.prompt("Password", hide_input=True, default="", show_default=False))
    return None


# --------------------------------------------------------------------------- targets

_SCHEME_RE = compile_on_use(r"(?i)sips?:")
_WS_URL_RE = compile_on_use(r"(?i)wss?://")
TRANSPORTS = ("udp", "tcp", "tls", "ws", "wss")


@dataclass(frozen=True)
class Target:
    """A server as a person writes it: ``host`` (no IPv6 brackets), ``port`` (None: not
    written), ``transport`` (``udp``/``tcp``/``tls``/``ws``/``wss``, None: not written),
    ``scheme`` (``sip``/``sips``, None: not a URI), ``uri`` (the URI as written when it has a
    user part, ``sip:bob@host``: whom to address there, as sipsak's ``-s``; else None) and
    ``path`` (a WebSocket URL's resource, ``wss://host:8089/ws``; None: not written)."""

    host: str
    port: int | None = None
    transport: str | None = None
    scheme: str | None = None
    uri: str | None = None
    path: str | None = None

    @property
    def user(self) -> str | None:
        """The user part of :attr:`uri` (None without one)."""
        if self.uri is None:
            return None
        from skinnysip.sip.uri import SipURI

        return SipURI.parse(self.uri).user


def parse_target(text: str, what: str = "HOST") -> Target:
    """Parse ``HOST``, ``HOST:PORT``, ``[v6]:PORT``, a bare IPv6 address,
    ``sip:[user@]host[:port][;transport=tcp]``, ``sips:host`` (RFC 3261 §19.1; a URI with a
    user part is kept as :attr:`Target.uri`) or a WebSocket URL ``ws://host[:port][/path]``,
    ``wss://…`` (RFC 6455 §3; SIP over WebSocket, RFC 7118). ``sips:`` means TLS (§26.2.2),
    and WSS with ``transport=ws`` (RFC 7118 §5.2). Raises ``click.BadParameter`` naming
    ``what`` (the argument or flag)."""
    from skinnysip.addresses import check_host, is_ipv6
    from skinnysip.sip.syntax import SIPParseError
    from skinnysip.sip.uri import SipURI, parse_hostport

    value = text.strip()
    try:
        if _WS_URL_RE.match(value):
            return _websocket_target(value)
        if _SCHEME_RE.match(value):
            uri = SipURI.parse(value)
            scheme = uri.scheme.lower()
            transport = uri.params.get("transport")
            if transport is not None:
                transport = transport.lower()
                if transport not in TRANSPORTS:
                    raise ValueError(f"transport={transport} is not udp, tcp, tls or ws")
                if scheme == "sips" and transport in ("ws", "wss"):
                    transport = "wss"  # RFC 7118 §5.2: transport=ws is both; sips: makes it secure
                elif scheme == "sips" and transport != "tls":
                    # RFC 3261 §26.2.2: sips: is TLS; ;transport=tcp there means TLS over TCP
                    transport = "tls"
            elif scheme == "sips":
                transport = "tls"
            return Target(check_host(uri.host), uri.port, transport, scheme, value if uri.user else None)
        if is_ipv6(value):
            return Target(check_host(value))
        host, port = parse_hostport(value)
        return Target(check_host(host), port)
    except (ValueError, SIPParseError) as exc:
        reason = exc.reason if isinstance(exc, SIPParseError) else str(exc)
        raise click.BadParameter(
            f"{text!r} is not HOST, HOST:PORT, [IPv6]:PORT, a sip:/sips: URI or a ws:/wss: URL ({reason})",
            param_hint=what) from None


def _websocket_target(value: str) -> Target:
    """``ws://host[:port][/path][?query]`` or ``wss://…`` → a Target (RFC 6455 §3: no
    fragment, no user information). Raises ``ValueError``."""
    from urllib.parse import urlsplit

    from skinnysip.addresses import check_host

    parts = urlsplit(value)
    if parts.fragment or "#" in value:
        raise ValueError("a WebSocket URL has no fragment (RFC 6455 §3)")
    if "@" in parts.netloc:
        raise ValueError("a WebSocket URL has no user information")
    if not parts.hostname:
        raise ValueError("no host")
    port = parts.port  # ValueError for a port out of range
    if port == 0:
        raise ValueError("port 0")
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    if any(c in path for c in " \t\r\n"):
        raise ValueError("spaces in the path")
    return Target(check_host(parts.hostname), port, parts.scheme.lower(), None, None, path)


def merge_target(target: Target, port: int | None, transport: str | None, what: str = "HOST") -> Target:
    """Combine a parsed target with ``--port``/``--transport``: a value given both ways
    must agree (else ``click.BadParameter`` saying so)."""
    if port is not None and target.port is not None and port != target.port:
        raise click.BadParameter(f"{what} says port {target.port} but --port says {port}", param_hint="--port")
    if transport is not None and target.transport is not None and transport != target.transport:
        source = "sips: means tls" if target.scheme == "sips" and transport != "tls" else \
            f"{what} says {target.transport}"
        raise click.BadParameter(f"{source} but --transport says {transport}", param_hint="--transport")
    return Target(target.host, port if port is not None else target.port,
                  transport if transport is not None else target.transport, target.scheme, target.uri, target.path)


def transport_value(value: str | None, flag: str = "--transport") -> str | None:
    """``udp``/``tcp``/``tls``/``ws``/``wss`` in any case (``UDP``, ``Udp``); None stays None."""
    if value is None:
        return None
    lowered = value.strip().lower()
    if lowered not in TRANSPORTS:
        raise click.BadParameter(f"{value!r} is not udp, tcp, tls, ws or wss", param_hint=flag)
    return lowered


def readable_file(path: str | None, flag: str) -> str | None:
    """``path`` if it names a readable file, else exit 2 with one line naming ``flag``."""
    if path is not None and not (os.path.isfile(path) and os.access(path, os.R_OK)):
        fail(f"{flag}: cannot read {path!r}")
    return path


def pem_text(path: str | None, flag: str) -> str | None:
    """The text of the PEM file at ``path`` (at most 64 KiB; None stays None), else exit 2
    with one line naming ``flag``. Text, not a path: a distributed load's workers or an
    operation get what was read here."""
    if path is None:
        return None
    try:
        with open(path, encoding="ascii", errors="replace") as file:
            return file.read(1 << 16)
    except OSError as exc:
        fail(f"{flag}: cannot read {path}: {exc.strerror or exc}")


def writable_directory(path: str | None, flag: str) -> str | None:
    """``path`` made (with its parents) if missing, when it is a directory we can write
    files in; else exit 2 with one line naming ``flag`` — before anything is sent, not when
    the first call opens its recording."""
    if path is None:
        return None
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as exc:
        fail(f"{flag}: cannot make the directory {path!r}: {exc.strerror or exc}")
    if not os.access(path, os.W_OK | os.X_OK):
        fail(f"{flag}: the directory {path!r} cannot be written")
    return path


# --------------------------------------------------------------------------- rendering


def field_table(rows: list[tuple[str, object]]) -> None:
    """Print ``(label, value)`` rows as a two-column table; rows whose value is None are skipped.
    Values are printed as they are (often a server's text): no rich markup is read in them."""
    from rich.table import Table
    from rich.text import Text

    table = Table(box=None, show_header=False, pad_edge=False)
    table.add_column(style="bold")
    table.add_column()
    for label, value in rows:
        if value is not None:
            table.add_row(label, Text(printable(str(value))))
    console.print(table)


def ladder(exchange: list[WireMessage], detail: Callable[[WireMessage], str] | None = None,
           dropped: int = 0) -> None:
    """Print the exchange as a ladder: time since the first message (ms), direction arrow
    (→ sent, ← received) and the one-line summary, plus ``detail(message)`` dimmed;
    ``dropped``: messages counted but not kept (bounded exchange), said on a last line."""
    from rich.markup import escape
    from rich.table import Table

    if not exchange:
        return
    start = exchange[0].time
    table = Table(box=None, show_header=False, pad_edge=False)
    table.add_column(justify="right", style="dim")
    table.add_column()
    table.add_column()
    for m in exchange:
        arrow = "[cyan]→[/cyan]" if m.direction == "sent" else "[magenta]←[/magenta]"
        extra = detail(m) if detail else ""
        table.add_row(f"{(m.time - start) * 1000:8.1f} ms", arrow,
                      escape(printable(m.summary)) + (f" [dim]{escape(printable(extra))}[/dim]" if extra else ""))
    console.print(table)
    if dropped:
        console.print(f"… {dropped} more messages not kept (exchange limit)", markup=False, style="dim")


def write_pcap(path: str | None, exchange: list[WireMessage], media: Sequence[Any] = ()) -> None:
    """Write ``exchange`` (and calls' RTP/RTCP ``media``: :class:`~skinnysip.net.media.MediaPacket`)
    to ``path`` as pcapng (:mod:`skinnysip.pcap`; Wireshark/tshark read it). Nothing when
    ``path`` is None; exit 2 with one line if it cannot be written."""
    if path is None:
        return
    from skinnysip.pcap import exchange_to_pcapng

    try:
        data = exchange_to_pcapng(exchange, media)
        with open(path, "wb") as fh:
            fh.write(data)
    except (OSError, ValueError) as exc:
        fail(f"--pcap: cannot write {path!r}: {exc}")


def port_range(value: str | None, flag: str) -> tuple[int, int] | None:
    """``FIRST-LAST`` (or one port) as (first, last) within 1-65535, FIRST <= LAST; None for
    None. ``click.BadParameter`` naming ``flag`` otherwise."""
    if value is None:
        return None
    first, _, last = value.strip().partition("-")
    try:
        lo, hi = int(first), int(last or first)
    except ValueError:
        raise click.BadParameter(f"{value!r} is not FIRST-LAST", param_hint=flag) from None
    if not 1 <= lo <= hi <= 65535:
        raise click.BadParameter(f"{value!r}: ports 1-65535, FIRST <= LAST", param_hint=flag)
    return lo, hi


def checked_ip(value: str | None, flag: str = "--local-ip") -> str | None:
    """An IPv4 or IPv6 literal (brackets allowed) of this host to send from, normalised; None
    for None. ``click.BadParameter`` naming ``flag`` otherwise (whether the host has it shows
    when a socket is bound: a clear error then, nothing sent)."""
    if value is None:
        return None
    from skinnysip.addresses import ip_literal

    try:
        return ip_literal(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint=flag) from None


def check_source(ip: str | None, port: int, *, stream: bool, flags: str = "--local-ip/--local-port",
                 target: str | None = None) -> None:
    """Exit 2 (a local error) unless a socket can be bound on ``ip`` (None: the wildcard) and
    ``port`` (0: any) — an address this host does not have, a port in use, an IP ``target`` of
    the other family — before anything is sent. Nothing to check when both are unset."""
    if ip is None and not port:
        return
    import socket

    from skinnysip.addresses import family_mismatch, hostport, source_problem

    mismatch = family_mismatch(ip, target) if ip is not None and target is not None else None
    if mismatch is not None:
        fail(f"{flags}: {mismatch}", EXIT_USAGE)

    family = socket.AF_INET6 if ip is not None and ":" in ip else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM if stream else socket.SOCK_DGRAM) as sock:
        try:
            sock.bind((ip or ("::" if family == socket.AF_INET6 else "0.0.0.0"), port))
        except OSError as exc:
            fail(f"{flags}: cannot send from {hostport(ip or '*', port)}: {source_problem(exc) or exc.strerror or exc}",
                 EXIT_USAGE)


def header_fields(texts: Sequence[str], flag: str = "--header", *, check: bool = True) -> list[tuple[str, str]]:
    """``--header 'Name: value'`` options as (name, value) pairs, each checked (unless
    ``check`` is false: the caller checks them later) as a field to add to a request we build
    (:func:`~skinnysip.sip.request.check_header_field`: a token name, not one skinnysip writes,
    one line). ``click.BadParameter`` naming ``flag`` otherwise."""
    from skinnysip.sip.request import check_header_field

    fields = []
    for text in texts:
        name, colon, value = text.partition(":")
        if not colon:
            raise click.BadParameter(f"{text[:60]!r} is not 'Name: value'", param_hint=flag)
        name, value = name.strip(" \t"), value.strip(" \t")
        try:
            if check:
                check_header_field(name, value)
        except ValueError as exc:
            raise click.BadParameter(str(exc).removeprefix("headers: "), param_hint=flag) from None
        fields.append((name, value))
    return fields


def comma_list(text: str | None) -> tuple[str, ...] | None:
    """``"PCMA, PCMU"`` → ``("PCMA", "PCMU")`` (empty items dropped); None stays None."""
    return None if text is None else tuple(item.strip() for item in text.split(",") if item.strip())
