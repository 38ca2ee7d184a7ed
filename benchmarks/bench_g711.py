"""G.711 throughput: skinnysip.rtp.g711 (numpy tables) vs CPython's audioop (C), side by side.

Run: ``python benchmarks/bench_g711.py``.  Prints a table and writes
``benchmarks/results/bench_g711.json``.  The ratio is ours / audioop in samples per second
(> 1 means we are faster); absolute numbers depend on the machine.
"""

from __future__ import annotations

import json
import platform
import time
import warnings
from pathlib import Path

import numpy as np

from skinnysip.rtp import g711

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop

SAMPLES = np.random.default_rng(1).integers(-32768, 32768, 160 * 50 * 60, dtype=np.int16)  # 1 min of 20 ms frames
FRAME = 160
REPEATS = 5


def _best(fn) -> float:
    best = float("inf")
    for _ in range(REPEATS):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    pcm = SAMPLES.tobytes()
    ulaw = audioop.lin2ulaw(pcm, 2)
    alaw = audioop.lin2alaw(pcm, 2)
    frames = [SAMPLES[i:i + FRAME] for i in range(0, len(SAMPLES), FRAME)]
    pcm_frames = [f.tobytes() for f in frames]
    ulaw_frames = [ulaw[i:i + FRAME] for i in range(0, len(ulaw), FRAME)]
    cases = {
        "ulaw encode, bulk": (lambda: g711.ulaw_encode(SAMPLES), lambda: audioop.lin2ulaw(pcm, 2)),
        "ulaw decode, bulk": (lambda: g711.ulaw_decode(ulaw), lambda: audioop.ulaw2lin(ulaw, 2)),
        "alaw encode, bulk": (lambda: g711.alaw_encode(SAMPLES), lambda: audioop.lin2alaw(pcm, 2)),
        "alaw decode, bulk": (lambda: g711.alaw_decode(alaw), lambda: audioop.alaw2lin(alaw, 2)),
        "ulaw encode, 20 ms frames": (lambda: [g711.ulaw_encode(f) for f in frames],
                                      lambda: [audioop.lin2ulaw(f, 2) for f in pcm_frames]),
        "ulaw decode, 20 ms frames": (lambda: [g711.ulaw_decode(f) for f in ulaw_frames],
                                      lambda: [audioop.ulaw2lin(f, 2) for f in ulaw_frames]),
    }
    rows = []
    for name, (ours, theirs) in cases.items():
        t_ours, t_theirs = _best(ours), _best(theirs)
        rows.append({"case": name, "samples": len(SAMPLES), "ours_msps": len(SAMPLES) / t_ours / 1e6,
                     "audioop_msps": len(SAMPLES) / t_theirs / 1e6, "ratio": t_theirs / t_ours})
    print(f"{'case':28} {'ours Msamples/s':>16} {'audioop Msamples/s':>19} {'ratio':>7}")
    for r in rows:
        print(f"{r['case']:28} {r['ours_msps']:16.1f} {r['audioop_msps']:19.1f} {r['ratio']:7.2f}")
    out = Path(__file__).parent / "results" / "bench_g711.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"python": platform.python_version(), "numpy": np.__version__, "rows": rows}, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
