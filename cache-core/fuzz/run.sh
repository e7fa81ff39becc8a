#!/usr/bin/env bash
# Runs every fuzz target for N seconds (default 10) and fails on the first crash.
# Needs cargo-fuzz (`cargo install cargo-fuzz --locked`); RUSTC_BOOTSTRAP=1 lets the stable
# toolchain build with the sanitizer flags cargo-fuzz uses, so no nightly is needed.
set -uo pipefail
secs="${1:-10}"
cd "$(dirname "$0")"
export RUSTC_BOOTSTRAP=1
log="$(mktemp)"
for t in wire_decode range cache_control cache_key signed_url cmcd admin_path purge_body playlist; do
  if ! cargo fuzz run "$t" -- -max_total_time="$secs" -rss_limit_mb=2048 >"$log" 2>&1; then
    tail -40 "$log" >&2
    echo "fuzz target $t failed; a crashing input is under cache-core/fuzz/artifacts/$t" >&2
    exit 1
  fi
  echo "fuzz $t: $(grep -Eo 'Done [0-9]+ runs in [0-9]+ second' "$log" | tail -1)s, no crash"
done
rm -f "$log"
