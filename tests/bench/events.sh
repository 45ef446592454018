#!/usr/bin/env bash
# Events out, measured in one run on one backend:
#   - SendMessage (64 clients, 10 s, with Check) with events off, then with a JetStream
#     and a webhook sink on, alternating for ROUNDS (2) rounds;
#   - at RATES messages/s (1000 1000 2000) for 10 s each: each event's lag from commit to
#     the webhook's and JetStream's receipt, and the relay's throughput against the write
#     rate (`chatd bench --events-receiver`);
#   - the log's growth: bytes of the events table and its indexes per event and per
#     message sent.
#
#   tests/bench/events.sh sqlite|postgres [-- chatd bench dataset flags]
#   tests/bench/events.sh postgres -- --users 10000 --threads 100000 --messages 1000000
#
# Needs nats-server (Debian package nats-server). CHATD_BIN picks another binary
# (default ./target/release/chatd); build first: cargo build --release.
set -euo pipefail
export PATH="$PATH:/usr/sbin"
cd "$(dirname "$0")/../.."
backend=${1:?usage: tests/bench/events.sh sqlite|postgres [-- dataset flags]}
shift
[ "${1:-}" = "--" ] && shift
dataset=("$@")
[ ${#dataset[@]} -eq 0 ] && dataset=(--users 10000 --threads 100000 --messages 1000000)
chatd=${CHATD_BIN:-./target/release/chatd}
rounds=${ROUNDS:-2}
work=$(mktemp -d)
export CHATD_JWT_SECRET=bench-secret-bench-secret-bench-secret
case $backend in
  sqlite) export DATABASE_URL="sqlite://$work/bench.db" ;;
  postgres)
    db=chatd_bench_events_$$
    psql -q -h 127.0.0.1 -U postgres -c "CREATE DATABASE $db" >/dev/null
    export DATABASE_URL="postgres://postgres@127.0.0.1:5432/$db" ;;
  *) echo "backend: sqlite or postgres"; exit 2 ;;
esac
pids=()
stop_all() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  pids=()
}
cleanup() {
  stop_all
  [ "$backend" = postgres ] && psql -q -h 127.0.0.1 -U postgres -c "DROP DATABASE IF EXISTS $db" >/dev/null
  rm -rf "$work"
}
trap cleanup EXIT

nats_port=24222
nats-server -a 127.0.0.1 -p "$nats_port" -js -sd "$work/nats" >"$work/nats.log" 2>&1 &
nats_pid=$!
hook_port=24280
secret="whsec_$(head -c 32 /dev/urandom | base64)"

serve() {
  "$chatd" serve --listen 127.0.0.1:24251 --http off --user-send-rate 0 "$@" >"$work/serve.log" 2>&1 &
  pids+=($!)
  for _ in $(seq 1 100); do grep -q "chatd gRPC listening" "$work/serve.log" && return; sleep 0.1; done
  echo "chatd did not start:"; cat "$work/serve.log"; exit 1
}
# A receiver that takes every batch (the webhook sink's work is chatd's, not its).
receiver() {
  python3 - "$hook_port" <<'PY' &
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
class R(BaseHTTPRequestHandler):
    def do_POST(self):
        self.rfile.read(int(self.headers.get("content-length", 0)))
        self.send_response(204); self.end_headers()
    def log_message(self, *a): pass
ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), R).serve_forever()
PY
  pids+=($!)
}
echo "== seeding (${dataset[*]})"
serve
"$chatd" bench "${dataset[@]}" --seed --rpcs check --duration 1s --target http://127.0.0.1:24251 | grep -E '^Health/Check '
stop_all

sinks=(--events-url "nats://127.0.0.1:$nats_port" --webhook-url "http://127.0.0.1:$hook_port/hook" --webhook-secret "$secret")

for round in $(seq 1 "$rounds"); do
  for mode in off on; do
    if [ "$mode" = on ]; then receiver; serve "${sinks[@]}"; else serve; fi
    echo "== round $round, events $mode: SendMessage (64 clients, 10 s)"
    "$chatd" bench "${dataset[@]}" --rpcs check,send-message --concurrency 64 --duration 10s \
      --target http://127.0.0.1:24251 | grep -E '^(phase|Health/Check|SendMessage) '
    stop_all
  done
done

# At 1,000 messages/s (the aim: p99 < 100 ms), then faster than the relay may keep up
# with (its throughput against the write rate).
for rate in ${RATES:-1000 1000 2000}; do
  echo "== $rate messages/s for 10 s: commit to receipt"
  serve "${sinks[@]}"
  "$chatd" bench "${dataset[@]}" --events-receiver "127.0.0.1:$hook_port" \
    --events-nats "nats://127.0.0.1:$nats_port" --send-rate "$rate" --duration 10s \
    --target http://127.0.0.1:24251 2>&1 | grep -E '^(chatd bench --events-receiver|webhook|nats):'
  stop_all
done

echo "== the log's growth"
case $backend in
  postgres)
    psql -h 127.0.0.1 -U postgres -d "$db" -At -F ' ' -c "VACUUM ANALYZE events" -c \
      "SELECT count(*), pg_total_relation_size('events'), (SELECT count(*) FROM events WHERE kind = 'chat.message.created') FROM events" \
      | tail -n1 | awk '{printf "%d events, %d bytes with indexes: %.0f bytes an event, %.0f bytes a message sent\n", $1, $2, $2/$1, $2/$3}' ;;
  sqlite)
    python3 - "$work/bench.db" <<'PY'
import sqlite3, sys
db = sqlite3.connect(sys.argv[1])
try:
    size = db.execute("SELECT SUM(pgsize) FROM dbstat WHERE name = 'events' OR name LIKE 'events_%' OR name = 'sqlite_autoindex_events_1'").fetchone()[0]
except sqlite3.OperationalError:
    size = None
events, messages = db.execute("SELECT count(*), SUM(kind = 'chat.message.created') FROM events").fetchone()
if size is None:
    print(f"{events} events (this Python's SQLite has no dbstat: sizes not measured)")
else:
    print(f"{events} events, {size} bytes with indexes: {size/events:.0f} bytes an event, {size/messages:.0f} bytes a message sent")
PY
    ;;
esac
kill "$nats_pid" 2>/dev/null || true
