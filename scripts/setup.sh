#!/usr/bin/env bash
# Installs what building, running and testing keyward needs, and skips whatever is already there
# at the right version, so a second run takes seconds. Only the package registries are reached
# (crates.io, npm, PyPI, Debian): see ../shared/TOOLCHAIN.md for why each step is done this way.
#
#   scripts/setup.sh            the Worker toolchain and npm packages (enough for dev.sh)
#   scripts/setup.sh --tests    also Chromium (browser tests) and schemathesis (API contract test)
#   scripts/setup.sh --bench    also wrk (load generator)
set -euo pipefail
cd "$(dirname "$0")/.."

want_tests=0
want_bench=0
for arg in "$@"; do
  case "$arg" in
    --tests) want_tests=1 ;;
    --bench) want_bench=1 ;;
    *) echo "setup: unknown option $arg" >&2; exit 2 ;;
  esac
done

WORKER_BUILD_VERSION=0.8.7
# The CLI must be exactly the wasm-bindgen version in Cargo.lock.
WASM_BINDGEN_VERSION=$(awk '/^name = "wasm-bindgen"$/ { getline; gsub(/[^0-9.]/, ""); print; exit }' Cargo.lock)
SCHEMATHESIS_VERSION=4.32.5

say() { printf '\033[1msetup:\033[0m %s\n' "$*"; }

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi
}

if ! rustup target list --installed | grep -x wasm32-unknown-unknown >/dev/null; then
  say "adding the wasm32-unknown-unknown target"
  rustup target add wasm32-unknown-unknown
fi

cargo_tool() { # name crate version
  local have
  have=$("$HOME/.cargo/bin/$1" --version 2>/dev/null | awk '{print $NF}' || true)
  if [ "$have" = "$3" ]; then return; fi
  say "installing $2 $3 (a cold build takes a few minutes)"
  cargo install --quiet "$2" --version "$3" --force
}
cargo_tool worker-build worker-build "$WORKER_BUILD_VERSION"
cargo_tool wasm-bindgen wasm-bindgen-cli "$WASM_BINDGEN_VERSION"

# npm ci only when package-lock.json changed since the last install.
lock_sum=$(sha256sum package-lock.json | cut -d' ' -f1)
if [ "$(cat node_modules/.keyward-lock 2>/dev/null)" != "$lock_sum" ]; then
  say "installing npm packages (wrangler, binaryen, playwright-core)"
  npm ci --no-audit --no-fund --loglevel=error
  echo "$lock_sum" > node_modules/.keyward-lock
fi

apt_get() { # packages...
  local missing=()
  for p in "$@"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
  if [ ${#missing[@]} -eq 0 ]; then return; fi
  say "installing ${missing[*]} from Debian"
  as_root apt-get update -qq >/dev/null || true
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

if [ "$want_tests" = 1 ]; then
  apt_get chromium
  if ! python3 -m pip show schemathesis 2>/dev/null | grep -x "Version: $SCHEMATHESIS_VERSION" >/dev/null; then
    say "installing schemathesis $SCHEMATHESIS_VERSION from PyPI"
    python3 -m pip install --quiet --disable-pip-version-check "schemathesis==$SCHEMATHESIS_VERSION"
  fi
fi

if [ "$want_bench" = 1 ]; then
  apt_get wrk
fi

say "ready"
