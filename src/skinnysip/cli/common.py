"""Helpers shared by the CLI sub-commands: exit status, targets, JSON output, secrets, errors.

Exit status, in the sipsak manner (:data:`EXIT_STATUS_HELP`, also in every command's
``--help`` and the README): 0 the command got what it asked for, 1 the server answered
otherwise, 2 usage or local error, 3 no usable answer.
"""

from __future__ import annotations

import json
import os
import re
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NoReturn, cast

import typer

if TYPE_CHECKING:
    from rich.console import Console

    from skinnysip.result import ResultModel, WireMessage


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
_CONTROL_RE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f]")


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

#: help texts are plain text: rich markup would eat bracketed words such as "[default: 5060]"
MARKUP = None


def fail(message: str, code: int = EXIT_USAGE) -> NoReturn:
    """Print ``error: message`` (one line, stderr, no markup) and exit with ``code``."""
    err_console.print(f"error: {printable(message)}", markup=False, highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def emit(result: ResultModel, as_json: bool, render: Callable[[ResultModel], None], status: int) -> NoReturn:
    """Print ``result`` (the API body with ``--json``, else ``render``) and exit with ``status``
    (one of the ``EXIT_*`` codes, chosen by the command from the result)."""
    body = result.to_api()
    if as_json:
        typer.echo(json.dumps(body, indent=2))
    else:
        render(result)
    raise typer.Exit(status)


def password_from(option: str | None, *, prompt: bool, env: str = "SKINNYSIP_PASSWORD") -> str | None:
    """The password: the option, else ``$SKINNYSIP_PASSWORD``, else a hidden prompt when
    ``prompt`` is true and stdin is a terminal. Never echoed."""
    if option is not None:
        return option
    if env in os.environ:
        return os.environ[env]
    if prompt and sys.stdin.isatty():
        return typer.prompt("Password", hide_input=True, default="", show_default=False)
    return None


# --------------------------------------------------------------------------- targets

_SCHEME_RE = re.compile(r"(?i)sips?:")
TRANSPORTS = ("udp", "tcp", "tls")


@dataclass(frozen=True)
class Target:
    """A server as a person writes it: ``host`` (no IPv6 brackets), ``port`` (None: not
    written), ``transport`` (``udp``/``tcp``/``tls``, None: not written) and ``scheme``
    (``sip``/``sips``, None: not a URI)."""

    host: str
    port: int | None = None
    transport: str | None = None
    scheme: str | None = None


def parse_target(text: str, what: str = "HOST") -> Target:
    """Parse ``HOST``, ``HOST:PORT``, ``[v6]:PORT``, a bare IPv6 address,
    ``sip:host[:port][;transport=tcp]`` or ``sips:host`` (RFC 3261 §19.1; the user part of a
    URI is ignored). ``sips:`` means TLS (§26.2.2). Raises ``typer.BadParameter`` naming
    ``what`` (the argument or flag)."""
    from skinnysip.addresses import check_host, is_ipv6
    from skinnysip.sip.syntax import SIPParseError
    from skinnysip.sip.uri import SipURI, parse_hostport

    value = text.strip()
    try:
        if _SCHEME_RE.match(value):
            uri = SipURI.parse(value)
            scheme = uri.scheme.lower()
            transport = uri.params.get("transport")
            if transport is not None:
                transport = transport.lower()
                if transport not in TRANSPORTS:
                    raise ValueError(f"transport={transport} is not udp, tcp or tls")
                if scheme == "sips" and transport != "tls":
                    # RFC 3261 §26.2.2: sips: is TLS; ;transport=tcp there means TLS over TCP
                    transport = "tls"
            elif scheme == "sips":
                transport = "tls"
            return Target(check_host(uri.host), uri.port, transport, scheme)
        if is_ipv6(value):
            return Target(check_host(value))
        host, port = parse_hostport(value)
        return Target(check_host(host), port)
    except (ValueError, SIPParseError) as exc:
        reason = exc.reason if isinstance(exc, SIPParseError) else str(exc)
        raise typer.BadParameter(
            f"{text!r} is not HOST, HOST:PORT, [IPv6]:PORT or a sip:/sips: URI ({reason})", param_hint=what
        ) from None


def merge_target(target: Target, port: int | None, transport: str | None, what: str = "HOST") -> Target:
    """Combine a parsed target with ``--port``/``--transport``: a value given both ways
    must agree (else ``typer.BadParameter`` saying so)."""
    if port is not None and target.port is not None and port != target.port:
        raise typer.BadParameter(f"{what} says port {target.port} but --port says {port}", param_hint="--port")
    if transport is not None and target.transport is not None and transport != target.transport:
        source = "sips: means tls" if target.scheme == "sips" and transport != "tls" else \
            f"{what} says {target.transport}"
        raise typer.BadParameter(f"{source} but --transport says {transport}", param_hint="--transport")
    return Target(target.host, port if port is not None else target.port,
                  transport if transport is not None else target.transport, target.scheme)


def transport_value(value: str | None, flag: str = "--transport") -> str | None:
    """``udp``/``tcp``/``tls`` in any case (``UDP``, ``Udp``); None stays None."""
    if value is None:
        return None
    lowered = value.strip().lower()
    if lowered not in TRANSPORTS:
        raise typer.BadParameter(f"{value!r} is not udp, tcp or tls", param_hint=flag)
    return lowered


def readable_file(path: str | None, flag: str) -> str | None:
    """``path`` if it names a readable file, else exit 2 with one line naming ``flag``."""
    if path is not None and not (os.path.isfile(path) and os.access(path, os.R_OK)):
        fail(f"{flag}: cannot read {path!r}")
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


def plain_metavars(command: Any) -> None:
    """Name each value in ``command``'s help (and its sub-commands', as built) the way argparse
    does — ``--rate RATE``, ``HOST`` — where no metavar was chosen: typer 0.29 writes Python
    types instead (``<str>``, ``<int range>``, ``<list[str]>``). Ranges and defaults stay in the
    help text. Only commands already built are visited."""
    for param in getattr(command, "params", ()):
        if param.metavar is None and not getattr(param, "is_flag", False) and not getattr(param, "count", False) \
                and param.name:
            param.metavar = param.name.upper()
    commands = getattr(command, "commands", None)
    if isinstance(commands, dict):
        for sub in commands.values():
            plain_metavars(sub)


def comma_list(text: str | None) -> tuple[str, ...] | None:
    """``"PCMA, PCMU"`` → ``("PCMA", "PCMU")`` (empty items dropped); None stays None."""
    return None if text is None else tuple(item.strip() for item in text.split(",") if item.strip())
