#!/usr/bin/env bash
# Refreshes the vendored RustSec advisories (.ci/advisory-db/) that `.ci/run` checks the
# dependency graph against: these machines cannot reach GitHub, where the database lives.
#
#   bash .ci/update-advisory-db.sh <a clone of https://github.com/rustsec/advisory-db>
#
# It keeps the advisories of the crates named in Cargo.lock, and records every crate name it
# looked for (crates.txt) and the database's commit and date (SNAPSHOT). `.ci/run` refuses to
# pass when Cargo.lock names a crate this snapshot did not look for: run this script again.
set -euo pipefail
src="${1:?usage: $0 <advisory-db clone (a git directory or work tree)>}"
root="$(cd "$(dirname "$0")/.." && pwd)"
out="$root/.ci/advisory-db"
rm -rf "$out"
mkdir -p "$out/crates"
grep '^name = ' "$root/Cargo.lock" | sed 's/name = "\(.*\)"/\1/' | sort -u > "$out/crates.txt"
while read -r c; do
  files=$(git -C "$src" ls-tree --name-only HEAD "crates/$c/" || true)
  for f in $files; do
    mkdir -p "$out/crates/$c"
    git -C "$src" show "HEAD:$f" > "$out/$f"
  done
done < "$out/crates.txt"
git -C "$src" log -1 --format='commit %H%ndate %cI' > "$out/SNAPSHOT"
echo "kept $(find "$out/crates" -name '*.md' | wc -l) advisories for $(wc -l < "$out/crates.txt") crates; $(tr '\n' ' ' < "$out/SNAPSHOT")"
