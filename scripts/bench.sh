#!/usr/bin/env bash
# The benchmark command: what a check costs natively (criterion, beside cedar-policy), in wasm,
# and through the gate under wrangler dev (wrk, beside a pass-through Worker and a hand-written
# JavaScript check), how it scales, the wasm's size and start, and the `keyward` CLI's import rate
# (100 000 generated keys through POST /keys/batch), and what rate limits and credits cost
# (bench/limits.mjs). Prints one table and writes it
# to bench-output/results.json. Figures are for comparing runs on one machine, not assertions.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh --tests --bench
scripts/build.sh
mkdir -p bench-output

echo "bench: native (criterion; cedar-policy as the peer)"
cargo bench --quiet --features bench --bench decision
node bench/run.mjs

echo "bench: rate limits and credits (p50, isolate time, one limited key's req/s)"
node bench/limits.mjs

echo "bench: the control plane (batch push, lists at 1 000 / 20 000 / 100 000 keys, propagation)"
node bench/control.mjs 100000 > bench-output/control.json

echo "bench: keyward import of 100 000 keys (the CLI, POST /keys/batch)"
cargo build --quiet --release -p keyward-cli
node bench/import.mjs 100000
