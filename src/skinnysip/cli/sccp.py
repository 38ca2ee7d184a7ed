"""``skinnysip sccp …`` commands (filled in by the SCCP work)."""

import typer

app = typer.Typer(no_args_is_help=True)
