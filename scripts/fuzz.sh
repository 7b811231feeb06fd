#!/usr/bin/env bash
# Coverage-guided fuzzing of every parser that sees untrusted input (fuzz/fuzz_targets/), one
# target after another, each for SECONDS (default 300), then a table of executions and crashes.
#
#   scripts/fuzz.sh [SECONDS] [TARGET...]     e.g. scripts/fuzz.sh 30 body_event ip
#
# How, on a machine with only stable Rust: cargo-fuzz (libFuzzer, built from source by the
# libfuzzer-sys crate, and AddressSanitizer) needs nightly-only compiler flags (-Zsanitizer,
# sanitizer coverage); RUSTC_BOOTSTRAP=1 lets the stable compiler accept them. Targets are built
# with optimizations and debug assertions (integer overflow panics too). The corpus grows in
# fuzz/corpus/TARGET (not committed), seeded from the small committed fuzz/seeds/TARGET, with
# token dictionaries from fuzz/dicts/. A crash leaves its input in fuzz/artifacts/TARGET/ and its
# log in fuzz/logs/TARGET.log; replay it with
# `RUSTC_BOOTSTRAP=1 cargo fuzz run -O --debug-assertions TARGET fuzz/artifacts/TARGET/FILE`.
# Exits non-zero if any target crashed. Not part of scripts/test.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
export RUSTC_BOOTSTRAP=1

seconds=${1:-300}
shift || true
case $seconds in ''|*[!0-9]*) echo "usage: scripts/fuzz.sh [SECONDS] [TARGET...]" >&2; exit 2 ;; esac

if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "fuzz: installing cargo-fuzz 0.13.2 (a cold build takes a few minutes)"
  cargo install cargo-fuzz --version 0.13.2
fi

if [ $# -gt 0 ]; then targets=("$@"); else mapfile -t targets < <(cargo fuzz list); fi

# Logs live beside the corpus (not in test-output/, which scripts/test.sh clears).
mkdir -p fuzz/logs
echo "fuzz: building the targets"
cargo fuzz build -O --debug-assertions >fuzz/logs/build.log 2>&1 || { cat fuzz/logs/build.log; exit 1; }
# The binaries are run directly from here on, so a change to the sources during a long run
# cannot rebuild them halfway.
bin="fuzz/target/$(rustc -vV | sed -n 's/^host: //p')/release"

summary=()
failed=0
for target in "${targets[@]}"; do
  mkdir -p "fuzz/corpus/$target" "fuzz/seeds/$target" "fuzz/artifacts/$target"
  log="fuzz/logs/$target.log"
  echo "fuzz: $target for ${seconds} s"
  start=$(date +%s)
  status=0
  dict=()
  case $target in
    record|stored_record|policy|body_event|attributes|route_path) dict=(-dict=fuzz/dicts/json.dict) ;;
    credential|basic|key|method_override) dict=(-dict=fuzz/dicts/credential.dict) ;;
    ip) dict=(-dict=fuzz/dicts/ip.dict) ;;
  esac
  "$bin/$target" "${dict[@]}" -artifact_prefix="fuzz/artifacts/$target/" -max_total_time="$seconds" -timeout=10 \
    -rss_limit_mb=1024 -print_final_stats=1 "fuzz/corpus/$target" "fuzz/seeds/$target" >"$log" 2>&1 || status=$?
  took=$(( $(date +%s) - start ))
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  cov=$(grep -oE 'cov: [0-9]+' "$log" | tail -1 | cut -d' ' -f2 || true)
  corpus=$(find "fuzz/corpus/$target" -type f | wc -l)
  if [ "$status" -eq 0 ]; then
    result="ok, 0 crashes"
  else
    failed=1
    artifact=$(grep -oE 'fuzz/artifacts/[^ ]+' "$log" | tail -1 || true)
    result="CRASH (exit $status) ${artifact:-see $log}"
  fi
  summary+=("$(printf '%-14s %6s s %12s %8s %8s   %s' "$target" "$took" "${execs:-?}" "${cov:-?}" "$corpus" "$result")")
  echo "fuzz: $target: ${execs:-?} executions in ${took} s: $result"
done

echo
printf '%-14s %8s %12s %8s %8s   %s\n' target time executions coverage corpus result
printf '%s\n' "${summary[@]}"
exit "$failed"
