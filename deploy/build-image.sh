#!/usr/bin/env bash
# Builds the one Shoal image (every role: `shoal origin|edge|loadgen|play|probe|…`):
# a statically linked release binary, stripped, in an image FROM scratch (this Docker engine
# can pull no base image), running as a non-root numeric user.
#
#   bash deploy/build-image.sh [tag, default shoal:dev]
set -euo pipefail
tag="${1:-shoal:dev}"
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
# --target keeps crt-static off build scripts and proc-macros (they must stay dynamic).
RUSTFLAGS='-C target-feature=+crt-static' cargo build --release --locked \
  --target x86_64-unknown-linux-gnu --bin shoal
ctx="$(mktemp -d)"
trap 'rm -rf "$ctx"' EXIT
cp target/x86_64-unknown-linux-gnu/release/shoal "$ctx/shoal"
strip "$ctx/shoal"
if ldd "$ctx/shoal" 2>&1 | grep -q '=>'; then
  echo "shoal is not statically linked:" >&2
  ldd "$ctx/shoal" >&2
  exit 1
fi
mkdir -p "$ctx/data"
cp deploy/Dockerfile "$ctx/"
docker build -q -t "$tag" "$ctx" >"$ctx/build.log" 2>&1 || { cat "$ctx/build.log" >&2; exit 1; }
echo "$tag: $(docker image inspect -f '{{.Size}}' "$tag" | awk '{printf "%.1f MB", $1 / 1e6}')"
