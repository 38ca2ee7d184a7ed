"""Start-up of the command line: what a command does not need is not imported (issue 12).

No timing here (benchmarks/bench_sip_probe.py measures it beside peers): each check runs a
fresh interpreter and looks at ``sys.modules`` after importing the CLI or running a command,
so a heavy import creeping back to start-up fails by name.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

#: never needed to start the CLI, print a help page or run 'sip options' to an IP literal
HEAVY = ("dns", "numpy", "cryptography", "skinnysip.lab", "skinnysip.load", "skinnysip.phone",
         "skinnysip.sccp", "uvicorn", "fastapi")
#: and not before a command asks for them (SDP: INVITE; rich: text output; hashlib and hmac:
#: a Digest challenge answered or checked); pydantic is the HTTP API's and the SCCP results'
#: (SIP results are plain dataclasses); typer is not used at all
HEAVY_FOR_SIP_OPTIONS = (*HEAVY, "skinnysip.sdp", "skinnysip.net.rtp", "rich", "pydantic", "typer",
                         "hashlib", "hmac", "secrets")

_RUN = """
import json, sys
{prelude}
print(json.dumps(sorted(sys.modules)), file=sys.__stderr__)
"""

_COMMAND = """
from skinnysip.cli import app
try:
    app({argv!r}, standalone_mode=True)
except SystemExit as done:
    print("exit", done.code)
