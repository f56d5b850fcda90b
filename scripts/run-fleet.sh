#!/usr/bin/env bash
# make run-fleet: Redis, two replicas of meshguard-rls (the rate limit service and
# the fleet service) and three Envoys with envoy/fleet.yaml, on their demo ports;
# Ctrl-C stops them all.
#   redis 127.0.0.1:6380 · meshguard-rls 127.0.0.1:8081 and :8082
#   Envoy envoy-0 127.0.0.1:10000 (admin :9901), envoy-1 :10010 (:9911), envoy-2 :10020 (:9921)
set -euo pipefail
cd "$(dirname "$0")/.."
envoy=${ENVOY_BIN:-.venv/bin/envoy}
tmp=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$tmp"' EXIT
# Every write on disk before Redis answers: the fleet's records survive a restart.
redis-server --port 6380 --bind 127.0.0.1 --save "" --appendonly yes --appendfsync always \
  --dir "$tmp" >"$tmp/redis.log" 2>&1 &
for _ in $(seq 50); do (echo PING >/dev/tcp/127.0.0.1/6380) 2>/dev/null && break; sleep 0.1; done
for port in 8081 8082; do
  target/release/meshguard-rls --limits envoy/ratelimit/limits.yaml --redis redis://127.0.0.1:6380 \
    --listen "127.0.0.1:$port" &
done
# The same bootstrap three times, each Envoy's own ports moved by 10 (the fleet's
# replicas stay where they are) and its own node id (the name the fleet logs).
for i in 0 1 2; do
  sed -E -e "s/port_value: (9901|1000[0-3])\b/port_value: \1+$((10 * i))/" envoy/fleet.yaml |
    perl -pe 's/port_value: (\d+)\+(\d+)/"port_value: ".($1+$2)/e' >"$tmp/envoy-$i.yaml"
  "$envoy" -c "$tmp/envoy-$i.yaml" --disable-hot-restart --base-id "$((40 + i))" --concurrency 2 \
    --service-node "envoy-$i" --service-cluster meshguard-fleet --log-level info \
    >"$tmp/envoy-$i.log" 2>&1 &
done
for port in 10000 10010 10020; do
  for _ in $(seq 100); do (echo >/dev/tcp/127.0.0.1/$port) 2>/dev/null && break; sleep 0.1; done
done
cat <<'TRY'
run-fleet: three Envoys (10000, 10010, 10020), two fleet service replicas (8081, 8082), Redis (6380).
  for i in $(seq 12); do curl -s -o /dev/null -w '%{http_code} ' -H 'x-api-key: demo' http://127.0.0.1:10000/; done; echo
                    # 10 per second per API key, fleet-wide
  for p in 10010 10020; do oha -z 15s -q 100 --no-tui http://127.0.0.1:$p/checkout >/dev/null & done
  scripts/watch-canary.sh checkout 15 100
                    # a failing canary, load on all three: every Envoy stops at the fleet's verdict
  for p in 10010 10020; do oha -z 35s -q 100 --no-tui http://127.0.0.1:$p/catalog >/dev/null & done
  scripts/watch-canary.sh catalog 35 100
                    # a healthy canary ramps to promoted, every Envoy at the same step
  curl -s http://127.0.0.1:9911/stats | grep -E 'meshguard\.(fleet|canary_weight)'
                    # envoy-1's view: judged by the fleet, its syncs, the weights
TRY
tail -f "$tmp"/envoy-0.log | grep --line-buffered -E 'meshguard: (canary|the fleet)'
