"""The HTTP API under 200 concurrent probe requests to an unreachable target (a bound UDP port
on 127.0.0.1 that never answers, so each probe waits its whole timeout): do all 200 run, and
does ``/api/health`` keep answering quickly meanwhile (issue 11: within 100 ms)?

A real server (uvicorn on the asyncio loop, as ``skinnysip serve`` runs it) in a child process,
with the per-client operation limit raised to 256 so one benchmark client can hold 200 at once
(a second run with the defaults shows the 429s the limit gives instead). The client (httpx,
asyncio) fires the probes together; another process polls health every 50 ms meanwhile (in the
firing process the poller's own loop was late when the 200 answers came back, which measured
the client, not the server).

Prints a table; writes ``benchmarks/results/api_concurrency.json``. Usage:
``python3 benchmarks/bench_api_concurrency.py [--requests 200] [--probe-timeout-ms 3000]``
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]

SERVER = """
import sys, uvicorn
from skinnysip.api.app import create_app
from skinnysip.api.guard import ServiceSettings
ops = int(sys.argv[2])
uvicorn.run(create_app(ServiceSettings(client_operations=ops, total_operations=max(ops, 512))),
            host="127.0.0.1", port=int(sys.argv[1]), log_level="warning", loop="asyncio")
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def wait_up(base: str) -> None:
    deadline = time.monotonic() + 30
    async with httpx.AsyncClient() as c:
        while time.monotonic() < deadline:
            try:
                if (await c.get(f"{base}/api/health", timeout=1)).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.1)
    raise SystemExit("server did not start")


POLLER = """
import json, sys, time, httpx
base, stop_after = sys.argv[1], float(sys.argv[2])
samples = []
errors = 0
start = time.monotonic()
with httpx.Client(base_url=base, timeout=5) as c:
    while time.monotonic() - start < stop_after:
        t0 = time.perf_counter()
        try:
            ok = c.get("/api/health").status_code == 200
        except httpx.HTTPError:
            ok = False
        if ok:
            samples.append([round(time.monotonic() - start, 3), (time.perf_counter() - t0) * 1000])
        else:
            errors += 1
        time.sleep(0.05)
print(json.dumps({"samples": samples, "errors": errors}))
"""


async def run(base: str, requests: int, target_port: int, probe_timeout_ms: int) -> dict[str, Any]:
    """Fire ``requests`` probes together; health is polled every 50 ms by another process (its
    own event loop: this one is busy with 200 responses when they come back)."""
    window = probe_timeout_ms / 1000 + 2.0
    poller = await asyncio.create_subprocess_exec(sys.executable, "-c", POLLER, base, str(window),
                                                  stdout=subprocess.PIPE)
    limits = httpx.Limits(max_connections=requests + 10, max_keepalive_connections=requests + 10)
    async with httpx.AsyncClient(base_url=base, limits=limits, timeout=probe_timeout_ms / 1000 + 30) as c:
        body = {"host": "127.0.0.1", "port": target_port, "timeout": probe_timeout_ms}
        start = time.monotonic()
        results = await asyncio.gather(*(c.post("/api/sip/options", json=body) for _ in range(requests)),
                                       return_exceptions=True)
        elapsed = time.monotonic() - start
    out, _ = await asyncio.wait_for(poller.communicate(), window + 30)
    polled = json.loads(out)
    health = [ms for _, ms in polled["samples"]]
    codes: dict[str, int] = {}
    for r in results:
        key = str(r.status_code) if isinstance(r, httpx.Response) else type(r).__name__
        codes[key] = codes.get(key, 0) + 1
    no_answer = sum(1 for r in results if isinstance(r, httpx.Response) and r.status_code == 200
                    and r.json().get("success") is False)
    return {
        "requests": requests, "status_codes": codes, "probes_reported_no_answer": no_answer,
        "elapsed_s": round(elapsed, 2), "health_samples": len(health), "health_errors": polled["errors"],
        "health_ms_median": round(statistics.median(health), 1) if health else None,
        "health_ms_p95": round(sorted(health)[int(len(health) * 0.95) - 1], 1) if len(health) >= 20 else None,
        "health_ms_max": round(max(health), 1) if health else None,
        "health_over_100ms": sum(1 for v in health if v > 100),
        "health_ms_first": round(health[0], 1) if health else None,
        "slow_health_at_s": [at for at, ms in polled["samples"] if ms > 100],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=200)
    ap.add_argument("--probe-timeout-ms", type=int, default=3000)
    args = ap.parse_args()
    silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    silent.bind(("127.0.0.1", 0))  # never read: requests to it get no answer (and no ICMP)
    out: dict[str, Any] = {}
    try:
        for label, ops in (("client limit 256", 256), ("default limits (64 per client)", 64)):
            port = free_port()
            server = subprocess.Popen([sys.executable, "-c", SERVER, str(port), str(ops)])
            try:
                base = f"http://127.0.0.1:{port}"
                asyncio.run(wait_up(base))
                out[label] = asyncio.run(run(base, args.requests, silent.getsockname()[1], args.probe_timeout_ms))
            finally:
                server.terminate()
                server.wait(15)
    finally:
        silent.close()
    print(f"{'run':32} {'codes':24} {'health ms median/p95/max':26} {'first':>6} {'>100ms':>6} {'samples':>7}")
    for label, r in out.items():
        hm = f"{r['health_ms_median']}/{r['health_ms_p95']}/{r['health_ms_max']}"
        print(f"{label:32} {json.dumps(r['status_codes']):24} {hm:26} {r['health_ms_first']:>6} "
              f"{r['health_over_100ms']:>6} {r['health_samples']:>7}")
    path = ROOT / "benchmarks" / "results" / "api_concurrency.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"when": time.time(), "probe_timeout_ms": args.probe_timeout_ms, "runs": out},
                               indent=2))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
