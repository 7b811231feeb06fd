#!/usr/bin/env bash
# The benchmark command: what a check costs natively (criterion, beside cedar-policy), in wasm,
# and through the gate under wrangler dev (wrk, beside a pass-through Worker and a hand-written
# JavaScript check), how it scales, the wasm's size and start, and the `keyward` CLI's import rate
# (100 000 generated keys through POST /keys/batch), what rate limits and credits cost
# (bench/limits.mjs), and what distance to the control plane and Limiters adds, measured
# (bench/distance.mjs) and simulated for a worldwide fleet (bench/distance-sim.mjs), and a new isolate's time to its
# first answer (bench/first-answer.mjs). Prints one table and writes it
# to bench-output/results.json. Figures are for comparing runs on one machine, not assertions.
#
#   scripts/bench.sh [--table FILE]
#
# --table FILE (or BENCH_TABLE=FILE) also writes the table as Markdown, headed by the date, the
# commit and the command, for docs/benchmarks.md (e.g. `scripts/bench.sh --table docs/benchmarks-table.md`),
# followed by the headline table the README shows (bench/summary.mjs, printed at the end either way).
set -euo pipefail
while [ $# -gt 0 ]; do
  case "$1" in
    --table) [ $# -ge 2 ] || { echo "bench: --table needs a file name" >&2; exit 2; }; BENCH_TABLE="$2"; shift 2 ;;
    --table=*) BENCH_TABLE="${1#--table=}"; shift ;;
    *) echo "bench: unknown argument $1 (usage: scripts/bench.sh [--table FILE])" >&2; exit 2 ;;
  esac
done
if [ -n "${BENCH_TABLE:-}" ]; then
  case "$BENCH_TABLE" in /*) ;; *) BENCH_TABLE="$PWD/$BENCH_TABLE" ;; esac
  export BENCH_TABLE
fi
cd "$(dirname "$0")/.."

scripts/setup.sh --tests --bench
scripts/build.sh
mkdir -p bench-output

echo "bench: native (criterion; cedar-policy as the peer)"
cargo bench --quiet --features bench --bench decision
node bench/run.mjs

echo "bench: rate limits and credits (p50, isolate time, one limited key's req/s)"
node bench/limits.mjs

echo "bench: distance (KEYWARD_TEST_REMOTE_DELAY_MS=150 vs 0: busy, limited, idle isolates)"
node bench/distance.mjs

echo "bench: distance, simulated (300 locations x 20 isolates, old design vs new)"
node bench/distance-sim.mjs

echo "bench: the control plane (batch push, lists at 1 000 / 20 000 / 100 000 keys, propagation)"
node bench/control.mjs 100000 > bench-output/control.json

echo "bench: keyward import of 100 000 keys (the CLI, POST /keys/batch)"
cargo build --quiet --release -p keyward-cli
node bench/import.mjs 100000

echo "bench: a new isolate's time to its first answer (wrangler dev started afresh, beside a pass-through and the JS check)"
node bench/first-answer.mjs > /dev/null

echo "bench: the headline figures (bench/summary.mjs: the README's table)"
node bench/summary.mjs
