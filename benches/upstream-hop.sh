#!/usr/bin/env bash
# What the extra hop of pull-through costs on the miss path: every request a new key
# (a unique query on one 10 KiB object), through one edge to
#   A. an origin that holds the object in memory (edge → origin over QUIC), and
#   B. an origin that pulls it from an HTTP server (edge → origin → nginx, HTTP/1.1).
# Same run, same pinning: wrk on CPU 0; edge, origin and nginx on CPU 1 (one tokio worker
# each, one nginx worker). Medians of RUNS runs of SECONDS each.
#
# Usage: bash benches/upstream-hop.sh [seconds per run, default 10] [runs, default 3]
# Installs nginx and wrk from Debian if missing (needs root, as on the project machines).
set -euo pipefail
cd "$(dirname "$0")/.."
DUR="${1:-10}"; RUNS="${2:-3}"
for pkg in nginx wrk; do
  command -v "$pkg" >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq "$pkg" >/dev/null; }
done
cargo build --release -q --bin shoal
SHOAL="$PWD/target/release/shoal"
W="$(mktemp -d /dev/shm/shoal-hop.XXXXXX)"
cleanup() { kill $(jobs -p) 2>/dev/null || true; nginx -c "$W/nginx.conf" -p "$W" -s stop 2>/dev/null || true; rm -rf "$W"; }
trap cleanup EXIT
mkdir -p "$W/content" "$W/logs"
chmod 755 "$W" "$W/content"
head -c 10240 /dev/urandom > "$W/content/obj.bin"

cat > "$W/nginx.conf" <<NGINX
worker_processes 1;
worker_cpu_affinity 10;
pid $W/nginx.pid;
error_log $W/logs/nginx-error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 1000000;
  server { listen 127.0.0.1:18182; root $W/content; add_header Cache-Control "public, max-age=3600"; }
}
NGINX
nginx -c "$W/nginx.conf" -p "$W"

# Unique query per request: each one a miss at the edge, the same object at the origin.
cat > "$W/unique.lua" <<'LUA'
local n = 0
request = function()
  n = n + 1
  return wrk.format("GET", "/obj.bin?n=" .. n .. "-" .. math.random(1e9))
end
LUA

start() { # name, origin args...
  local name="$1"; shift
  SHOAL_ADMIN_TOKEN=hop RUST_LOG=warn TOKIO_WORKER_THREADS=1 taskset -c 1 "$SHOAL" origin --quic-listen 127.0.0.1:14533 \
    --admin-listen 127.0.0.1:19190 --cert-out "$W/$name.pem" "$@" >"$W/logs/$name-origin.log" 2>&1 &
  for _ in $(seq 50); do [ -s "$W/$name.pem" ] && break; sleep 0.1; done
  RUST_LOG=warn TOKIO_WORKER_THREADS=1 taskset -c 1 "$SHOAL" edge --listen 127.0.0.1:18180 \
    --admin-listen 127.0.0.1:19191 --node-id hop-1 --origin 127.0.0.1:14533 \
    --origin-cert "$W/$name.pem" --capacity 256MiB >"$W/logs/$name-edge.log" 2>&1 &
  for _ in $(seq 100); do curl -sf http://127.0.0.1:19191/readyz >/dev/null && break; sleep 0.1; done
}
stop() { kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null || true; }

run() { # -> "rps p50_ms p99_ms"
  local out
  out=$(taskset -c 0 wrk -t1 -c32 -d"${DUR}s" --latency -s "$W/unique.lua" http://127.0.0.1:18180)
  echo "$(echo "$out" | awk '/Requests\/sec/ {print $2}') $(ms "$(echo "$out" | awk '$1=="50%" {print $2}')") $(ms "$(echo "$out" | awk '$1=="99%" {print $2}')")"
}
ms() { awk -v v="$1" 'BEGIN { n=v; gsub(/[a-z]+/,"",n); if (v ~ /us$/) n/=1000; else if (v ~ /ms$/) n=n; else if (v ~ /s$/) n*=1000; printf "%.2f", n }'; }
median() { sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

declare -A rps p50 p99
for setup in held upstream; do
  if [ "$setup" = held ]; then
    start held
    curl -sf -X PUT -H 'Authorization: Bearer hop' --data-binary @"$W/content/obj.bin" http://127.0.0.1:19190/objects/obj.bin >/dev/null
  else
    start upstream --upstream http://127.0.0.1:18182
  fi
  curl -sf -o /dev/null "http://127.0.0.1:18180/obj.bin?warm=1" || { echo "$setup: the edge does not serve /obj.bin" >&2; exit 1; }
  echo "$setup: $(curl -sI http://127.0.0.1:18180/obj.bin?check=1 | grep -i '^cache-status' | tr -d '\r')"
  r=(); a=(); b=()
  for _ in $(seq "$RUNS"); do read -r x y z < <(run); r+=("$x"); a+=("$y"); b+=("$z"); done
  rps[$setup]=$(printf '%s\n' "${r[@]}" | median); p50[$setup]=$(printf '%s\n' "${a[@]}" | median); p99[$setup]=$(printf '%s\n' "${b[@]}" | median)
  stop
  nginx -c "$W/nginx.conf" -p "$W" 2>/dev/null || true
done
printf '\n%-34s %10s %8s %8s\n' "miss path, 10 KiB, unique keys" "req/s" "p50 ms" "p99 ms"
printf '%-34s %10.0f %8s %8s\n' "edge → origin (held)" "${rps[held]}" "${p50[held]}" "${p99[held]}"
printf '%-34s %10.0f %8s %8s\n' "edge → origin → nginx upstream" "${rps[upstream]}" "${p50[upstream]}" "${p99[upstream]}"
printf 'pull-through keeps %.0f%% of the held miss rate\n' "$(awk -v a="${rps[upstream]}" -v b="${rps[held]}" 'BEGIN{print 100*a/b}')"
