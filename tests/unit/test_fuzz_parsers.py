"""Every parser under atheris (tests/fuzz/harness.py) for a bounded time, seeded from the SIP
corpus: fails on any exception other than the parser's documented one, an input slower than
1 s (-timeout=1) or memory beyond 2 GB (-rss_limit_mb). SKINNYSIP_FUZZ_SECONDS sets the time
per target (default 4 s: 9 targets ≈ 60 s with start-up); scripts/fuzz.sh runs them longer."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

HARNESS = Path(__file__).resolve().parents[1] / "fuzz" / "harness.py"
TARGETS = ["sip_datagram", "sip_stream", "uri", "via", "digest_challenge", "sdp", "sccp_frame",
           "sccp_stream", "rtp_rtcp"]
SECONDS = int(os.environ.get("SKINNYSIP_FUZZ_SECONDS", "4"))


def test_harness_lists_every_target() -> None:
    out = subprocess.run([sys.executable, str(HARNESS), "--list"], capture_output=True, text=True, timeout=60)
    assert out.stdout.split() == TARGETS


@pytest.mark.timeout(SECONDS + 90)
@pytest.mark.parametrize("target", TARGETS)
def test_fuzz_target(target: str, tmp_path: Path) -> None:
    sys.path.insert(0, str(HARNESS.parent))
    try:
        import harness  # noqa: PLC0415 (atheris is only needed here)
    finally:
        sys.path.pop(0)
    seeds = tmp_path / "seeds"
    harness.write_seeds(target, seeds)
    assert any(seeds.iterdir()), "no seeds"
    work = tmp_path / "corpus"
    work.mkdir()
    proc = subprocess.run(
        [sys.executable, str(HARNESS), target, f"-max_total_time={SECONDS}", "-timeout=1",
         "-rss_limit_mb=2048", "-max_len=8192", f"-artifact_prefix={tmp_path}/", str(work), str(seeds)],
        capture_output=True, text=True, timeout=SECONDS + 80, cwd=tmp_path,
    )
    found = sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(("crash-", "timeout-", "oom-", "leak-")))
    tail = "\n".join(line for line in proc.stderr.splitlines() if not line.startswith("INFO: Instrumenting"))[-3000:]
    assert proc.returncode == 0 and not found, f"{target}: exit {proc.returncode}, artifacts {found}\n{tail}"
    assert "Done" in proc.stderr
    inited = next(line for line in proc.stderr.splitlines() if "INITED" in line)
    assert int(inited.split("cov: ")[1].split()[0]) > 6, f"seeds gave no coverage (~4 edges without): {inited}"
