#!/usr/bin/env bash
# Runs every test: the core's and the CLI's unit, property and known-answer tests (cargo), the
# built Worker end to end under `wrangler dev` with a real origin (node --test tests/e2e), the
# `keyward` CLI against it (tests/cli), the management API against its OpenAPI document
# (schemathesis), and the console in headless Chromium (tests/browser). Installs what is missing
# first.
set -euo pipefail
cd "$(dirname "$0")/.."
start=$(date +%s)

scripts/setup.sh --tests
scripts/build.sh
echo "build: the CLI (cargo build --release -p keyward-cli)"
cargo build --quiet --release -p keyward-cli
rm -rf test-output && mkdir -p test-output

echo "test: cargo test (unit, property, known-answer vectors; the core and the CLI)"
cargo test --quiet --workspace --all-targets

echo "test: clippy, native and wasm32"
cargo clippy --quiet --workspace --all-targets -- -D warnings
cargo clippy --quiet --lib --target wasm32-unknown-unknown -- -D warnings
cargo clippy --quiet --lib --target wasm32-unknown-unknown --no-default-features --features browser -- -D warnings

echo "test: the fuzz targets still build against the core (they run in scripts/fuzz.sh, not here)"
RUSTC_BOOTSTRAP=1 cargo check --quiet --manifest-path fuzz/Cargo.toml --bins

echo "test: the configuration deploys (wrangler deploy --dry-run)"
WRANGLER_SEND_METRICS=false npx wrangler deploy --dry-run --outdir test-output/dry-run >test-output/dry-run.log 2>&1 \
  || { cat test-output/dry-run.log; exit 1; }

echo "test: the README's and docs/'s relative links resolve (tests/docs)"
node --test tests/docs/

echo "test: the Worker under wrangler dev (tests/e2e)"
node --test --test-concurrency=1 tests/e2e/

echo "test: the keyward CLI against the Worker under wrangler dev (tests/cli)"
node --test --test-concurrency=1 tests/cli/

echo "test: the management API against its OpenAPI document (schemathesis)"
node tests/contract/schemathesis.mjs

if [ -n "$(ls tests/browser/*.test.mjs 2>/dev/null)" ]; then
  echo "test: the console in headless Chromium (tests/browser)"
  node --test --test-concurrency=1 tests/browser/
fi

echo "test: all passed in $(( $(date +%s) - start )) s"
