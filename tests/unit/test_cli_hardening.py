"""Issue 11, the command line as people script it: exit status in the sipsak manner, help
texts, targets as people write them, flags named in errors, no traceback ever, --pcap.

Servers that answer a given way are a thread with a raw socket (``rawsip.py``); processes are
run for real where the point is what a user sees (stdout/stderr, exit status)."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from peertools import free_port
from rawsip import response, udp_server
from skinnysip import __version__
from skinnysip.cli import app as cli_app

runner = CliRunner()


def skinnysip(*args: str, timeout: float = 60, isolated: bool = False) -> subprocess.CompletedProcess[str]:
    """The CLI in a subprocess; ``isolated``: inside ``unshare --net`` (a network namespace
    with only a loopback, down), for commands that look a name up: no query leaves the machine."""
    prefix = ["unshare", "--net"] if isolated else []
    return subprocess.run([*prefix, sys.executable, "-m", "skinnysip", *args], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, "COLUMNS": "200", "TERM": "dumb"})


def _answer(status: str):  # type: ignore[no-untyped-def]
    return lambda data, f: [] if f["method"] == "ACK" else [response(f, status)]


def test_server_text_is_printed_as_sent_not_as_emoji_markup_or_terminal_controls() -> None:
    """A reason phrase and header values are the server's text: rich's ``:name:`` emoji codes
    and ``[style]`` markup in them are printed literally (and a stray ``[/]`` raises nothing);
    terminal control sequences (ESC …, BEL) are shown as ``\\xNN``, never sent to the terminal."""
    odd = "OK :thumbs_up: [bold]loud[/bold] [/]"

    def answer(data: bytes, f: dict[str, str]) -> list[bytes]:
        return [response(f, f"200 {odd}\x1b[2J", extra="Server: pbx :smile: [red]1[/red]\x1b]0;owned\x07\r\n")]

    with udp_server(answer) as (port, _):
        cli = skinnysip("sip", "options", f"127.0.0.1:{port}", "--timeout", "3000")
    assert cli.returncode == 0, cli.stdout + cli.stderr
    assert odd + "\\x1b[2J" in cli.stdout, cli.stdout
    assert "pbx :smile: [red]1[/red]\\x1b]0;owned\\x07" in cli.stdout, cli.stdout
    assert "\x1b" not in cli.stdout and "\x07" not in cli.stdout
    assert "Traceback" not in cli.stderr
    failed = skinnysip("load", "call", "127.0.0.1", "--source", "tone:abc", "--to", "bob", "-m", "1")
    assert failed.returncode == 2 and failed.stderr.strip() == (
        "error: source: 'tone:abc': tone:<Hz> needs a frequency in Hz, e.g. tone:440"), failed.stderr


# ------------------------------------------------------------------ exit status


@pytest.mark.parametrize(("command", "status", "code"), [
    ("options", "200 OK", 0),
    ("options", "404 Not Found", 1),
    ("register", "200 OK", 0),
    ("register", "404 Not Found", 1),
    ("register", "401 Unauthorized", 1),
])
def test_exit_status_follows_the_final_response(command: str, status: str, code: int) -> None:
    with udp_server(_answer(status)) as (port, _):
        cli = runner.invoke(cli_app, ["sip", command, f"127.0.0.1:{port}", "--timeout", "3000"])
    assert cli.exit_code == code, cli.output
    headline = cli.output.splitlines()[0]
    if code == 0:
        assert headline == "ok"
    else:  # a 404 to REGISTER is not "ok" any more
        assert "ok" not in headline.split() and status in headline


def test_no_answer_is_3_and_bad_arguments_2() -> None:
    with udp_server(lambda data, f: []) as (port, received):
        cli = runner.invoke(cli_app, ["sip", "options", f"127.0.0.1:{port}", "--timeout", "300", "--t1", "50"])
    assert cli.exit_code == 3 and received
    assert "failed:" in cli.output and "no response" in cli.output
    assert runner.invoke(cli_app, ["sip", "options", "127.0.0.1", "--timeout", "1"]).exit_code == 2


def test_auth_refused_login_is_1_and_accepted_0() -> None:
    challenge = 'WWW-Authenticate: Digest realm="lab", nonce="abc123", algorithm=MD5, qop="auth"\r\n'

    def reply(data: bytes, f: dict[str, str]) -> list[bytes]:
        if not f["Authorization"]:
            return [response(f, "401 Unauthorized", extra=challenge)]
        return [response(f, "403 Forbidden")]

    with udp_server(reply) as (port, _):
        cli = runner.invoke(cli_app, ["sip", "auth", f"127.0.0.1:{port}", "-u", "alice", "--password", "pw",
                                      "--timeout", "3000"])
    assert cli.exit_code == 1, cli.output
    assert cli.output.startswith("not authenticated: 403")

    def accept(data: bytes, f: dict[str, str]) -> list[bytes]:
        return [response(f, "200 OK")] if f["Authorization"] else [response(f, "401 Unauthorized", extra=challenge)]

    with udp_server(accept) as (port, _):
        cli = runner.invoke(cli_app, ["sip", "auth", f"127.0.0.1:{port}", "-u", "alice", "--password", "pw",
                                      "--timeout", "3000"])
    assert cli.exit_code == 0, cli.output


def test_invite_busy_is_1() -> None:
    with udp_server(_answer("486 Busy Here")) as (port, received):
        cli = runner.invoke(cli_app, ["sip", "invite", f"127.0.0.1:{port}", "--timeout", "3000", "--json"])
    assert cli.exit_code == 1
    assert json.loads(cli.stdout)["statusCode"] == 486
    assert any(r.startswith(b"ACK ") for r in received)


# ------------------------------------------------------------------ --version and help


def test_version() -> None:
    for flag in ("--version", "-V"):
        cli = runner.invoke(cli_app, [flag])
        assert cli.exit_code == 0 and cli.output.strip() == f"skinnysip {__version__}"


@pytest.mark.parametrize("command", [["sip", "options"], ["sip", "auth"], ["sip", "listen"], ["sccp", "call"],
                                     ["sccp", "lab-cm"], ["phone"]])
def test_help_reads_right(command: list[str]) -> None:
    r = skinnysip(*command, "--help")
    assert r.returncode == 0
    text = " ".join(r.stdout.split())  # line wrapping aside
    assert "<bool>" not in text
    assert " ." not in text.replace(" ...", "")  # nothing eaten before a full stop
    assert "Exit status:" in text
    if command == ["sip", "options"]:
        assert "Server port [default: from HOST" in text and "RFC 3261 T1 in ms [default: 500]." in text
        assert "SIP domain for the URIs [default: HOST]." in text


def _commands(command: click.Command, path: list[str]) -> Iterator[tuple[list[str], click.Command]]:
    """Every command of the tree under ``command`` (groups too) with its path of names; a
    group's sub-commands as it lists and loads them (the root's are imported on demand)."""
    yield path, command
    if isinstance(command, click.Group):
        ctx = click.Context(command)
        for name in command.list_commands(ctx):
            sub = command.get_command(ctx, name)
            assert sub is not None, [*path, name]
            yield from _commands(sub, [*path, name])


def _command_paths() -> list[list[str]]:
    return [path for path, _ in _commands(cli_app, [])]


def test_every_help_names_values_not_python_types() -> None:
    # where no metavar is chosen, typer 0.29 writes "<str>", "<int range>", "<list[str]>" and
    # click "TEXT", "INTEGER RANGE", "PATH"; an option's value is named as argparse names it
    # (--rate RATE) instead
    paths = _command_paths()
    assert ["load", "register"] in paths and ["serve"] in paths and ["sccp", "probe"] in paths
    for path, command in _commands(cli_app, []):
        for param in command.params:
            if isinstance(param, click.Option) and not param.is_flag and not param.count:
                assert param.metavar, (path, param.opts)
        out = runner.invoke(cli_app, [*path, "--help"], terminal_width=200).output
        options = out.split("Options:", 1)[-1]
        assert not re.search(r"<(str|int|float|path|list|bool)", options), (path, options)
        assert not re.search(r"\b(INTEGER|FLOAT|PATH|BOOLEAN)\b|RANGE\b", options), (path, options)


def test_password_help_says_what_happens() -> None:
    auth = " ".join(skinnysip("sip", "auth", "--help").stdout.split())
    invite = " ".join(skinnysip("sip", "invite", "--help").stdout.split())
    phone = " ".join(skinnysip("phone", "--help").stdout.split())
    assert "hidden prompt on a terminal" in auth
    assert "only if the server challenges the INVITE" in invite and "never prompted" in invite
    assert "REGISTER, INVITE" in phone
    assert "--password" not in " ".join(skinnysip("sip", "options", "--help").stdout.split())


@pytest.mark.parametrize(("args", "says"), [
    (["--processes", "2", "--engine", "threads"], "--engine: 'threads' is not processes or ray"),
    (["--ray-address", "auto", "--engine", "processes"], "--ray-address joins a Ray cluster: it needs --engine ray"),
])
def test_load_engine_choices_say_so(args: list[str], says: str) -> None:
    cli = skinnysip("load", "options", "127.0.0.1", "-m", "1", *args)
    assert cli.returncode == 2 and cli.stderr.strip() == f"error: {says}" + (
        " (the default with it)" if "Ray cluster" in says else ""), cli.stderr


def test_load_files_that_cannot_be_read_are_named_before_anything_is_sent(tmp_path: Path) -> None:
    """``--users`` that is missing or a directory: one line naming the file and why, as the
    other files the command reads (``--rate-file``); a missing ``--ca-file`` as the probes
    and the phone say it (exit 2, not a TLS failure after the run started)."""
    missing = tmp_path / "nobody.csv"
    for path, why in ((missing, "No such file or directory"), (tmp_path, "Is a directory")):
        cli = skinnysip("load", "register", "127.0.0.1", "--users", str(path), "-m", "1")
        assert cli.returncode == 2 and cli.stderr.strip() == f"error: --users: cannot read {str(path)!r}: {why}", (
            cli.stderr)
    cli = skinnysip("load", "register", "127.0.0.1", "-t", "tls", "--ca-file", str(missing), "-u", "a", "-m", "1")
    assert cli.returncode == 2 and cli.stderr.strip() == f"error: --ca-file: cannot read {str(missing)!r}", cli.stderr


# ------------------------------------------------------------------ targets


@pytest.mark.parametrize(("target", "extra", "transport", "server"), [
    ("127.0.0.1:{p}", [], "udp", "127.0.0.1:{p}"),
    ("sip:127.0.0.1:{p};transport=tcp", [], "tcp", "127.0.0.1:{p}"),
    ("sip:alice@127.0.0.1:{p};transport=TCP", ["--transport", "tcp"], "tcp", "127.0.0.1:{p}"),
    ("sips:127.0.0.1:{p}", [], "tls", "127.0.0.1:{p}"),
    ("[::1]:{p}", [], "udp", "[::1]:{p}"),
    ("::1", ["--port", "{p}", "--transport", "TCP"], "tcp", "[::1]:{p}"),
    ("127.0.0.1", ["-p", "{p}", "-t", "Udp"], "udp", "127.0.0.1:{p}"),
])
def test_targets_as_people_write_them(target: str, extra: list[str], transport: str, server: str) -> None:
    port = free_port()
    args = ["sip", "options", target.format(p=port), *(a.format(p=port) for a in extra), "--timeout", "500", "--json"]
    cli = runner.invoke(cli_app, args)
    body = json.loads(cli.stdout)
    assert body["transport"] == transport and body["server"] == server.format(p=port)
    assert cli.exit_code == 3  # nobody listens there: refused


@pytest.mark.parametrize(("args", "says"), [
    (["127.0.0.1:5080", "--port", "5090"], "HOST says port 5080 but --port says 5090"),
    (["sip:127.0.0.1;transport=tcp", "--transport", "udp"], "HOST says tcp but --transport says udp"),
    (["sips:127.0.0.1", "-t", "udp"], "sips: means tls but --transport says udp"),
    (["127.0.0.1", "--transport", "sctp"], "'sctp' is not udp, tcp, tls, ws or wss"),
    (["http://127.0.0.1"], "is not HOST, HOST:PORT"),
    (["127.0.0.1", "-t", "tcp", "--sips"], "--sips needs tls"),
])
def test_conflicts_and_bad_targets_say_so(args: list[str], says: str) -> None:
    cli = runner.invoke(cli_app, ["sip", "options", *args])
    assert cli.exit_code == 2
    assert says in " ".join(cli.output.replace("│", " ").split())


def test_load_takes_targets_as_sipp_and_the_other_commands_do() -> None:
    """``skinnysip load`` reads HOST as ``sipp remote_host[:remote_port]`` and every other
    skinnysip command do: HOST:PORT, [IPv6]:PORT, sip:/sips: URIs; conflicts with --port or
    --transport are usage errors (exit 2), as for ``sip options``."""
    with udp_server(_answer("200 OK")) as (port, requests):
        cli = skinnysip("load", "options", f"127.0.0.1:{port}", "-m", "3", "-r", "50", "--json")
        uri_cli = skinnysip("load", "options", f"sip:127.0.0.1:{port};transport=udp", "-m", "2", "--json")
    assert cli.returncode == 0, cli.stderr
    assert (json.loads(cli.stdout)["successful"], json.loads(uri_cli.stdout)["successful"]) == (3, 2)
    assert len(requests) >= 5 and all(r.startswith(b"OPTIONS sip:127.0.0.1:%d SIP/2.0" % port) for r in requests)
    for args, says in [
        (["127.0.0.1:5080", "--port", "5090"], "HOST says port 5080 but --port says 5090"),
        (["sips:127.0.0.1", "-t", "udp"], "sips: means tls but --transport says udp"),
        (["127.0.0.1", "-t", "sctp"], "'sctp' is not udp, tcp, tls, ws or wss"),
        (["http://127.0.0.1"], "is not HOST, HOST:PORT"),
    ]:
        bad = skinnysip("load", "options", *args, "-m", "1")
        assert bad.returncode == 2 and says in " ".join(bad.stderr.split()), bad.stderr
        assert "Traceback" not in bad.stderr


def test_phone_server_targets() -> None:
    r = skinnysip("phone", "sip:alice@127.0.0.1", "--registrar", "sip:127.0.0.1;transport=tcp", "-t", "udp")
    assert r.returncode == 2 and r.stderr.startswith("error: --transport:") and "Traceback" not in r.stderr
    r = skinnysip("phone", "sip:alice@127.0.0.1", "--registrar", "not a host!")
    assert r.returncode == 2 and "--registrar" in r.stderr
    r = skinnysip("phone", "--sccp", "[::1]:x")
    assert r.returncode == 2 and "--sccp" in r.stderr
    r = skinnysip("phone", "sip:alice@127.0.0.1", "--no-register", "--codecs", "PCMA,MP3")
    assert r.returncode == 2 and r.stderr.startswith("error: --codecs: unknown codec 'MP3'"), r.stderr
    r = skinnysip("phone", "sip:alice@127.0.0.1", "--no-register", "--srtp-suites", "AEAD_AES_128_GCM,F8_128_HMAC_SHA1_80")
    assert r.returncode == 2 and r.stderr.startswith("error: --srtp-suites: srtp suite 'F8_128_HMAC_SHA1_80'"), r.stderr
    r = skinnysip("phone", "sip:alice@127.0.0.1", "--no-register", "--srtp-suites", ",")
    assert r.returncode == 2 and r.stderr.startswith("error: --srtp-suites: at least one"), r.stderr


@pytest.mark.parametrize(("text", "account"), [("[::1]", "[::1]"), ("[::1]:5070", "[::1]:5070"),
                                                ("sip:[::1];transport=tcp", "[::1]"), ("127.0.0.1", "127.0.0.1")])
def test_phone_servers_reach_the_account_as_host_port(text: str, account: str) -> None:
    """An IPv6 registrar or proxy without a port keeps its brackets (was "bad host ''")."""
    from skinnysip.cli.phone import _hostport, _server
    from skinnysip.phone.sip_phone import SIPAccount

    assert _hostport(_server(text, "--registrar")) == account
    SIPAccount(aor="sip:alice@example.com", registrar=account, outbound_proxy=account).uri()


@pytest.mark.parametrize(("record", "says"), [("/dev/null", "cannot make the directory '/dev/null': File exists"),
                                               ("/proc/skinnysip/rec", "cannot make the directory")])
def test_phone_record_directory_is_checked_before_anything_is_sent(record: str, says: str) -> None:
    """Refused at once (exit 2), not when the first call's media opens."""
    for sccp in (False, True):
        args = ["--sccp", "127.0.0.1:9"] if sccp else ["sip:alice@127.0.0.1", "--registrar", "127.0.0.1:9"]
        r = skinnysip("phone", *args, "--record", record, timeout=20)
        assert r.returncode == 2 and r.stderr.startswith(f"error: --record: {says}"), r.stderr
        assert "Traceback" not in r.stderr and r.stdout == ""
    for scenario in ("call", "answer"):  # the load's calls too
        r = skinnysip("load", scenario, "127.0.0.1:9", *(["--to", "bob"] if scenario == "call" else []),
                      "--record", record, timeout=20)
        assert r.returncode == 2 and r.stderr.startswith(f"error: --record: {says}"), r.stderr


