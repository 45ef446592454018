#!/usr/bin/env bash
# Three replicas of chatd on one PostgreSQL database, first with the fan-out over NOTIFY,
# then over NATS, measured in one run:
#   - SendMessage across the three at once (one `chatd bench` per replica, with Check),
#   - delivery latency to 2,000 watchers on replica 2 of messages sent through replica 1,
#   - and to WINDOWS (10,000) open chat windows (WatchThread) on replica 2.
#
#   tests/bench/replicas.sh DATABASE [NATS_URL] [-- chatd bench dataset flags]
#   tests/bench/replicas.sh chatd_bench nats://127.0.0.1:4222 -- --users 20000 --threads 200000 --messages 2000000
#
# CHATD_BIN picks another binary (default ./target/release/chatd).
# DATABASE must be seeded with `chatd bench --seed` (the same dataset flags). Build first:
# cargo build --release.
set -euo pipefail
cd "$(dirname "$0")/../.."
database=${1:?usage: tests/bench/replicas.sh DATABASE [NATS_URL] [-- dataset flags]}
nats=${2:-nats://127.0.0.1:4222}
shift $(( $# >= 2 ? 2 : 1 ))
[ "${1:-}" = "--" ] && shift
dataset=("$@")
chatd=${CHATD_BIN:-./target/release/chatd}
windows=${WINDOWS:-10000}
export DATABASE_URL=postgres://postgres@127.0.0.1:5432/$database
export CHATD_JWT_SECRET=${CHATD_JWT_SECRET:-bench-secret-bench-secret-bench-secret}
work=$(mktemp -d)
replicas=()
stop_replicas() {
  for pid in "${replicas[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${replicas[@]}"; do wait "$pid" 2>/dev/null || true; done
  replicas=()
}
trap 'stop_replicas; rm -rf "$work"' EXIT

start_replicas() {
  for i in 1 2 3; do
    "$chatd" serve --listen "127.0.0.1:5108$i" --http off --user-send-rate 0 \
      --db-pool-size 8 "$@" >"$work/replica$i.log" 2>&1 &
    replicas+=($!)
  done
  for i in 1 2 3; do
    for _ in $(seq 1 100); do
      grep -q "fan-out connected\|listening for summary changes" "$work/replica$i.log" && break
      sleep 0.1
    done
  done
}

measure() {
  local label=$1
  echo "== $label: SendMessage through three replicas at once (21 clients each, 10 s)"
  local benches=()
  for i in 1 2 3; do
    "$chatd" bench "${dataset[@]}" --rpcs check,send-message --concurrency 21 --duration 10s \
      --target "http://127.0.0.1:5108$i" >"$work/send$i.txt" 2>&1 &
    benches+=($!)
  done
  for pid in "${benches[@]}"; do wait "$pid" || true; done
  total=0
  for i in 1 2 3; do
    line=$(grep -E '^SendMessage ' "$work/send$i.txt" || true)
    check=$(grep -E '^Health/Check ' "$work/send$i.txt" || true)
    echo "replica $i: ${line:-no SendMessage line (see below)}"
    [ -n "$line" ] || cat "$work/send$i.txt"
    echo "           ${check}"
    rps=$(awk '{print $2}' <<<"$line")
    total=$(( total + ${rps:-0} ))
  done
  echo "SendMessage across the three: $total per second"
  echo "== $label: 2000 watchers on replica 2, 200 messages/s sent through replica 1"
  "$chatd" bench "${dataset[@]}" --watchers 2000 --send-rate 200 \
    --target http://127.0.0.1:51082 --send-target http://127.0.0.1:51081 2>&1 | tail -n 6
  echo "== $label: ${windows} open chat windows on replica 2, 200 messages/s sent through replica 1"
  "$chatd" bench "${dataset[@]}" --windows "$windows" --send-rate 200 --server-pid "${replicas[1]}" \
    --target http://127.0.0.1:51082 --send-target http://127.0.0.1:51081 2>&1 | tail -n 3
}

start_replicas
measure "NOTIFY"
stop_replicas
start_replicas --fanout-url "$nats"
measure "NATS ($nats)"
