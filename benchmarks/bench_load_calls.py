"""Calls with media through ``skinnysip load``: the most concurrent calls (signalling + G.711
both ways + RTCP, one process) that keep < 1 % of RTP packets more than 10 ms late, with SIPp
``-sn uas -rtp_echo`` as the far end — and, side by side (``--far-end both``), with
``skinnysip load answer --no-register --source rtp-echo`` as the far end (each payload sent back
as it came, as SIPp's ``-rtp_echo`` does): the called side's CPU per call-second beside SIPp's,
as a ratio.

Run: ``python benchmarks/bench_load_calls.py [--steps 25,50,75,100,125,150] [--hold 12]
[--far-end sipp|skinnysip|both]`` (default both).
Per step N: ``sipp -sn uas -rtp_echo -m N`` on 127.0.0.1 (or ``skinnysip load answer
127.0.0.1:PORT --no-register --source rtp-echo -m N``: it sends each payload back at once, as
SIPp does, and keeps its receive statistics, jitter buffer and RTCP as in any call), and the load runner (in this
process, on the event loop ``skinnysip load`` runs on: ``--loop``, default uvloop when installed) places N calls at N/2 per second, all up together for at least ``hold - 2`` s: a
user scenario (``load_call_probe:scenario``, the user-scenario API of ``skinnysip load``)
calls, attaches :class:`bench_media_calls.SendProbe` to the call's
:class:`~skinnysip.net.media.MediaStream` (per-packet send lateness, the measure of "Call
media" and ``bench_media_calls.py``), holds, hangs up and keeps the final media report.

A step passes when every call succeeded, < 1 % of the packets sent were more than 10 ms
late (skipped frames count as late) and no RTP was lost on the way back. Steps stop at the
first failing one (past the ladder's top, ``--beyond`` steps more, each 1.25× the last, while
they pass). The same N as in-process stream pairs (``bench_media_calls.py``) is the
upper bound this compares with: there each call is two streams and no signalling. CPU: this
process's ``time.process_time()`` over the step per call-second; the far end's the same
(its CPU as a child process, ``RUSAGE_CHILDREN``; a Python far end's start-up, about 0.5 s
of imports, is in it: a short ``hold`` or a small step inflates its figure). Writes ``benchmarks/results/load_calls.json``.
"""

from __future__ import annotations

import argparse
import asyncio
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
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "benchmarks"), str(ROOT / "tests")]

import load_call_probe  # noqa: E402

from peertools import free_port  # noqa: E402
from skinnysip.load.runner import run_local, summary  # noqa: E402
from skinnysip.load.scenarios import LoadConfig  # noqa: E402
from skinnysip.net import event_loop as event_loops  # noqa: E402

LATE = 0.010


