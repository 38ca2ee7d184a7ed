"""G.711 throughput: skinnysip.rtp.g711 (numpy tables) vs CPython's audioop (C), side by side.

Run: ``python benchmarks/bench_g711.py``.  Prints a table and writes
``benchmarks/results/bench_g711.json``.  The ratio is ours / audioop in samples per second
(> 1 means we are faster); absolute numbers depend on the machine.

Two sizes: "bulk" is one call on 1 minute of audio (480 000 samples); "20 ms frames" is one
call per 160-sample frame over the same minute, which is what a media stream does 50 times a
second per direction.  Per frame we pass what a stream has: an int16 array to encode (audioop
gets the same samples as bytes) and the payload bytes to decode (we return an int16 array,
audioop returns bytes).  Ours and audioop are timed alternately, best of ``REPEATS``, so load
from other processes falls on both.  The issue's goal for frames is ratio >= 0.5.

"ours" is what ``skinnysip.rtp.g711`` uses here (``g711.IMPLEMENTATION``: "c" when the C
extension is built, else "numpy"); with the extension, the numpy implementation
(``g711.NUMPY_FUNCTIONS``) is timed as well, in the same run, for comparison.
"""

from __future__ import annotations

import json
import platform
import time
import warnings
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from skinnysip.rtp import g711

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop

SAMPLES = np.random.default_rng(1).integers(-32768, 32768, 160 * 50 * 60, dtype=np.int16)  # 1 min of 20 ms frames
FRAME = 160
REPEATS = 5


def _best_pair(ours, theirs) -> tuple[float, float]:
    best = [float("inf"), float("inf")]
    for _ in range(REPEATS):
        for k, fn in enumerate((ours, theirs)):
            start = time.perf_counter()
            fn()
            best[k] = min(best[k], time.perf_counter() - start)
    return best[0], best[1]


def _cases(g, pcm: bytes, ulaw: bytes, alaw: bytes, frames, pcm_frames, ulaw_frames, alaw_frames) -> dict:
    """Our functions ``g`` (``g.ulaw_encode`` ...) against audioop's, by case name."""
    return {
        "ulaw encode, bulk": (lambda: g.ulaw_encode(SAMPLES), lambda: audioop.lin2ulaw(pcm, 2)),
        "ulaw decode, bulk": (lambda: g.ulaw_decode(ulaw), lambda: audioop.ulaw2lin(ulaw, 2)),
        "alaw encode, bulk": (lambda: g.alaw_encode(SAMPLES), lambda: audioop.lin2alaw(pcm, 2)),
        "alaw decode, bulk": (lambda: g.alaw_decode(alaw), lambda: audioop.alaw2lin(alaw, 2)),
        "ulaw encode, 20 ms frames": (lambda: [g.ulaw_encode(f) for f in frames],
                                      lambda: [audioop.lin2ulaw(f, 2) for f in pcm_frames]),
        "ulaw decode, 20 ms frames": (lambda: [g.ulaw_decode(f) for f in ulaw_frames],
                                      lambda: [audioop.ulaw2lin(f, 2) for f in ulaw_frames]),
        "alaw encode, 20 ms frames": (lambda: [g.alaw_encode(f) for f in frames],
                                      lambda: [audioop.lin2alaw(f, 2) for f in pcm_frames]),
        "alaw decode, 20 ms frames": (lambda: [g.alaw_decode(f) for f in alaw_frames],
                                      lambda: [audioop.alaw2lin(f, 2) for f in alaw_frames]),
        "encode(pt=0), 20 ms frames": (lambda: [g.encode(0, f) for f in frames],
                                       lambda: [audioop.lin2ulaw(f, 2) for f in pcm_frames]),
        "decode(pt=0), 20 ms frames": (lambda: [g.decode(0, f) for f in ulaw_frames],
                                       lambda: [audioop.ulaw2lin(f, 2) for f in ulaw_frames]),
    }


def main() -> None:
    pcm = SAMPLES.tobytes()
    ulaw = audioop.lin2ulaw(pcm, 2)
    alaw = audioop.lin2alaw(pcm, 2)
    frames = [SAMPLES[i:i + FRAME] for i in range(0, len(SAMPLES), FRAME)]
    pcm_frames = [f.tobytes() for f in frames]
    ulaw_frames = [ulaw[i:i + FRAME] for i in range(0, len(ulaw), FRAME)]
    alaw_frames = [alaw[i:i + FRAME] for i in range(0, len(alaw), FRAME)]
    implementations = {g711.IMPLEMENTATION: g711}
    if g711.IMPLEMENTATION != "numpy":
        implementations["numpy"] = SimpleNamespace(**g711.NUMPY_FUNCTIONS)
    rows = []
    for impl, functions in implementations.items():
        cases = _cases(functions, pcm, ulaw, alaw, frames, pcm_frames, ulaw_frames, alaw_frames)
        for name, (ours, theirs) in cases.items():
            t_ours, t_theirs = _best_pair(ours, theirs)
            calls = 1 if "bulk" in name else len(frames)
            rows.append({"implementation": impl, "case": name, "samples": len(SAMPLES),
                         "ours_msps": len(SAMPLES) / t_ours / 1e6, "audioop_msps": len(SAMPLES) / t_theirs / 1e6,
                         "ratio": t_theirs / t_ours, "ours_us_per_call": t_ours / calls * 1e6,
                         "audioop_us_per_call": t_theirs / calls * 1e6})
    print(f"skinnysip.rtp.g711.IMPLEMENTATION = {g711.IMPLEMENTATION!r}")
    print(f"{'impl':6} {'case':28} {'ours Msamples/s':>16} {'audioop Msamples/s':>19} {'ours µs/call':>13} "
          f"{'audioop µs/call':>16} {'ratio':>7}")
    for r in rows:
        print(f"{r['implementation']:6} {r['case']:28} {r['ours_msps']:16.1f} {r['audioop_msps']:19.1f} "
              f"{r['ours_us_per_call']:13.3f} {r['audioop_us_per_call']:16.3f} {r['ratio']:7.2f}")
    frame_ratios = [r["ratio"] for r in rows if r["implementation"] == g711.IMPLEMENTATION and "frames" in r["case"]]
    print(f"per-frame ratio ({g711.IMPLEMENTATION}): lowest {min(frame_ratios):.2f} (goal >= 0.5)")
    out = Path(__file__).parent / "results" / "bench_g711.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"python": platform.python_version(), "numpy": np.__version__,
                               "implementation": g711.IMPLEMENTATION, "rows": rows}, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
