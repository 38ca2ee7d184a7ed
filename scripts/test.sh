#!/usr/bin/env bash
# The whole test suite: installs what it needs, then runs pytest. Fails if no test ran.
set -uo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh || { echo "dependency install failed"; exit 1; }
python3 -m pytest -q -p no:cacheprovider "$@"
rc=$?
if [ $rc -eq 5 ]; then
  echo "pytest collected no tests: failing"
  exit 1
fi
exit $rc
