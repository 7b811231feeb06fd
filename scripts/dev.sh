#!/usr/bin/env bash
# Runs keyward locally: the demo origin on 127.0.0.1:8788, the Worker under `wrangler dev` on
# 127.0.0.1:8787 with KV kept on disk in .wrangler/state, and a fresh demo key printed to try.
# Ctrl-C stops both.
set -euo pipefail
cd "$(dirname "$0")/.."

PORT=${KEYWARD_PORT:-8787}
ORIGIN_PORT=${KEYWARD_ORIGIN_PORT:-8788}

scripts/setup.sh
scripts/build.sh

if [ ! -f .dev.vars ]; then
  echo "ADMIN_TOKEN=kwadmin_$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')" > .dev.vars
  echo "dev: wrote a new admin token to .dev.vars"
fi
ADMIN_TOKEN=$(sed -n 's/^ADMIN_TOKEN=//p' .dev.vars)

pids=()
cleanup() { for p in "${pids[@]}"; do kill -- "-$p" 2>/dev/null || kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT INT TERM

set -m
node tests/support/origin.mjs "$ORIGIN_PORT" &
pids+=($!)
WRANGLER_SEND_METRICS=false node_modules/.bin/wrangler dev --ip 127.0.0.1 --port "$PORT" \
  --persist-to .wrangler/state --var "ORIGIN_URL:http://127.0.0.1:$ORIGIN_PORT" &
pids+=($!)
set +m

node scripts/demo-key.mjs "http://127.0.0.1:$PORT" "$ADMIN_TOKEN"
wait -n "${pids[@]}"
