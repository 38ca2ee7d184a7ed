"""Command line: ``skinnysip serve``, ``skinnysip sip …``, ``skinnysip sccp …``."""

from __future__ import annotations

import typer

from skinnysip import __version__
from skinnysip.cli import phone as phone_cli
from skinnysip.cli import sccp as sccp_cli
from skinnysip.cli import sip as sip_cli

app = typer.Typer(
    name="skinnysip",
    help="Probe, register and call SIP and Cisco SCCP (Skinny) servers; see every byte on the wire.",
    no_args_is_help=True,
    add_completion=False,
)
app.add_typer(sip_cli.app, name="sip", help="SIP/SIPS probes: options, register, invite, auth.")
app.add_typer(sccp_cli.app, name="sccp", help="SCCP station: probe, register, linestate, call.")
app.command("phone", help="A SIP softphone: register, call and answer, hold, transfer, DTMF, messages.")(
    phone_cli.phone_cmd)


@app.command()
def serve(
    host: str = typer.Option("127.0.0.1", help="Address to listen on."),
    port: int = typer.Option(8080, min=1, max=65535, help="TCP port to listen on."),
) -> None:
    """Run the HTTP API (OpenAPI page at /docs) and the web page at /."""
    import uvicorn

    typer.echo(f"skinnysip {__version__}: http://{host}:{port}/  (API docs at /docs)")
    uvicorn.run("skinnysip.api.app:app", host=host, port=port, log_level="info")


@app.command()
def version() -> None:
    """Print the version."""
    typer.echo(__version__)


def main() -> None:
    import sys

    sys.argv[1:] = phone_cli.fix_auto_answer(sys.argv[1:])
    app()
