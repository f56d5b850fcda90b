#!/usr/bin/env bash
# make run-fleet: Redis, the rate limit server and Envoy with a global rate limit
# (envoy/fleet.yaml), on their demo ports; Ctrl-C stops all three.
#   redis 127.0.0.1:6380 · meshguard-rls 127.0.0.1:8081 · Envoy 127.0.0.1:10000 (admin :9901)
set -euo pipefail
cd "$(dirname "$0")/.."
envoy=${ENVOY_BIN:-.venv/bin/envoy}
tmp=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$tmp"' EXIT
redis-server --port 6380 --bind 127.0.0.1 --save "" --appendonly no --dir "$tmp" >"$tmp/redis.log" 2>&1 &
for _ in $(seq 50); do (echo PING >/dev/tcp/127.0.0.1/6380) 2>/dev/null && break; sleep 0.1; done
target/release/meshguard-rls --limits envoy/ratelimit/limits.yaml --redis redis://127.0.0.1:6380 --listen 127.0.0.1:8081 &
echo "run-fleet: try  for i in \$(seq 12); do curl -s -o /dev/null -w '%{http_code} ' -H 'x-api-key: demo' http://127.0.0.1:10000/; done; echo"
"$envoy" -c envoy/fleet.yaml --disable-hot-restart --concurrency 2 --log-level info
