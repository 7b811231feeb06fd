#!/usr/bin/env bash
# Builds the two wasm artefacts from the one crate:
#   build/            the Worker (worker-build --release: cargo, wasm-bindgen, wasm-opt, esbuild)
#   www/pkg/          the browser core for the console (feature `browser`, wasm-bindgen --target web)
# and prints their sizes. Run scripts/setup.sh first (dev.sh and test.sh do).
set -euo pipefail
cd "$(dirname "$0")/.."

export WASM_BINDGEN_BIN="$HOME/.cargo/bin/wasm-bindgen"
export WASM_OPT_BIN="$PWD/node_modules/.bin/wasm-opt"
export PATH="$HOME/.cargo/bin:$PATH"

echo "build: the Worker (worker-build --release)"
log=$(mktemp)
worker-build --release >"$log" 2>&1 || { cat "$log"; exit 1; }
rm -f "$log"
# worker-build's wasm-opt pass keeps the name section (function names for stack traces); the
# Worker does not need it, and it is a fifth of the file.
# KEYWARD_WASM_NAMES=1 keeps it, so that a CPU profile (bench/profile.mjs) names wasm functions.
if [ -z "${KEYWARD_WASM_NAMES:-}" ]; then node scripts/strip-wasm.mjs build/index_bg.wasm; fi

echo "build: the browser core (www/pkg)"
cargo build --quiet --lib --release --target wasm32-unknown-unknown --no-default-features --features browser
mkdir -p www/pkg
"$WASM_BINDGEN_BIN" --target web --no-typescript --out-dir www/pkg --out-name keyward \
  target/wasm32-unknown-unknown/release/keyward.wasm
"$WASM_OPT_BIN" -O3 --enable-bulk-memory --enable-nontrapping-float-to-int --enable-sign-ext \
  --enable-mutable-globals --enable-reference-types --enable-multivalue \
  www/pkg/keyward_bg.wasm -o www/pkg/keyward_bg.wasm

size() { printf '%8d B raw  %8d B gzip -9   %s\n' "$(stat -c %s "$1")" "$(gzip -9 -c "$1" | wc -c)" "$1"; }
size build/index_bg.wasm
size www/pkg/keyward_bg.wasm
