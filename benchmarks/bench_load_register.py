"""REGISTER with digest against the same Kamailio: ``skinnysip load register`` beside SIPp's
REGISTER-with-auth scenario — the highest rate each keeps with 0 failures, and the CPU each
spends per registration.

Run: ``python benchmarks/bench_load_register.py [--rates 200,400,...] [--seconds 5]``. The
default ladder climbs to 16000/s and, while steps pass, ``--beyond`` steps more (each 1.25×
the last, up to ~61000/s), so SIPp's own ceiling on the machine is found, not the ladder's
top; every step is bounded in time (:func:`step_bound`: a step that overruns is
killed and fails).
Starts Kamailio with the tests' configuration (``tests/peers/sip_peers.py``: MD5 digest,
qop=auth, 2 UDP workers) on 127.0.0.1 and the users alice/bob/carol. For each rate, one
after the other on the same Kamailio:

- ``skinnysip load register 127.0.0.1 -r RATE --duration S --no-unregister -u alice``
  (REGISTER → 401 → REGISTER with Authorization → 200; as a process, on its default event
  loop, uvloop; and again with ``--loop asyncio`` unless ``--no-asyncio``);
- ``sipp -sf register_auth.xml -au alice -ap PASSWORD -r RATE -m RATE·S`` (the same exchange, written
  as SIPp's usual REGISTER-with-auth scenario: ``<recv response="401" auth="true"/>`` and
  ``[authentication]``).

- the Python floor: ``benchmarks/register_floor.py``, the leanest asyncio client with no SIP
  stack (byte searches instead of parsing, no transactions or retransmissions), the same
  exchange at the same rate as a process, on uvloop (and on asyncio's own loop unless
  ``--no-asyncio``). It shows what any Python load generator on this interpreter and loop
  can reach against this Kamailio on this machine; skinnysip's rate is read against it as
  well as against SIPp's.

A step passes when every attempt succeeded (no failure, no timeout) and the achieved rate is
at least 90 % of the target. Each tool climbs until its first failing step, then bisects
between that rate and the last passing one (``--refine`` steps, default 2, rounded to 100/s);
the result is its highest passing rate. CPU per registration: the child process's user + system time
(``resource.getrusage(RUSAGE_CHILDREN)`` around the run) divided by the successful
registrations of the highest passing step; the interpreter's start-up is in it (it is a
whole command, as SIPp's is). ``--processes N`` (default: one worker per core of the
machine, at least 2) adds a climb of ``skinnysip load register --processes N`` (worker
processes of this machine, the default engine; ``--engine ray`` climbs with Ray workers instead, whose CPU includes Ray's start-up,
so only their rate compares).

Kamailio's own CPU is read from ``/proc`` around every step (all its processes) and given per
registration too. With it the run ends with the budget the goal leaves a client on this
machine: at 0.8 × SIPp's best rate, Kamailio needs ``rate × server ms/reg`` of the cores;
what is left, divided by that rate, is the most CPU a client may spend per registration —
to be read beside the Python floor's. Writes ``benchmarks/results/load_register.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "tests" / "peers")]

from sip_peers import kamailio  # noqa: E402

from peertools import free_port  # noqa: E402

SIPP_REGISTER_AUTH = """<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="REGISTER with digest">
  <send retrans="500">
    <![CDATA[
REGISTER sip:{realm} SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
Max-Forwards: 70
From: <sip:{user}@{realm}>;tag=[pid]SIPpTag00[call_number]
To: <sip:{user}@{realm}>
Call-ID: [call_id]
CSeq: 1 REGISTER
Contact: <sip:{user}@[local_ip]:[local_port]>
Expires: 60
Content-Length: 0

    ]]>
  </send>
  <recv response="401" auth="true"/>
  <send retrans="500">
    <![CDATA[
REGISTER sip:{realm} SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
Max-Forwards: 70
From: <sip:{user}@{realm}>;tag=[pid]SIPpTag00[call_number]
To: <sip:{user}@{realm}>
Call-ID: [call_id]
CSeq: 2 REGISTER
Contact: <sip:{user}@[local_ip]:[local_port]>
[authentication]
Expires: 60
Content-Length: 0

    ]]>
  </send>
  <recv response="200"/>