# ------------------------------------------------------------------ no traceback, ever


@pytest.fixture
def busy_tcp_port() -> Iterator[int]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield s.getsockname()[1]


def test_serve_on_a_busy_port_says_one_line_before_any_banner(busy_tcp_port: int) -> None:
    r = skinnysip("serve", "--port", str(busy_tcp_port), timeout=30)
    assert r.returncode == 2
    assert r.stdout == ""  # no banner, no "startup complete"
    assert r.stderr.strip().splitlines() == [f"error: cannot listen on 127.0.0.1:{busy_tcp_port}: "
                                             "Address already in use"]


@pytest.mark.parametrize("command", [
    ["sccp", "lab-cm", "--port", "{busy}"],
    ["sccp", "lab-cm", "--host", "no-such-host.invalid", "--port", "0"],
    ["sccp", "lab-cm", "--tls-cert", "/nonexistent/cert.pem", "--port", "0"],
    ["sip", "listen", "--transport", "tcp", "--port", "{busy}"],
    ["sip", "listen", "--host", "no-such-host.invalid", "--port", "0"],
    ["sip", "listen", "--transport", "tls", "--tls-cert", "/nonexistent/cert.pem", "--port", "0"],
    ["sip", "options", "127.0.0.1", "-t", "tls", "--ca-file", "/nonexistent/ca.pem"],
    ["serve", "--host", "no-such-host.invalid"],
    ["sip", "options", "no-such-host.invalid", "--timeout", "2000"],
    ["sccp", "probe", "no-such-host.invalid", "--timeout", "2000"],
])
def test_no_traceback_one_line_non_zero(command: list[str], busy_tcp_port: int) -> None:
    lookup = any(c.endswith(".invalid") for c in command)  # a DNS query: only inside a namespace
    if lookup and (os.geteuid() != 0 or shutil.which("unshare") is None):
        pytest.skip("a name lookup runs only inside unshare --net (needs root)")
    r = skinnysip(*(c.format(busy=busy_tcp_port) for c in command), timeout=60, isolated=lookup)
    assert r.returncode != 0
    assert "Traceback" not in r.stderr + r.stdout
    assert len(r.stderr.strip().splitlines()) <= 1, r.stderr
    if r.returncode == 2:
        assert r.stderr.startswith("error: ") and r.stdout == ""


