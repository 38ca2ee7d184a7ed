"""Helpers shared by the CLI sub-commands: JSON output, exit status, secrets."""

from __future__ import annotations

import json
import os
from collections.abc import Callable

import typer
from rich.console import Console

from skinnysip.result import ResultModel

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
