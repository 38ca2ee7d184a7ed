"""``skinnysip sip …`` commands (filled in by the SIP work)."""

import typer

app = typer.Typer(no_args_is_help=True)