"""


def _modules_after(prelude: str) -> tuple[set[str], str]:
    """Run ``prelude`` in a fresh interpreter; (its sys.modules, its stdout)."""
    done = subprocess.run([sys.executable, "-c", _RUN.format(prelude=prelude)], capture_output=True,
                          text=True, timeout=60)
    assert "Traceback" not in done.stderr, done.stderr
    return set(json.loads(done.stderr.strip().splitlines()[-1])), done.stdout


def _loaded(modules: set[str], names: tuple[str, ...]) -> list[str]:
    return sorted(m for m in modules if any(m == n or m.startswith(n + ".") for n in names))


def test_importing_the_cli_loads_no_sub_command() -> None:
    modules, _ = _modules_after("import skinnysip.cli")
    assert _loaded(modules, (*HEAVY, "skinnysip.cli.sip", "skinnysip.probes", "pydantic", "rich", "typer")) == []


@pytest.mark.parametrize("argv", [["--version"], ["sip", "options", "--help"], ["sip", "--help"]])
def test_version_and_sip_help_load_only_what_they_show(argv: list[str]) -> None:
    modules, out = _modules_after(_COMMAND.format(argv=argv))
    assert out.rstrip().endswith("exit 0"), out
    assert _loaded(modules, HEAVY) == []


def test_sip_options_to_an_ip_literal_needs_no_dns_sdp_rich_or_pydantic() -> None:
    """'sip options --json' to 127.0.0.1 (nobody listens on port 9: a quick ICMP refusal,
    exit 3) runs the whole probe without dnspython, SDP, RTP, rich, pydantic or the other
    commands."""
    argv = ["sip", "options", "127.0.0.1", "--port", "9", "--timeout", "500", "--json"]
    modules, out = _modules_after(_COMMAND.format(argv=argv))
    assert out.rstrip().endswith("exit 3") and '"success": false' in out, out
    assert _loaded(modules, HEAVY_FOR_SIP_OPTIONS) == []


def test_root_help_still_lists_every_command() -> None:
    _, out = _modules_after(_COMMAND.format(argv=["--help"]))
    assert out.rstrip().endswith("exit 0"), out
    section = out.split("Commands:\n")[1].split("\n\n")[0]
    listed = [line.split()[0] for line in section.splitlines()]
    assert listed == ["lab", "phone", "serve", "version", "sip", "sccp", "load"]


def test_a_transaction_load_run_does_not_load_the_phone_or_media_stack() -> None:
    """'load register/options/message' (and each of their worker processes) import the runner
    and the transaction scenarios only: the call scenarios' phone, media and numpy come with
    'load call'/'load user'."""
    modules, _ = _modules_after(
        "from skinnysip.load.runner import LoadRunner\n"
        "from skinnysip.load.distributed import worker_configs\n"
        "from skinnysip.load.scenarios import LoadConfig\n"
        "LoadRunner(LoadConfig('register', '127.0.0.1', rate=10, count=1))")
    assert _loaded(modules, ("skinnysip.phone", "skinnysip.net.media", "skinnysip.load.calls", "numpy")) == []
    modules, _ = _modules_after(
        "from skinnysip.load.runner import LoadRunner\n"
        "from skinnysip.load.scenarios import LoadConfig\n"
        "LoadRunner(LoadConfig('call', '127.0.0.1', to='600', rate=10, count=1))")
    assert _loaded(modules, ("skinnysip.phone", "skinnysip.load.calls")) != []


def test_the_collector_is_frozen_at_exit_not_when_main_returns() -> None:
    """The CLI freezes the collector's objects when the process ends (the interpreter's last
    collections then skip them), not when ``main`` returns: a caller that goes on keeps its
    collector as it was. A handler registered before ``main`` runs after the freeze (atexit is
    last in, first out) and sees it."""
    program = (
        "import atexit, gc, sys\n"
        "atexit.register(lambda: print('frozen at exit', gc.get_freeze_count() > 0))\n"
        "from skinnysip.cli import main\n"
        "for _ in range(2):\n"
        "    sys.argv = ['skinnysip', '--version']\n"
        "    try:\n"
        "        main()\n"
        "    except SystemExit:\n"
        "        pass\n"
        "    print('frozen after main', gc.get_freeze_count())\n"
    )
    done = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    lines = [line for line in done.stdout.splitlines() if line.startswith("frozen")]
    assert lines == ["frozen after main 0", "frozen after main 0", "frozen at exit True"], done.stdout


def test_the_console_script_ends_at_once_after_a_result_and_loses_nothing() -> None:
    """``run`` (the console script) ends the process with os._exit once a probe printed its
    result, after the atexit handlers and the flush of stdout: the exit status, the whole
    output and a handler's own output all arrive. Without a result printed (``--version``),
    or while a non-daemon thread runs, the process ends the ordinary way."""
    program = (
        "import atexit, os, sys, threading, time\n"
        "real_exit = os._exit\n"
        "def quick(status):\n"
        "    os.write(2, b'quick exit')\n"
        "    real_exit(status)\n"
        "os._exit = quick\n"
        "atexit.register(lambda: print('atexit ran'))\n"
        "if sys.argv[1] == 'thread':\n"
        "    threading.Thread(target=time.sleep, args=(2,)).start()\n"
        "from skinnysip.cli import run\n"
        "sys.argv = ['skinnysip', *sys.argv[2:]]\n"
        "sys.exit(run())\n"
    )
    probe = ["sip", "options", "127.0.0.1", "--port", "9", "--timeout", "300", "--json"]
    for mode, argv, status, quick in (("-", probe, 3, True), ("plain", ["--version"], 0, False),
                                      ("thread", probe, 3, False)):
        done = subprocess.run([sys.executable, "-c", program, mode, *argv], capture_output=True, text=True,
                              timeout=60)
        assert done.returncode == status and ("quick exit" in done.stderr) == quick, (mode, done.stderr)
        assert done.stdout.endswith("atexit ran\n"), (mode, done.stdout)
        if argv == probe:
            body = done.stdout.removesuffix("atexit ran\n")
            assert json.loads(body)["success"] is False, body


@pytest.mark.parametrize("entry", ["run", "main"])
def test_only_the_console_script_freezes_what_loading_the_command_made(entry: str) -> None:
    """The console script (``run``) freezes the collector's objects once the command's modules
    are loaded (a later collection would walk them all: they were made with the collector
    paused); ``main``, called by a program that goes on, freezes nothing before its exit."""
    program = (
        "import gc, sys\n"
        "real = gc.freeze\n"
        "def freeze():\n"
        "    print('freeze in', sys._getframe(1).f_code.co_name, flush=True)\n"
        "    real()\n"
        "gc.freeze = freeze\n"
        f"from skinnysip.cli import {entry} as entry\n"
        "sys.argv = ['skinnysip', 'sip', 'options', '--help']\n"
        "entry()\n"
    )
    done = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    frozen = [line for line in done.stdout.splitlines() if line.startswith("freeze in")]
    assert ("freeze in get_command" in frozen) == (entry == "run"), frozen


def test_sip_options_adds_few_standard_modules_to_a_click_app() -> None:
    """Beyond what a bare click command imports (asyncio, ssl, json, click), 'sip options'
    loads only the standard modules the SIP core needs at once: ipaddress (the target policy),
    dataclasses, copy, gc and importlib.util (the dataclass cache). random (SRV ordering),
    urllib.parse (%-escapes in a URI), hashlib/hmac (Digest) and the like wait for their use.
    (A site hook that imports some of them into every process hides them here; on a machine
    without one each is ~1 ms of start-up: issue 12.)"""
    argv = ["sip", "options", "127.0.0.1", "--port", "9", "--timeout", "500", "--json"]
    modules, out = _modules_after(_COMMAND.format(argv=argv))
    assert out.rstrip().endswith("exit 3"), out
    done = subprocess.run([sys.executable, "-c", "import asyncio, ssl, json, click, sys\n"
                           "print(json.dumps(sorted(sys.modules)))"], capture_output=True, text=True, timeout=60)
    floor = set(json.loads(done.stdout))
    added = sorted(m for m in modules - floor if not m.startswith("skinnysip"))
    allowed = {"ipaddress", "dataclasses", "copy", "gc", "importlib.util", "importlib._abc",
               "importlib.machinery", "org", "org.python", "org.python.core"}
    assert [m for m in added if m not in allowed] == []