</scenario>
"""


#: each step past the ladder's top is this many times the last one (``--beyond``)
BEYOND_FACTOR = 1.25


def step_bound(seconds: float) -> float:
    """Wall seconds one step may take at most (start-up, the run, our drain of late
    transactions: ``timeout`` 32 s + grace), then it is killed and counted as failed."""
    return seconds * 3 + 90


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _json_step(argv: list[str], rate: int, seconds: float) -> dict[str, Any]:
    """Run one step's command, which prints a JSON summary (``successful``, ``failed``,
    ``rate`` and, if it has them, ``retransmissions``); its CPU is the child's user + system
    time. Passes with no failure and at least 90 % of ``rate`` achieved."""
    cpu0, t0 = _children_cpu(), time.monotonic()
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=step_bound(seconds))
    except subprocess.TimeoutExpired:
        return {"ok": False, "error": f"step overran {step_bound(seconds):.0f} s", "cpu": _children_cpu() - cpu0}
    cpu, wall = _children_cpu() - cpu0, time.monotonic() - t0
    try:
        result = json.loads(proc.stdout)
    except json.JSONDecodeError:
        return {"ok": False, "error": proc.stderr.strip()[-300:], "cpu": cpu}
    successful, failed = result["successful"], result["failed"]
    achieved = result["rate"]
    return {"ok": failed == 0 and successful > 0 and achieved >= 0.9 * rate, "successful": successful,
            "failed": failed, "retransmissions": result.get("retransmissions", 0), "achieved": achieved, "cpu": cpu,
            "wall": wall, "cpu_ms_per_registration": cpu / successful * 1000 if successful else None,
            "watchdog": result.get("watchdog")}  # skinnysip's: its own event loop late (SIPp's watchdog)


def ours(port: int, realm: str, user: str, password: str, rate: int, seconds: float,
         processes: int = 1, engine: str = "processes", event_loop: str = "auto") -> dict[str, Any]:
    return _json_step([sys.executable, "-m", "skinnysip", "load", "register", "127.0.0.1", "-p", str(port),
                       "--domain", realm, "-u", user, "--password", password, "-r", str(rate),
                       "--duration", str(seconds), "-l", str(max(100, rate)), "--no-unregister", "--json",
                       "--quiet", "--processes", str(processes), "--engine", engine, "--loop", event_loop], rate,
                      seconds)


def floor(port: int, realm: str, user: str, password: str, rate: int, seconds: float,
          event_loop: str = "uvloop") -> dict[str, Any]:
    """One step of the Python floor (``register_floor.py``) as a process, on ``event_loop``."""
    return _json_step([sys.executable, str(ROOT / "benchmarks" / "register_floor.py"), str(port), str(rate),
                       str(seconds), realm, user, password, event_loop], rate, seconds)


def sipp(port: int, realm: str, user: str, password: str, rate: int, seconds: float, workdir: Path) -> dict[str, Any]:
    scenario = workdir / "register_auth.xml"
    scenario.write_text(SIPP_REGISTER_AUTH.format(realm=realm, user=user))
    count = int(rate * seconds)
    stat = workdir / f"sipp_{rate}_.csv"
    cpu0, t0 = _children_cpu(), time.monotonic()
    try:
        proc = subprocess.run(["sipp", f"127.0.0.1:{port}", "-sf", str(scenario), "-au", user, "-ap", password, "-nd",
                               "-i", "127.0.0.1", "-p", str(free_port(socket.SOCK_DGRAM)), "-r", str(rate), "-m",
                               str(count), "-l", str(max(100, rate)), "-nostdin", "-timeout",
                               f"{int(step_bound(seconds) - 30)}s", "-trace_stat", "-stf", str(stat), "-fd", "1"],
                              capture_output=True, text=True, timeout=step_bound(seconds), cwd=workdir)
    except subprocess.TimeoutExpired:
        return {"ok": False, "error": f"step overran {step_bound(seconds):.0f} s", "cpu": _children_cpu() - cpu0}
    cpu, wall = _children_cpu() - cpu0, time.monotonic() - t0
    row: dict[str, str] = {}
    if stat.exists():
        lines = stat.read_text(errors="replace").strip().splitlines()
        if len(lines) >= 2:
            row = dict(zip(lines[0].split(";"), lines[-1].split(";"), strict=False))
    successful = int(row.get("SuccessfulCall(C)", 0) or 0)
    failed = int(row.get("FailedCall(C)", 0) or 0)
    retrans = int(row.get("Retransmissions(C)", 0) or 0)
    achieved = float(row.get("CallRate(C)", 0) or 0)  # SIPp's own cumulative call rate
    ok = proc.returncode == 0 and failed == 0 and successful == count and achieved >= 0.9 * rate
    return {"ok": ok, "successful": successful, "failed": failed, "retransmissions": retrans,
            "achieved": round(achieved, 1), "cpu": cpu, "wall": wall,
            "cpu_ms_per_registration": cpu / successful * 1000 if successful else None, "exit": proc.returncode}


def server_cpu(config_path: str) -> float:
    """CPU seconds (user + system) spent so far by every process running ``config_path``
    (Kamailio's main process and its workers), from ``/proc/PID/stat``."""
    total = 0
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if config_path.encode() not in f.read():
                    continue
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of stat)
    return total / os.sysconf("SC_CLK_TCK")


