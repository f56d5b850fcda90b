#!/usr/bin/env bash
# Sends load to a demo route (make run) with oha and prints its canary's
# effective weight and state twice a second, so the rollback (route checkout) or
# the ramp (route catalog) can be watched as it happens.
#
#   scripts/watch-canary.sh checkout        # 400 req/s for 15 s: the weight falls to 0
#   scripts/watch-canary.sh catalog 60 300  # 300 req/s for 60 s: 500 -> 2500 -> 5000 -> 10000
#
# ADMIN / LISTENER override the demo's 127.0.0.1:9901 / 127.0.0.1:10000.
set -euo pipefail
route=${1:-checkout}
seconds=${2:-15}
rate=${3:-400}
admin=${ADMIN:-127.0.0.1:9901}
listener=${LISTENER:-127.0.0.1:10000}
oha=$(command -v oha || echo "$HOME/.cargo/bin/oha")
[ -x "$oha" ] || { echo "oha not found: run make setup" >&2; exit 2; }
curl -sf "http://$admin/ready" >/dev/null || { echo "no Envoy admin at $admin: start the demo with make run" >&2; exit 2; }

"$oha" -z "${seconds}s" -q "$rate" -c 8 --no-tui "http://$listener/$route" >/dev/null &
load=$!
trap 'kill "$load" 2>/dev/null || true' EXIT

start=$(date +%s%N)
last=""
while kill -0 "$load" 2>/dev/null; do
  stats=$(curl -s "http://$admin/stats?filter=meshguard\\.canary_(weight|state)\\.route\\.$route\\.variant\\.canary")
  weight=$(sed -n 's/.*canary_weight\.route\.[^.]*\.variant\.canary: //p' <<<"$stats")
  state=$(sed -n 's/.*canary_state\.route\.[^.]*\.variant\.canary\.state\.\([a-z_]*\): 1$/\1/p' <<<"$stats")
  now=$(date +%s%N)
  line=$(printf "canary weight %5s bp  %s" "${weight:-?}" "${state:-?}")
  if [ "$line" != "$last" ]; then
    printf "%6.1f s  %s\n" "$(( (now - start) / 1000000 ))e-3" "$line"
    last=$line
  fi
  sleep 0.5
done
wait "$load" 2>/dev/null || true
echo "done: $(curl -s "http://$admin/stats?filter=meshguard\\.requests_total\\.route\\.$route\\.variant\\.canary" | awk -F': ' '{s+=$2} END {print s+0}') requests reached the canary"
