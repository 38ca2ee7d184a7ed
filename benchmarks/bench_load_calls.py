"""Calls with media through ``skinnysip load``: the most concurrent calls (signalling + G.711
both ways + RTCP, one process) that keep < 1 % of RTP packets more than 10 ms late, with SIPp
``-sn uas -rtp_echo`` as the far end.

Run: ``python benchmarks/bench_load_calls.py [--steps 25,50,75,100,125,150] [--hold 12]``.
Per step N: ``sipp -sn uas -rtp_echo -m N`` on 127.0.0.1, and the load runner (in this
process) places N calls at N/2 per second, all up together for at least ``hold - 2`` s: a
user scenario (``load_call_probe:scenario``, the user-scenario API of ``skinnysip load``)
calls, attaches :class:`bench_media_calls.SendProbe` to the call's
:class:`~skinnysip.net.media.MediaStream` (per-packet send lateness, the measure of "Call
media" and ``bench_media_calls.py``), holds, hangs up and keeps the final media report.

A step passes when every call succeeded, < 1 % of the packets sent were more than 10 ms
late (skipped frames count as late) and no RTP was lost on the way back. Steps stop at the
first failing one. The same N as in-process stream pairs (``bench_media_calls.py``) is the
upper bound this compares with: there each call is two streams and no signalling. CPU: this
process's ``time.process_time()`` over the step per call-second. Writes
``benchmarks/results/load_calls.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "benchmarks"), str(ROOT / "tests")]

import load_call_probe  # noqa: E402

from peertools import free_port  # noqa: E402
from skinnysip.load.runner import run_local, summary  # noqa: E402
from skinnysip.load.scenarios import LoadConfig  # noqa: E402

LATE = 0.010


async def step(n: int, hold: float) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix="skinnysip-bench-calls-"))
    port, media = free_port(socket.SOCK_DGRAM), free_port(socket.SOCK_DGRAM)
    sipp = subprocess.Popen(["sipp", "-sn", "uas", "-rtp_echo", "-mp", str(media), "-i", "127.0.0.1", "-p", str(port),
                             "-m", str(n), "-nostdin", "-timeout", f"{int(hold * 3 + 60)}s", "-trace_stat", "-stf",
                             str(workdir / "sipp_.csv"), "-fd", "1"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, cwd=workdir)
    load_call_probe.reset(hold)
    try:
        await asyncio.sleep(0.3)
        config = LoadConfig("user", "127.0.0.1", port=port, to="service", user_script="load_call_probe:scenario",
                            rate=max(1.0, n / 2), count=n, limit=n, hold=hold)
        cpu0, t0 = time.process_time(), time.monotonic()
        result = summary(await run_local(config, []), config)
        cpu, wall = time.process_time() - cpu0, time.monotonic() - t0
        try:
            sipp.wait(timeout=20)
        except subprocess.TimeoutExpired:
            sipp.kill()
        sipp_ok = 0
        stats = workdir / "sipp_.csv"
        if stats.exists():
            lines = stats.read_text(errors="replace").strip().splitlines()
            row = dict(zip(lines[0].split(";"), lines[-1].split(";"), strict=False))
            sipp_ok = int(row.get("SuccessfulCall(C)", 0) or 0)
    finally:
        if sipp.poll() is None:
            sipp.kill()
            sipp.wait(timeout=5)
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
    return {"calls": n, "successful": result["successful"], "failed": result["failed"], "sipp_successful": sipp_ok,
            "packets": sent, "late": late, "late_share": round(late_share, 5),
            "p99_lateness_ms": round(float(np.percentile(lateness, 99)) * 1000, 2) if len(lateness) else None,
            "rtp_expected": expected, "rtp_lost": lost, "mos": round(float(np.mean(mos)), 2) if mos else None,
            "cpu_ms_per_call_second": round(cpu / call_seconds * 1000, 2), "wall": round(wall, 1),
            "load_average": os.getloadavg()[0],
            "ok": result["successful"] == n and late_share < 0.01 and lost == 0}


async def main_async(steps: list[int], hold: float) -> dict[str, Any]:
    results, best = [], None
    for n in steps:
        r = await step(n, hold)
        results.append(r)
        print(f"  {n:>4} calls  {'ok ' if r['ok'] else 'FAIL'}  {r['successful']:>4} ok ({r['sipp_successful']} by SIPp)"
              f"  late {r['late_share'] * 100:5.2f} %  p99 {r['p99_lateness_ms']} ms  lost {r['rtp_lost']}"
              f"  MOS {r['mos']}  cpu {r['cpu_ms_per_call_second']} ms/call-s  load {r['load_average']:.1f}",
              flush=True)
        if not r["ok"]:
            break
        best = n
    return {"steps": results, "max_calls": best}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--steps", default="25,50,75,100,125,150")
    ap.add_argument("--hold", type=float, default=12.0)
    args = ap.parse_args()
    if shutil.which("sipp") is None:
        print("needs sipp (sip-tester): bash scripts/install-deps.sh", file=sys.stderr)
        return 1
    steps = [int(s) for s in args.steps.split(",")]
    print(f"Calls through skinnysip load against SIPp -rtp_echo, hold {args.hold:g} s")
    result = asyncio.run(main_async(steps, args.hold))
    print(f"most concurrent calls with < 1 % late packets and no loss: {result['max_calls']}")
    result.update({"hold": args.hold, "python": platform.python_version(),
                   "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
    out = ROOT / "benchmarks" / "results" / "load_calls.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