def climb(name: str, run: Any, rates: list[int], server_config: str = "", refine: int = 2,
          beyond: int = 0) -> dict[str, Any]:
    """Run ``run(rate)`` up the ladder ``rates`` until a step fails; when its top passes, up to
    ``beyond`` more steps, each :data:`BEYOND_FACTOR` × the last; then ``refine`` more steps
    bisecting between the last passing rate and the first failing one (rounded to 100/s), so
    the ceiling is known to within a few percent rather than a ladder step. Returns
    ``{"steps": [...], "best": the highest passing step or None, "ceiling_higher": no step
    failed}``."""
    steps: list[dict[str, Any]] = []
    best: dict[str, Any] | None = None

    def measure(rate: int) -> dict[str, Any]:
        server0 = server_cpu(server_config) if server_config else 0.0
        step = run(rate)
        step["rate"] = rate
        if server_config and step.get("successful"):
            step["server_cpu_ms_per_registration"] = (server_cpu(server_config) - server0) / step["successful"] * 1000
        steps.append(step)
        print(f"  {name:<10} {rate:>6}/s  {'ok ' if step['ok'] else 'FAIL'} {step.get('successful', 0):>7} ok "
              f"{step.get('failed', 0):>5} failed  {step.get('retransmissions', 0):>5} retrans  "
              f"cpu {step.get('cpu_ms_per_registration') or 0:.3f} ms/reg  "
              f"server {step.get('server_cpu_ms_per_registration') or 0:.3f} ms/reg", flush=True)
        return step

    failed_at = None
    for rate in rates:
        step = measure(rate)
        if not step["ok"]:
            failed_at = rate
            break
        best = step
    rate = rates[-1]
    for _ in range(beyond if failed_at is None else 0):  # the top passed: the ceiling is higher
        rate = round(rate * BEYOND_FACTOR / 100) * 100
        step = measure(rate)
        if not step["ok"]:
            failed_at = rate
            break
        best = step
    low = best["rate"] if best else 0
    for _ in range(refine if failed_at is not None and low else 0):
        rate = round((low + failed_at) / 2 / 100) * 100
        if rate in (low, failed_at):
            break
        step = measure(rate)
        if step["ok"]:
            best, low = step, rate
        else:
            failed_at = rate
    return {"steps": steps, "best": best, "ceiling_higher": all(st["ok"] for st in steps)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rates", default="200,400,800,1200,1600,2400,3200,4000,4800,6400,8000,9600,12800,16000")
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--processes", type=int, default=max(2, os.cpu_count() or 1),
                    help="also climb with skinnysip load --processes N (default: every core of the machine, at "
                         "least 2; 1: skip)")
    ap.add_argument("--engine", choices=("processes", "ray"), default="processes",
                    help="what runs the --processes workers (default: processes)")
    ap.add_argument("--no-asyncio", dest="asyncio", action="store_false",
                    help="skip the climbs of skinnysip and of the floor on asyncio's own loop (the others run "
                         "on uvloop, skinnysip load's default)")
    ap.add_argument("--refine", type=int, default=2,
                    help="steps bisecting between the last passing and the first failing rate (default 2)")
    ap.add_argument("--beyond", type=int, default=6,
                    help=f"steps past the ladder's top when it passes, each {BEYOND_FACTOR}x the last (default 6)")
    args = ap.parse_args()
    if shutil.which("sipp") is None or shutil.which("kamailio") is None:
        print("needs sipp (sip-tester) and kamailio: bash scripts/install-deps.sh", file=sys.stderr)
        return 1
    rates = [int(r) for r in args.rates.split(",")]
    workdir = Path(tempfile.mkdtemp(prefix="skinnysip-bench-reg-"))
    try:
        with kamailio("MD5") as k:
            user, password = "alice", k.users["alice"]
            print(f"REGISTER with digest against Kamailio 127.0.0.1:{k.udp_port}, {args.seconds:g} s per step")
            cfg = str(Path(k.log_file).with_name("kamailio.cfg"))  # on every Kamailio process's command line
            result = {
                "skinnysip": climb("skinnysip", lambda r: ours(k.udp_port, k.realm, user, password, r, args.seconds),
                                   rates, cfg, args.refine, args.beyond),
                **({f"skinnysip x{args.processes}": climb(
                    f"x{args.processes}", lambda r: ours(k.udp_port, k.realm, user, password, r, args.seconds,
                                                         args.processes, args.engine), rates, cfg, args.refine, args.beyond)}
                   if args.processes > 1 else {}),
                "sipp": climb("sipp", lambda r: sipp(k.udp_port, k.realm, user, password, r, args.seconds, workdir),
                              rates, cfg, args.refine, args.beyond),
                "python floor": climb("floor", lambda r: floor(k.udp_port, k.realm, user, password, r, args.seconds),
                                      rates, cfg, args.refine, args.beyond),
                **({"skinnysip asyncio": climb(
                    "asyncio", lambda r: ours(k.udp_port, k.realm, user, password, r, args.seconds,
                                              event_loop="asyncio"), rates, cfg, args.refine, args.beyond),
                    "python floor asyncio": climb(
                    "floor aio", lambda r: floor(k.udp_port, k.realm, user, password, r, args.seconds, "asyncio"),
                    rates, cfg, args.refine, args.beyond)} if args.asyncio else {}),
            }
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    ob, sb = result["skinnysip"]["best"], result["sipp"]["best"]
    print(f"{'tool':<20} {'max rate 0 fail':>16} {'cpu ms/reg':>11}")
    floors = [k for k in result if k.startswith("python floor")]
    for name in [k for k in result if k != "sipp" and k not in floors] + floors + ["sipp"]:
        best = result[name]["best"]
        top = " (no step failed: the ceiling is higher)" if result[name]["ceiling_higher"] else ""
        print(f"{name:<20} {best['rate'] if best else 0:>14}/s {(best or {}).get('cpu_ms_per_registration') or 0:>11.3f}"
              f"{top}")
    ratio = (ob["rate"] / sb["rate"]) if ob and sb else None
    cpu_ratio = (ob["cpu_ms_per_registration"] / sb["cpu_ms_per_registration"]) if ob and sb else None
    print(f"rate ratio skinnysip/sipp: {'-' if ratio is None else round(ratio, 2)} (goal >= 0.8); "
          f"CPU per registration skinnysip/sipp: {'-' if cpu_ratio is None else f'{cpu_ratio:.1f}x'}")
    xb = result.get(f"skinnysip x{args.processes}", {}).get("best")
    processes_ratio = (xb["rate"] / sb["rate"]) if xb and sb else None
    if args.processes > 1:
        print(f"rate ratio skinnysip --processes {args.processes}/sipp: "
              f"{'-' if processes_ratio is None else round(processes_ratio, 2)}")
    fb = result["python floor"]["best"]
    floor_ratio = (fb["rate"] / sb["rate"]) if fb and sb else None
    print(f"rate ratio python floor (uvloop)/sipp: {'-' if floor_ratio is None else round(floor_ratio, 2)} "
          "(the leanest Python client on skinnysip load's loop)")
    for name in ("skinnysip asyncio", "python floor asyncio"):
        best = (result.get(name) or {}).get("best")
        if name in result:
            print(f"rate ratio {name}/sipp: {'-' if not (best and sb) else round(best['rate'] / sb['rate'], 2)}")
    budget = None
    if sb and sb.get("server_cpu_ms_per_registration"):
        goal_rate = 0.8 * sb["rate"]
        server_cores = goal_rate * sb["server_cpu_ms_per_registration"] / 1000
        cores = os.cpu_count() or 1
        budget = {"goal_rate": goal_rate, "server_cores": round(server_cores, 2), "cores": cores,
                  "client_ms_per_registration": round(max(0.0, cores - server_cores) / goal_rate * 1000, 3)}
        print(f"the goal's budget on this machine: at {goal_rate:.0f}/s Kamailio needs {server_cores:.2f} of "
              f"{cores} cores ({sb['server_cpu_ms_per_registration']:.3f} ms/reg), leaving a client "
              f"{budget['client_ms_per_registration']:.3f} ms CPU per registration; the python floor spends "
              f"{(fb or {}).get('cpu_ms_per_registration') or 0:.3f}, skinnysip "
              f"{(ob or {}).get('cpu_ms_per_registration') or 0:.3f}")
    result.update({"goal_budget": budget, "rate_ratio": ratio, "processes_rate_ratio": processes_ratio, "cpu_ratio": cpu_ratio, "floor_rate_ratio": floor_ratio, "seconds": args.seconds,
                   "python": platform.python_version(), "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
    out = ROOT / "benchmarks" / "results" / "load_register.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
