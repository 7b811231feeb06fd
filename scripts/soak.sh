#!/usr/bin/env bash
# A soak of the built Worker: mixed gate traffic while management churn runs, for MINUTES
# (default 10), with a per-minute table of requests, statuses, p50/p99 and the isolate's memory,
# then the checks (nothing lost, nothing allowed after a revocation was answered, no 5xx).
# See bench/soak.mjs. Light load (SOAK_CONNECTIONS, default 4); not part of scripts/test.sh.
#
#   scripts/soak.sh [MINUTES]
set -euo pipefail
cd "$(dirname "$0")/.."
minutes=${1:-10}
case $minutes in ''|*[!0-9]*) echo "usage: scripts/soak.sh [MINUTES]" >&2; exit 2 ;; esac
if [ ! -f build/worker/shim.mjs ]; then
  echo "soak: no built Worker; run scripts/setup.sh --tests and scripts/build.sh first" >&2
  exit 1
fi
exec node bench/soak.mjs "$minutes"
