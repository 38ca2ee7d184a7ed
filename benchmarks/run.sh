#!/usr/bin/env bash
# Runs every benchmark, one after the other (they compete for 2 cores otherwise).
# Each prints a table of rates and ratios against a peer and writes JSON to benchmarks/results/.
# Needs the test dependencies (bash scripts/install-deps.sh) for Kamailio, sipsak and SIPp.
# bench_sip_uas.py (SIPp load against our UAS and Kamailio) takes a few minutes.
# bench_media_calls.py (up to 300 RTP streams in one process, then SIPp -rtp_echo) about 2 minutes;
# bench_g711.py (per 20 ms frame and bulk, against audioop) a few seconds.
# bench_sip_parse_peers.py creates benchmarks/.venv with pyVoIP, sipmessage and sippy on first run.
# bench_load_register.py (skinnysip load on uvloop and on asyncio, SIPp and the Python floor: REGISTER with digest,
# rising rates) ~15 minutes;
# bench_load_calls.py (concurrent calls through skinnysip load, SIPp -rtp_echo then skinnysip load answer as the
# far end) ~4 minutes.
# bench_register_path.py (load register's REGISTER path without the network: µs and calls per registration in our
# code) a few seconds.
# At the end benchmarks/summary.py prints one table of the ratios (results/summary.json).
set -euo pipefail
cd "$(dirname "$0")/.."
command -v sipsak >/dev/null 2>&1 || { echo "sipsak missing: apt-get install sipsak"; }
command -v sipp >/dev/null 2>&1 || { echo "sipp missing: apt-get install sip-tester"; }
for b in benchmarks/bench_*.py; do
  echo "== $b"
  python3 "$b" "$@"
done
echo "== summary"
python3 benchmarks/summary.py
