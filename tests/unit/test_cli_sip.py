"""``skinnysip sip …`` through click's CliRunner: arguments, exit codes, --json equals the API
body shape, passwords never echoed. (Authenticated runs against Kamailio are in
tests/peers/test_sip_kamailio.py and test_api_sip_http.py.)"""

from __future__ import annotations

import json
import socket

import pytest
from click.testing import CliRunner
from fastapi.testclient import TestClient

from peertools import free_port
from skinnysip.api.app import create_app
from skinnysip.cli import app as cli_app

runner = CliRunner()


def test_help_lists_the_four_commands() -> None:
    result = runner.invoke(cli_app, ["sip", "--help"])
    assert result.exit_code == 0
    for command in ("options", "register", "invite", "auth"):
        assert command in result.output


@pytest.mark.parametrize(
    "args",
    [
        ["sip", "options", "bad host!"],
        ["sip", "options", "127.0.0.1", "--port", "0"],
        ["sip", "options", "127.0.0.1", "--transport", "sctp"],
        ["sip", "options", "127.0.0.1", "--timeout", "5"],
        ["sip", "invite", "127.0.0.1", "--to", "not a user"],
        ["sip", "register", "127.0.0.1", "--uri", "http://x"],
        ["sip", "register", "127.0.0.1", "--user", "al ice"],
        ["sip", "auth", "127.0.0.1", "--password", "x"],  # --user is required
    ],
)
def test_bad_arguments_exit_2(args: list[str]) -> None:
    result = runner.invoke(cli_app, args)
    assert result.exit_code == 2, result.output


def test_unreachable_exits_3_and_json_matches_api_shape() -> None:
    port = free_port(socket.SOCK_DGRAM)
    cli = runner.invoke(cli_app, ["sip", "options", "127.0.0.1", "--port", str(port), "--timeout", "1000", "--json"])
    assert cli.exit_code == 3
    body = json.loads(cli.stdout)
    api = TestClient(create_app()).post("/api/sip/options", json={"host": "127.0.0.1", "port": port, "timeout": 1000})
    assert api.status_code == 200
    assert list(body) == list(api.json())
    assert body["success"] is False and body["error"] == api.json()["error"]
    assert "ICMP port unreachable" in body["error"]


def test_readable_failure_output() -> None:
    port = free_port()
    cli = runner.invoke(cli_app, ["sip", "register", "127.0.0.1", "-p", str(port), "-t", "tcp"])
    assert cli.exit_code == 3
    assert "failed:" in cli.output and f"connection refused by 127.0.0.1:{port}/tcp" in cli.output


def test_password_from_environment_never_printed(monkeypatch: pytest.MonkeyPatch) -> None:
    secret = "s3cret-Value-42"
    monkeypatch.setenv("SKINNYSIP_PASSWORD", secret)
    port = free_port()
    for extra in ([], ["--json"]):
        cli = runner.invoke(cli_app, ["sip", "auth", "127.0.0.1", "-p", str(port), "-t", "tcp", "--user", "alice", *extra])
        assert cli.exit_code == 3
        assert secret not in cli.output
    cli = runner.invoke(cli_app, ["sip", "auth", "127.0.0.1", "-p", str(port), "-t", "tcp", "-u", "alice",
                                  "--password", secret, "--json"])
    assert secret not in cli.output


def test_auth_without_any_password_source(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SKINNYSIP_PASSWORD", raising=False)
    cli = runner.invoke(cli_app, ["sip", "auth", "127.0.0.1", "--user", "alice"])  # stdin is not a terminal
    assert cli.exit_code == 2
    assert "no password" in cli.output


def test_sips_implies_tls() -> None:
    port = free_port()
    cli = runner.invoke(cli_app, ["sip", "options", "127.0.0.1", "-p", str(port), "--sips", "--json"])
    assert cli.exit_code == 3
    body = json.loads(cli.stdout)
    assert body["transport"] == "tls" and body["error"] == f"connection refused by 127.0.0.1:{port}/tls"


def test_a_user_written_in_host_is_whom_the_probe_addresses() -> None:
    """``sip:bob@HOST``: OPTIONS/INVITE address bob (Request-URI and To, as sipsak's ``-s``),
    REGISTER registers bob; ``--to``/``--uri``/``--user`` still win."""
    from skinnysip.cli.sip import _request

    def request(host: str, **kw: object) -> object:
        args: dict[str, object] = dict(port=None, transport=None, sips=False, user=None, password=None, domain=None,
                                       from_=None, to=None, uri=None, timeout=1000, t1=None, ca_file=None,
                                       insecure=False)
        args.update(kw)
        return _request(host, **args)  # type: ignore[arg-type]

    options = request("sip:bob@127.0.0.1:5070;transport=tcp")
    assert options.to_uri == "sip:bob@127.0.0.1:5070;transport=tcp" and options.uri is None  # type: ignore[attr-defined]
    assert (options.host, options.port, options.transport) == ("127.0.0.1", 5070, "tcp")  # type: ignore[attr-defined]
    assert request("sip:bob@127.0.0.1", to="carol").to_uri == "carol"  # type: ignore[attr-defined]
    assert request("sip:bob@127.0.0.1", uri="sip:x@127.0.0.1").to_uri is None  # type: ignore[attr-defined]
    register = request("sip:alice@127.0.0.1", host_user="user")
    assert register.username == "alice" and register.to_uri is None  # type: ignore[attr-defined]
    assert request("sip:alice@127.0.0.1", host_user="user", user="bob").username == "bob"  # type: ignore[attr-defined]
    assert request("sip:127.0.0.1").to_uri is None  # type: ignore[attr-defined]
