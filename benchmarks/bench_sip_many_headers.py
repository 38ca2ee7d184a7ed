"""Parsing cost stays linear: SIP messages with 10³…10⁵ Via or Contact values.

Run: ``python benchmarks/bench_sip_many_headers.py [--sizes 1000,10000,100000] [--budget 60]``.

The default size caps (64 KiB per message) keep such messages off the wire, but a library
user can raise them (``parse_message(data, max_size=…)``), and a fuzzing run once spent
4–8 s on 10⁵ values. For each size N and shape — N ``Via`` lines, one ``Via`` line with N
comma-separated values, N ``Contact`` lines — the time of: parsing the message
(``parse_message``), what a UA then does with it (``validate_message``: every Via and
Contact parsed; the top Via; 30 header lookups such as ``CSeq``/``Call-ID``/``To``), and
the per-value cost. Linear means the per-value cost at the largest N is within a small
factor of the smallest N's (``scaling`` column: per-value cost at N / at the first N).
The whole run must finish within ``--budget`` seconds (a generous bound, not a speed
claim); exit status 1 otherwise. Writes ``benchmarks/results/sip_many_headers.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

from skinnysip.sip.message import parse_message, validate_message


def message(shape: str, n: int) -> bytes:
    if shape == "via-lines":
        fields = "".join(f"Via: SIP/2.0/UDP 10.0.{i // 250 % 250}.{i % 250}:5060;branch=z9hG4bK{i}\r\n"
                         for i in range(n))
    elif shape == "via-one-line":
        fields = "Via: " + ", ".join(f"SIP/2.0/UDP 10.0.{i // 250 % 250}.{i % 250}:5060;branch=z9hG4bK{i}"
                                     for i in range(n)) + "\r\n"
    else:
        fields = "Via: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK1\r\n" + "".join(
            f"Contact: <sip:u{i}@10.0.{i // 250 % 250}.{i % 250}:5060>;expires=60\r\n" for i in range(n))
    return ("SIP/2.0 200 OK\r\n" + fields + "From: <sip:a@example.com>;tag=1\r\nTo: <sip:a@example.com>;tag=2\r\n"
            "Call-ID: many@example.com\r\nCSeq: 1 REGISTER\r\nContent-Length: 0\r\n\r\n").encode()


def run_once(data: bytes) -> dict[str, float]:
    t0 = time.perf_counter()
    msg = parse_message(data, max_size=len(data) + 1)
    t1 = time.perf_counter()
    validate_message(msg)
    assert msg.top_via is not None
    for _ in range(10):
        msg.headers.get("CSeq"), msg.headers.get("Call-ID"), "To" in msg.headers  # noqa: B018
    t2 = time.perf_counter()
    return {"parse": t1 - t0, "use": t2 - t1, "total": t2 - t0}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="1000,10000,100000")
    parser.add_argument("--budget", type=float, default=60.0, help="seconds the whole run may take")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    started = time.monotonic()
    rows = []
    print(f"{'shape':>13} {'N':>7} {'parse s':>8} {'use s':>8} {'µs/value':>9} {'scaling':>8}")
    for shape in ("via-lines", "via-one-line", "contact-lines"):
        base = None
        for n in sizes:
            data = message(shape, n)
            best = min((run_once(data) for _ in range(3)), key=lambda r: r["total"])
            per_value = best["total"] / n * 1e6
            base = base or per_value
            rows.append({"shape": shape, "n": n, **{k: round(v, 4) for k, v in best.items()},
                         "us_per_value": round(per_value, 3), "scaling": round(per_value / base, 2)})
            print(f"{shape:>13} {n:>7} {best['parse']:>8.3f} {best['use']:>8.3f} {per_value:>9.2f} "
                  f"{per_value / base:>8.2f}")
    took = time.monotonic() - started
    print(f"\nwhole run {took:.1f} s (budget {args.budget:.0f} s); scaling near 1 = linear")
    out = Path(__file__).parent / "results" / "sip_many_headers.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({"benchmark": "sip_many_headers", "rows": rows, "seconds": round(took, 2),
                               "budget": args.budget, "machine": platform.platform(), "cpus": os.cpu_count()},
                              indent=2))
    sys.exit(0 if took <= args.budget else 1)


if __name__ == "__main__":
    main()
