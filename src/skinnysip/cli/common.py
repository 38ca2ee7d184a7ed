"""Helpers shared by the CLI sub-commands: JSON output, exit status, secrets."""

from __future__ import annotations

import json
import os
from collections.abc import Callable

import typer
from rich.console import Console
from rich.table import Table

from skinnysip.result import ResultModel, WireMessage

console = Console(highlight=False)


def emit(result: ResultModel, as_json: bool, render: Callable[[ResultModel], None]) -> None:
    """Print ``result`` (the API body with ``--json``, else ``render``) and exit 0 on
    ``success``, 1 otherwise."""
    body = result.to_api()
    if as_json:
        typer.echo(json.dumps(body, indent=2))
    else:
        render(result)
    raise typer.Exit(0 if body.get("success") else 1)


def password_from(option: str | None, *, prompt: bool, env: str = "SKINNYSIP_PASSWORD") -> str | None:
    """The password: the option, else ``$SKINNYSIP_PASSWORD``, else a hidden prompt when
    ``prompt`` is true and stdin is a terminal. Never echoed."""
    if option is not None:
        return option
    if env in os.environ:
        return os.environ[env]
    if prompt:
        import sys

        if sys.stdin.isatty():
            return typer.prompt("Password", hide_input=True, default="", show_default=False)
    return None


def field_table(rows: list[tuple[str, object]]) -> None:
    """Print ``(label, value)`` rows as a two-column table; rows whose value is None are skipped."""
    table = Table(box=None, show_header=False, pad_edge=False)
    table.add_column(style="bold")
    table.add_column()
    for label, value in rows:
        if value is not None:
            table.add_row(label, str(value))
    console.print(table)


def ladder(exchange: list[WireMessage], detail: Callable[[WireMessage], str] | None = None) -> None:
    """Print the exchange as a ladder: time since the first message (ms), direction arrow
    (→ sent, ← received) and the one-line summary, plus ``detail(message)`` dimmed."""
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
        table.add_row(f"{(m.time - start) * 1000:8.1f} ms", arrow, m.summary + (f" [dim]{extra}[/dim]" if extra else ""))
    console.print(table)