def children_cpu() -> float:
    """CPU seconds of this process's waited-for children (the far end, once it has ended)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


async def step(n: int, hold: float, far_end: str = "sipp", loop: str = "auto") -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix="skinnysip-bench-calls-"))
    port, media = free_port(socket.SOCK_DGRAM), free_port(socket.SOCK_DGRAM)
    far_cpu0 = children_cpu()
    if far_end == "sipp":
        far = subprocess.Popen(["sipp", "-sn", "uas", "-rtp_echo", "-mp", str(media), "-i", "127.0.0.1", "-p",
                                str(port), "-m", str(n), "-nostdin", "-timeout", f"{int(hold * 3 + 60)}s",
                                "-trace_stat", "-stf", str(workdir / "sipp_.csv"), "-fd", "1"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=workdir)
    else:
        far = subprocess.Popen([sys.executable, "-m", "skinnysip", "load", "answer", f"127.0.0.1:{port}",
                                "--no-register", "--source", "rtp-echo", "-m", str(n), "-l", str(n),
                                "--duration", str(int(hold * 3 + 60)), "--json", "--quiet", "--loop", loop],
                               stdout=open(workdir / "answer.json", "w"), stderr=subprocess.DEVNULL,  # noqa: SIM115
                               cwd=workdir)
    load_call_probe.reset(hold)
    try:
        await asyncio.sleep(0.3 if far_end == "sipp" else 3.0)  # a Python process imports first
        # PCMU alone, as SIPp's answer has it: the same codec whichever far end answers
        config = LoadConfig("user", "127.0.0.1", port=port, to="service", user_script="load_call_probe:scenario",
                            rate=max(1.0, n / 2), count=n, limit=n, hold=hold, codecs=("PCMU",))
        cpu0, t0 = time.process_time(), time.monotonic()
        result = summary(await run_local(config, []), config)
        cpu, wall = time.process_time() - cpu0, time.monotonic() - t0
        try:
            far.wait(timeout=30)
        except subprocess.TimeoutExpired:
            far.kill()
            far.wait(timeout=5)
        far_cpu = children_cpu() - far_cpu0
        far_ok = 0
        stats = workdir / "sipp_.csv"
        if stats.exists():
            lines = stats.read_text(errors="replace").strip().splitlines()
            row = dict(zip(lines[0].split(";"), lines[-1].split(";"), strict=False))
            far_ok = int(row.get("SuccessfulCall(C)", 0) or 0)
        answered = workdir / "answer.json"
        if answered.exists() and answered.stat().st_size:
            far_ok = int(json.loads(answered.read_text()).get("successful", 0))
    finally:
        if far.poll() is None:
            far.kill()
            far.wait(timeout=5)
        shutil.rmtree(workdir, ignore_errors=True)
    lateness = np.concatenate([p.lateness() for p in load_call_probe.PROBES]) if load_call_probe.PROBES else np.zeros(0)
    skipped = sum(int(r["sent"]["late"]) for r in load_call_probe.REPORTS)
    sent = len(lateness) + skipped
    late = int(np.sum(lateness > LATE)) + skipped
    expected = sum(int(r["received"]["expected"]) for r in load_call_probe.REPORTS)
    lost = sum(int(r["received"]["lost"]) for r in load_call_probe.REPORTS)
    late_share = late / sent if sent else 1.0
    mos = [r["quality"]["mos"] for r in load_call_probe.REPORTS if r.get("quality")]
    call_seconds = n * hold
    return {"calls": n, "far_end": far_end, "successful": result["successful"], "failed": result["failed"],
            "far_end_successful": far_ok, "far_end_cpu_ms_per_call_second": round(far_cpu / call_seconds * 1000, 2),
            "packets": sent, "late": late, "late_share": round(late_share, 5),
            "p99_lateness_ms": round(float(np.percentile(lateness, 99)) * 1000, 2) if len(lateness) else None,
            "rtp_expected": expected, "rtp_lost": lost, "mos": round(float(np.mean(mos)), 2) if mos else None,
            "cpu_ms_per_call_second": round(cpu / call_seconds * 1000, 2), "wall": round(wall, 1),
            "load_average": os.getloadavg()[0],
            "ok": result["successful"] == n and far_ok == n and late_share < 0.01 and lost == 0}


def _beyond(steps: list[int], extra: int) -> Iterator[int]:
    """The ladder ``steps``, then up to ``extra`` more, each 1.25 × the last (rounded to 5)."""
    yield from steps
    n = steps[-1]
    for _ in range(extra):
        n = max(n + 5, round(n * 1.25 / 5) * 5)
        yield n


async def climb(steps: list[int], hold: float, far_end: str, beyond: int = 0, loop: str = "auto") -> dict[str, Any]:
    """Steps up the ladder (and ``beyond`` steps past its top while they pass) until one
    fails; ``max_calls`` is the highest passing step, ``ceiling_higher`` whether none failed."""
    results, best = [], None
    for n in _beyond(steps, beyond):
        r = await step(n, hold, far_end, loop)
        results.append(r)
        print(f"  {far_end:>9} {n:>4} calls  {'ok ' if r['ok'] else 'FAIL'}  {r['successful']:>4} ok "
              f"({r['far_end_successful']} by the far end)  late {r['late_share'] * 100:5.2f} %  p99 "
              f"{r['p99_lateness_ms']} ms  lost {r['rtp_lost']}  MOS {r['mos']}  cpu {r['cpu_ms_per_call_second']} "
              f"ms/call-s (far end {r['far_end_cpu_ms_per_call_second']})  load {r['load_average']:.1f}", flush=True)
        if not r["ok"]:
            break
        best = n
    return {"steps": results, "max_calls": best, "ceiling_higher": all(r["ok"] for r in results)}


async def main_async(steps: list[int], hold: float, far_ends: list[str], beyond: int = 0,
                     loop: str = "auto") -> dict[str, Any]:
    """The climb against each far end; with both, the called side's CPU per call-second at
    the highest step both passed, ours over SIPp's."""
    runs = {far_end: await climb(steps, hold, far_end, beyond, loop) for far_end in far_ends}
    result: dict[str, Any] = dict(runs.get("sipp") or runs[far_ends[0]])  # the historical keys: SIPp's climb
    result["far_ends"] = runs
    if len(runs) == 2:
        ours = {r["calls"]: r for r in runs["skinnysip"]["steps"] if r["ok"]}
        both = [r for r in runs["sipp"]["steps"] if r["ok"] and r["calls"] in ours]
        if both:
            top = both[-1]
            theirs, mine = top["far_end_cpu_ms_per_call_second"], ours[top["calls"]]["far_end_cpu_ms_per_call_second"]
            result["far_end_cpu_ratio"] = {"calls": top["calls"], "sipp_ms": theirs, "skinnysip_ms": mine,
                                           "ratio": round(mine / theirs, 2) if theirs else None}
    return result


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--steps", default="25,50,75,100,125,150")
    ap.add_argument("--hold", type=float, default=12.0)
    ap.add_argument("--far-end", choices=("sipp", "skinnysip", "both"), default="both",
                    help="what answers the calls: SIPp -sn uas -rtp_echo, skinnysip load answer --no-register "
                    "--source rtp-echo, or each in turn (the called sides' CPU side by side)")
    ap.add_argument("--loop", choices=event_loops.EVENT_LOOPS, default="auto",
                    help="the event loop of the load side and of skinnysip's far end (default auto: uvloop "
                    "when installed, as skinnysip load runs)")
    ap.add_argument("--beyond", type=int, default=4,
                    help="steps past the ladder's top while they pass, each 1.25x the last (default 4)")
    args = ap.parse_args()
    if shutil.which("sipp") is None:
        print("needs sipp (sip-tester): bash scripts/install-deps.sh", file=sys.stderr)
        return 1
    steps = [int(s) for s in args.steps.split(",")]
    far_ends = ["sipp", "skinnysip"] if args.far_end == "both" else [args.far_end]
    print(f"Calls through skinnysip load against {' and '.join(far_ends)} as the echoing far end, hold {args.hold:g} s")
    result = event_loops.run(main_async(steps, args.hold, far_ends, args.beyond, args.loop), args.loop)
    for far_end, run in result["far_ends"].items():
        higher = " (no step failed: the ceiling is higher)" if run["ceiling_higher"] else ""
        print(f"most concurrent calls with < 1 % late packets and no loss, {far_end} far end: {run['max_calls']}{higher}")
    if "far_end_cpu_ratio" in result:
        r = result["far_end_cpu_ratio"]
        print(f"the called side's CPU at {r['calls']} calls: skinnysip {r['skinnysip_ms']} ms/call-s, SIPp "
              f"{r['sipp_ms']} ms/call-s: {r['ratio']}x")
    result.update({"hold": args.hold, "loop": args.loop, "python": platform.python_version(),
                   "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
    out = ROOT / "benchmarks" / "results" / "load_calls.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
