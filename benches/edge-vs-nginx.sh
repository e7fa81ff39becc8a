#!/usr/bin/env bash
# Hot-hit throughput of one Shoal edge against nginx's proxy_cache, in the same run.
#
# Fair on 2 cores: the load generator (wrk, open connections, 64 of them) on CPU 0, the
# server under test on CPU 1 (Shoal with one tokio worker; nginx with one worker process).
# nginx is configured equivalently: proxy_cache in tmpfs, access log off, sendfile off, the
# objects cached (warmed) before measuring. Both serve the same three objects from the
# same bytes: 1 KiB, 100 KiB and 2 MiB.
#
# Usage: bash benches/edge-vs-nginx.sh [seconds per run, default 10]
# Installs nginx and wrk from Debian if missing (needs root, as on the project machines).
set -euo pipefail
cd "$(dirname "$0")/.."
DUR="${1:-10}"
for pkg in nginx wrk; do
  command -v "$pkg" >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq "$pkg" >/dev/null; }
done
cargo build --release -q --bin shoal
SHOAL="$PWD/target/release/shoal"
W="$(mktemp -d /dev/shm/shoal-bench.XXXXXX)"
cleanup() { [ -n "${KEEP:-}" ] && return; kill $(jobs -p) 2>/dev/null || true; nginx -c "$W/nginx.conf" -p "$W" -s stop 2>/dev/null || true; rm -rf "$W"; }
trap cleanup EXIT
mkdir -p "$W/content" "$W/cache" "$W/logs"
# nginx workers run as an unprivileged user: let them read the content and write the cache.
chmod 755 "$W" "$W/content"; chmod 777 "$W/cache"
head -c 1024 /dev/urandom > "$W/content/1k.bin"
head -c 102400 /dev/urandom > "$W/content/100k.bin"
head -c 2097152 /dev/urandom > "$W/content/2m.bin"

# --- Shoal: origin (content dir) + one edge pinned to CPU 1 with one worker thread.
"$SHOAL" origin --quic-listen 127.0.0.1:14433 --admin-listen 127.0.0.1:19090 \
  --content-dir "$W/content" --cert-out "$W/origin.pem" >"$W/logs/origin.log" 2>&1 &
for _ in $(seq 50); do [ -s "$W/origin.pem" ] && break; sleep 0.1; done
RUST_LOG=warn TOKIO_WORKER_THREADS=1 taskset -c 1 "$SHOAL" edge --listen 127.0.0.1:18080 \
  --admin-listen 127.0.0.1:19091 --node-id bench-1 --origin 127.0.0.1:14433 \
  --origin-cert "$W/origin.pem" --capacity 64MiB >"$W/logs/edge.log" 2>&1 &
for _ in $(seq 100); do curl -sf http://127.0.0.1:19091/readyz >/dev/null && break; sleep 0.1; done

# --- nginx: origin server block (static files) + proxy_cache server block, one worker on CPU 1.
cat > "$W/nginx.conf" <<NGINX
worker_processes 1;
worker_cpu_affinity 10;
pid $W/nginx.pid;
error_log $W/logs/nginx-error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  sendfile off;
  keepalive_requests 1000000;
  proxy_cache_path $W/cache levels=1:2 keys_zone=shoal:64m max_size=1g inactive=1h use_temp_path=off;
  server { listen 127.0.0.1:18082; root $W/content; add_header Cache-Control "public, max-age=3600"; }
  server {
    listen 127.0.0.1:18081;
    location / {
      proxy_pass http://127.0.0.1:18082;
      proxy_cache shoal;
      proxy_cache_valid 200 1h;
      proxy_http_version 1.1;
      add_header Cache-Status \$upstream_cache_status;
    }
  }
}
NGINX
nginx -c "$W/nginx.conf" -p "$W"

for f in 1k 100k 2m; do
  for port in 18080 18081; do curl -sf -o /dev/null -H 'Host: bench' "http://127.0.0.1:$port/$f.bin"; curl -sf -o /dev/null -H 'Host: bench' "http://127.0.0.1:$port/$f.bin"; done
done
echo "shoal edge: $(curl -sI -H 'Host: bench' http://127.0.0.1:18080/1k.bin | grep -i cache-status | tr -d '\r')"
echo "nginx:      $(curl -sI -H 'Host: bench' http://127.0.0.1:18081/1k.bin | grep -i cache-status | tr -d '\r')"

run() { # port file -> "rps p50_ms p99_ms MiB/s"
  local out
  out=$(taskset -c 0 wrk -t1 -c64 -d"${DUR}s" --latency -H 'Host: bench' "http://127.0.0.1:$1/$2.bin")
  local rps tr p50 p99
  rps=$(echo "$out" | awk '/Requests\/sec/ {print $2}')
  tr=$(echo "$out" | awk '/Transfer\/sec/ {v=$2; u=substr(v,length(v)-1); n=substr(v,1,length(v)-2); if(u=="GB") n*=1024; if(u=="KB") n/=1024; print n}')
  p50=$(echo "$out" | awk '$1=="50%" {print $2}')
  p99=$(echo "$out" | awk '$1=="99%" {print $2}')
  echo "$rps $(ms "$p50") $(ms "$p99") $tr"
}
ms() { awk -v v="$1" 'BEGIN { n=v; gsub(/[a-z]+/,"",n); if (v ~ /us$/) n/=1000; else if (v ~ /ms$/) n=n; else if (v ~ /s$/) n*=1000; printf "%.3f", n }'; }

printf '\n%-6s | %12s %9s %9s %9s | %12s %9s %9s %9s | %7s %7s\n' size "shoal req/s" "p50 ms" "p99 ms" "MiB/s" "nginx req/s" "p50 ms" "p99 ms" "MiB/s" "req x" "MiB x"
for f in 1k 100k 2m; do
  read -r s_rps s50 s99 smib < <(run 18080 "$f")
  read -r n_rps n50 n99 nmib < <(run 18081 "$f")
  printf '%-6s | %12.0f %9s %9s %9.0f | %12.0f %9s %9s %9.0f | %7.2f %7.2f\n' "$f" "$s_rps" "$s50" "$s99" "$smib" "$n_rps" "$n50" "$n99" "$nmib" \
    "$(awk -v a="$s_rps" -v b="$n_rps" 'BEGIN{print a/b}')" "$(awk -v a="$smib" -v b="$nmib" 'BEGIN{print a/b}')"
done
