"""Every script of ``benchmarks/`` still imports what it uses from the package and the test
peers (``bash benchmarks/run.sh`` stops at the first one that does not): its top level runs,
its ``main`` does not."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
SCRIPTS = sorted(p.name for p in BENCHMARKS.glob("*.py"))


def test_the_benchmarks_are_found() -> None:
    assert "bench_load_register.py" in SCRIPTS and "summary.py" in SCRIPTS


@pytest.mark.timeout(60)
@pytest.mark.parametrize("script", SCRIPTS)
def test_a_benchmark_script_imports(script: str) -> None:
    # as `python benchmarks/SCRIPT` runs it: its own directory first on the path
    code = (f"import runpy, sys; sys.argv = [{script!r}]; sys.path.insert(0, {str(BENCHMARKS)!r}); "
            f"runpy.run_path({str(BENCHMARKS / script)!r}, run_name='imported')")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=50,
                          cwd=BENCHMARKS.parent)
    assert proc.returncode == 0, proc.stderr[-2000:]
