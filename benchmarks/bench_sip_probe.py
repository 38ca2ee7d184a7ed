"""OPTIONS round trips per second against the same local Kamailio: skinnysip vs sipsak.

Run: ``python benchmarks/bench_sip_probe.py [--count N]``. Starts Kamailio (the tests'
configuration) on 127.0.0.1 and measures, one after the other:

- ``skinnysip in-process``: ``await options(...)`` N times (a new UDP socket, transaction
  and result with its exchange each time);
- ``skinnysip CLI``: ``skinnysip sip options --json`` as a process, N/10 times;
- ``sipsak -s``: sipsak as a process (one OPTIONS, waits for the 200), N/10 times;
- ``python -c "import asyncio, ssl, json"`` on the same interpreter, N/10 times: the floor
  of a Python command (goal: the CLI within 1.3x of it);
- floors of a command built on libraries, N/10 times each: a one-command click app (a host
  argument, ``--port``, ``--json``; it prints ``ok``) — the CLI's library — and the bare
  import plus ``pydantic.main`` (the API's models; no SIP command imports pydantic).

The process rows include interpreter / program start-up, which dominates; compare them with
each other. They run alternately (CLI, sipsak, bare import, CLI, …) so that load from
elsewhere on the machine falls on all of them alike. The CLI is the ``skinnysip`` script
installed beside this interpreter (not a wrapper found first on ``PATH``, such as a pyenv
shim, which costs a shell and ~50 ms more per run). Python processes run with their bytecode
cached (``PYTHONPYCACHEPREFIX`` in a temporary folder, one untimed run first), as an installed
package has it: with ``PYTHONDONTWRITEBYTECODE`` set and an editable install, every source
file changed since its last ``.pyc`` would be compiled again on every run. Prints a table of rates and ratios and writes ``benchmarks/results/sip_probe.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "tests" / "peers")]

from sip_peers import kamailio  # noqa: E402

from skinnysip.probes.sip import ProbeRequest, options  # noqa: E402

BARE = "python -c import asyncio,ssl,json"
#: floors of a command built on libraries: (row name, program for python -c); each prints "ok"
LIBRARY_FLOORS = {
    "floor: click app": (
        "import asyncio, ssl, json, click\n"
        "@click.command()\n"
        "@click.argument('host')\n"
        "@click.option('--port', type=int, default=5060)\n"
        "@click.option('--json', 'json_out', is_flag=True)\n"
        "def options(host: str, port: int, json_out: bool) -> None:\n"
        "    print('ok')\n"
        "options()\n"),
    "floor: + pydantic.main": "import asyncio, ssl, json, pydantic.main; print('ok')\n",
}


async def _ours(port: int, count: int) -> float:
    start = time.perf_counter()
    for _ in range(count):
        result = await options(ProbeRequest(host="127.0.0.1", port=port, timeout=2))
        if result.status_code != 200:
            raise RuntimeError(f"probe failed: {result.error}")
    return time.perf_counter() - start


def _processes(commands: dict[str, tuple[list[str], bytes]], count: int) -> dict[str, float]:
    """Run each command once untimed, then ``count`` times alternately; seconds spent per
    command. Bytecode is cached in a temporary folder. A run whose output lacks the
    command's ``ok`` bytes raises RuntimeError."""
    spent = dict.fromkeys(commands, 0.0)
    with tempfile.TemporaryDirectory(prefix="bench-pyc-") as pyc:
        env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
        env["PYTHONPYCACHEPREFIX"] = pyc
        for timed in [False] + [True] * count:
            for name, (argv, ok) in commands.items():
                start = time.perf_counter()
                out = subprocess.run(argv, capture_output=True, timeout=30, env=env)
                if timed:
                    spent[name] += time.perf_counter() - start
                if ok not in out.stdout + out.stderr:
                    raise RuntimeError(f"{argv[0]} failed: {(out.stdout + out.stderr)[-300:]!r}")
    return spent


def _script(name: str) -> str:
    """The console script ``name`` installed beside this interpreter, else the one on PATH."""
    beside = Path(sys.executable).with_name(name)
    return str(beside) if beside.is_file() else shutil.which(name) or name


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--count", type=int, default=500, help="in-process round trips (default 500)")
    args = ap.parse_args()
    proc_count = max(5, args.count // 10)
    rows: list[tuple[str, int, float]] = []
    with kamailio("MD5") as peer:
        port = peer.udp_port
        asyncio.run(_ours(port, 5))  # warm-up
        rows.append(("skinnysip in-process", args.count, asyncio.run(_ours(port, args.count))))
        commands = {"skinnysip CLI process": (
            [_script("skinnysip"), "sip", "options", "127.0.0.1", "--port", str(port), "--json"], b'"statusCode": 200')}
        sipsak = shutil.which("sipsak")
        if sipsak:
            commands["sipsak -s process"] = ([sipsak, "-s", f"sip:127.0.0.1:{port}", "-vv"], b"200 OK")
        # the floor of any Python command on this interpreter: start-up plus the stdlib a probe needs
        commands[BARE] = ([sys.executable, "-c", "import asyncio, ssl, json; print('ok')"], b"ok")
        for name, program in LIBRARY_FLOORS.items():
            commands[name] = ([sys.executable, "-c", program, "127.0.0.1", "--port", str(port), "--json"], b"ok")
        rows += [(name, proc_count, seconds) for name, seconds in _processes(commands, proc_count).items()]
    rates = {name: n / t for name, n, t in rows}
    base = rates.get("sipsak -s process")
    print(f"{'what':24} {'n':>6} {'round trips/s':>14} {'vs sipsak':>10} {'s per run':>10}")
    for name, n, t in rows:
        ratio = f"{rates[name] / base:.2f}x" if base else "-"
        print(f"{name:24} {n:6d} {rates[name]:14.1f} {ratio:>10} {t / n:10.3f}")
    startup = (rates[BARE] / rates["skinnysip CLI process"]) if rates.get("skinnysip CLI process") else None
    if startup is not None:
        print(f"CLI start-up: 'skinnysip sip options' takes {startup:.2f}x the bare import (goal <= 1.3x)")
    floors = {name[len("floor: "):]: rates[BARE] / rates[name] for name in LIBRARY_FLOORS if rates.get(name)}
    for what, ratio in floors.items():
        print(f"  floor: {what} takes {ratio:.2f}x the bare import")
    out = ROOT / "benchmarks" / "results" / "sip_probe.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({
        "benchmark": "OPTIONS round trips per second against local Kamailio (UDP)",
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cli_over_bare_import": (rates[BARE] / rates["skinnysip CLI process"])
        if rates.get("skinnysip CLI process") else None,
        "library_floors_over_bare_import": floors,
        "rows": [{"what": name, "count": n, "seconds": t, "per_second": rates[name],
                  "vs_sipsak": (rates[name] / base) if base else None} for name, n, t in rows],
    }, indent=2) + "\n")
    print(f"written: {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
