#!/usr/bin/env bash
# `cargo deny check advisories` against the vendored RustSec snapshot (.ci/advisory-db/,
# refreshed by .ci/update-advisory-db.sh), since these machines cannot reach GitHub.
# cargo-deny reads its database from a git checkout, so the snapshot is committed into a
# throwaway repository dated at the snapshot's own commit date; the staleness limit in the
# generated config says how old a snapshot may be.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
snap="$root/.ci/advisory-db"
missing=$(grep '^name = ' "$root/Cargo.lock" | sed 's/name = "\(.*\)"/\1/' | sort -u | comm -23 - "$snap/crates.txt")
if [ -n "$missing" ]; then
  echo "Cargo.lock names crates the advisory snapshot never looked for: $(echo "$missing" | tr '\n' ' ')" >&2
  echo "refresh it: bash .ci/update-advisory-db.sh <a clone of https://github.com/rustsec/advisory-db>" >&2
  exit 1
fi
date=$(sed -n 's/^date //p' "$snap/SNAPSHOT")
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# cargo-deny's directory name for https://github.com/rustsec/advisory-db (stable across
# its releases; .ci/run pins the version that was checked).
db="$tmp/db/advisory-db-3157b0e258782691"
mkdir -p "$db"
cp -r "$snap/crates" "$db/"
git -C "$db" init -q
git -C "$db" add -A
GIT_AUTHOR_DATE="$date" GIT_COMMITTER_DATE="$date" git -C "$db" \
  -c user.name=snapshot -c user.email=snapshot@shoal.invalid commit -qm "RustSec snapshot $date"
# The project's deny.toml, pointed at the snapshot.
sed -e "s#^\[advisories\]#[advisories]\ndb-path = \"$tmp/db\"\ndb-urls = [\"https://github.com/rustsec/advisory-db\"]\nmaximum-db-staleness = \"P${SHOAL_ADVISORY_MAX_AGE_DAYS:-365}D\"#" \
  "$root/deny.toml" > "$tmp/deny.toml"
cd "$root"
cargo fetch --locked -q
echo "advisories: RustSec snapshot of $date ($(find "$snap/crates" -name '*.md' | wc -l) advisories for our $(wc -l < "$snap/crates.txt") crates)"
cargo deny --offline --log-level error --config "$tmp/deny.toml" check advisories
