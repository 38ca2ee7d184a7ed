"""Parse speed of skinnysip's SIP parser on the 40 real captured messages.

Run: ``python benchmarks/bench_sip_parse.py [--rounds N]``. Prints messages/s for
datagram parsing (:func:`parse_message`), stream framing (:class:`StreamParser`, the
whole corpus as one TCP stream) and serialization (``to_bytes``), and writes the numbers
to ``benchmarks/results/sip_parse.json``. No peer program is needed.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

from skinnysip.sip.message import StreamParser, parse_message

ROOT = Path(__file__).resolve().parents[1]
CORPUS = ROOT.parent / "shared" / "sip-corpus" / "real"


def _rate(count: int, seconds: float) -> float:
    return count / seconds if seconds > 0 else float("inf")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rounds", type=int, default=500, help="passes over the corpus (default 500)")
    args = ap.parse_args()
    files = sorted(CORPUS.glob("*.sip"))
    if not files:
        print(f"corpus not found at {CORPUS}", file=sys.stderr)
        return 1
    messages = [f.read_bytes() for f in files]
    parsed = [parse_message(m) for m in messages]
    stream = b"".join(m.to_bytes() for m in parsed)
    n = len(messages) * args.rounds

    t0 = time.perf_counter()
    for _ in range(args.rounds):
        for m in messages:
            parse_message(m)
    t_parse = time.perf_counter() - t0

    t0 = time.perf_counter()
    framed = 0
    for _ in range(args.rounds):
        p = StreamParser()
        for i in range(0, len(stream), 1460):  # one TCP segment's worth per read
            framed += len(p.feed(stream[i:i + 1460]))
    t_stream = time.perf_counter() - t0
    assert framed == n

    t0 = time.perf_counter()
    for _ in range(args.rounds):
        for m in parsed:
            m.to_bytes()
    t_ser = time.perf_counter() - t0

    results = {
        "corpus_messages": len(messages),
        "rounds": args.rounds,
        "parse_message_per_s": round(_rate(n, t_parse)),
        "stream_parser_per_s": round(_rate(n, t_stream)),
        "to_bytes_per_s": round(_rate(n, t_ser)),
        "python": platform.python_version(),
        "machine": platform.machine(),
    }
    print(f"{'operation':<22}{'messages/s':>14}")
    for key in ("parse_message_per_s", "stream_parser_per_s", "to_bytes_per_s"):
        print(f"{key:<22}{results[key]:>14,}")
    out = ROOT / "benchmarks" / "results" / "sip_parse.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"written {out.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
