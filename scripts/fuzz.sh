#!/usr/bin/env bash
# Fuzz every parser with atheris for longer than the test command does:
#   scripts/fuzz.sh [SECONDS_PER_TARGET (default 600)] [TARGET...]
# Corpora grow in fuzz-corpus/<target>/ (seeded from tests/data/sip-corpus); crashes, timeouts
# (> 1 s per input) and out-of-memory inputs are written to fuzz-artifacts/ and fail the run.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-600}"; shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || mapfile -t targets < <(python3 tests/fuzz/harness.py --list)
mkdir -p fuzz-artifacts
status=0
for t in "${targets[@]}"; do
  mkdir -p "fuzz-corpus/$t" "fuzz-corpus/$t-seeds"
  python3 -c "import sys; sys.path.insert(0, 'tests/fuzz'); import harness; harness.write_seeds('$t', __import__('pathlib').Path('fuzz-corpus/$t-seeds'))"
  echo "== $t: ${seconds}s"
  python3 tests/fuzz/harness.py "$t" -max_total_time="$seconds" -timeout=1 -rss_limit_mb=2048 -max_len=8192 \
    -artifact_prefix="fuzz-artifacts/$t-" "fuzz-corpus/$t" "fuzz-corpus/$t-seeds" 2>&1 \
    | grep -v '^INFO: Instrumenting' | tail -5 || status=1
done
if ls fuzz-artifacts/* >/dev/null 2>&1; then echo "findings in fuzz-artifacts/"; status=1; fi
exit $status