def test_main_is_the_last_guard(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from skinnysip import cli

    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("something nobody foresaw\nsecond line")

    monkeypatch.setattr(cli, "app", broken)
    monkeypatch.setattr(sys, "argv", ["skinnysip", "sip", "options", "127.0.0.1"])
    with pytest.raises(SystemExit) as done:
        cli.main()
    assert done.value.code == 2
    assert capsys.readouterr().err == "error: RuntimeError: something nobody foresaw\n"


# ------------------------------------------------------------------ --pcap


def test_pcap_is_read_by_tshark_without_malformed_packets(tmp_path: Path) -> None:
    pcap = tmp_path / "options.pcapng"
    with udp_server(_answer("200 OK")) as (port, _):
        cli = runner.invoke(cli_app, ["sip", "options", f"127.0.0.1:{port}", "--pcap", str(pcap)])
    assert cli.exit_code == 0
    out = subprocess.run(["tshark", "-r", str(pcap), "-T", "fields", "-e", "sip.Method", "-e", "sip.Status-Code",
                          "-e", "_ws.malformed"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    rows = [line.split("\t") for line in out.stdout.splitlines()]
    assert rows == [["OPTIONS", "", ""], ["", "200", ""]]
    r = runner.invoke(cli_app, ["sip", "options", f"127.0.0.1:{port}", "--timeout", "300",
                                "--pcap", str(tmp_path / "no-such-dir" / "x.pcapng")])
    assert r.exit_code == 2 and "--pcap: cannot write" in r.output


def test_phone_whose_registration_is_refused_exits_1(tmp_path: Path) -> None:
    def reply(data: bytes, f: dict[str, str]) -> list[bytes]:
        return [response(f, "403 Forbidden")] if f["method"] == "REGISTER" else []

    pcap = tmp_path / "phone.pcapng"
    with udp_server(reply) as (port, received):
        r = skinnysip("phone", "sip:alice@127.0.0.1", "--registrar", f"127.0.0.1:{port}", "--duration", "0.5",
                      "--pcap", str(pcap), timeout=60)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "Traceback" not in r.stderr and any(d.startswith(b"REGISTER ") for d in received)
    out = subprocess.run(["tshark", "-r", str(pcap), "-T", "fields", "-e", "sip.Status-Code", "-e", "_ws.malformed"],
                         capture_output=True, text=True, timeout=60)
    assert "403\t" in out.stdout and all(line.split("\t")[1] == "" for line in out.stdout.splitlines())


def test_one_short_option_letter_means_one_thing_everywhere() -> None:
    meaning: dict[str, set[str]] = {}
    for _, command in _commands(cli_app, []):  # every command and group, sub-commands loaded
        for param in command.params:
            shorts = [o for o in param.opts if len(o) == 2]
            longs = [o for o in param.opts if o.startswith("--")]
            for short in shorts:
                meaning.setdefault(short, set()).update(longs or [param.name or ""])
    assert meaning["-t"] == {"--transport"} and meaning["-p"] == {"--port"}
    assert {short: longs for short, longs in meaning.items() if len(longs) > 1} == {}


def test_sccp_phone_rejected_exits_1_and_a_silent_registrar_is_3() -> None:
    from sccp_lab import lab_cm_process

    from skinnysip.cli.phone import _registration_failure

    with lab_cm_process() as port:
        r = skinnysip("phone", "--sccp", f"127.0.0.1:{port}", "--device", "SEP0000DEADBEEF", "--duration", "0.5")
    assert r.returncode == 1, r.stdout + r.stderr
    assert "RegisterReject" in r.stdout and "Traceback" not in r.stderr
    # the reasons a SIP registration fails with: the registrar's answer, or none
    assert [_registration_failure(x) for x in ("403 Forbidden", "404 Not Found (no such user)", "timeout",
                                               "connection refused by 127.0.0.1:5060/tcp")] == [1, 1, 3, 3]
