#!/usr/bin/env bash
# SQLite writes against the disk under them, measured in one run:
#   - the disk's own commit (tests/bench/fsync.py: a 16 KiB write + fdatasync) in the
#     database's directory, before and after;
#   - for ROUNDS (2) rounds: SendMessage's statements from one Python writer on a copy of
#     the database (tests/bench/sqlite_send_ceiling.py), then chatd's SendMessage with
#     64 clients (with Check) and with 8, each followed by where its writes spent their
#     time on chatd's one writer (queued, statements, group, commit, answer, and the
#     writer's own checkpoints), from the server's /metrics.
#
#   tests/bench/sqlite.sh [-- chatd bench dataset flags]
#   SYNCHRONOUS=full tests/bench/sqlite.sh     # chatd and the Python writer both FULL
#
# CHATD_BIN picks another binary (default ./target/release/chatd); build first:
# cargo build --release. BENCH_DIR puts the database elsewhere than a new directory
# under /tmp (the disk measured is that directory's).
set -euo pipefail
cd "$(dirname "$0")/../.."
[ "${1:-}" = "--" ] && shift
dataset=("$@")
[ ${#dataset[@]} -eq 0 ] && dataset=(--users 10000 --threads 100000 --messages 1000000)
chatd=${CHATD_BIN:-./target/release/chatd}
rounds=${ROUNDS:-2}
synchronous=${SYNCHRONOUS:-normal}
work=$(mktemp -d "${BENCH_DIR:-/tmp}/chatd-sqlite-bench.XXXXXX")
export CHATD_JWT_SECRET=bench-secret-bench-secret-bench-secret
export DATABASE_URL="sqlite://$work/bench.db"
grpc=127.0.0.1:24351
http=127.0.0.1:24380
server=
stop() {
  if [ -n "$server" ]; then kill "$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true; fi
  server=
}
trap 'stop; rm -rf "$work"' EXIT
serve() {
  "$chatd" serve --listen "$grpc" --http "$http" --user-send-rate 0 \
    --sqlite-synchronous "$synchronous" >"$work/serve.log" 2>&1 &
  server=$!
  for _ in $(seq 1 100); do grep -q "chatd gRPC listening" "$work/serve.log" && return; sleep 0.1; done
  echo "chatd did not start:"; cat "$work/serve.log"; exit 1
}
bench() {
  "$chatd" bench "${dataset[@]}" --target "http://$grpc" --http-target "http://$http" "$@"
}

echo "== the disk: $(python3 tests/bench/fsync.py "$work" 5)"
echo "== seeding (${dataset[*]})"
serve
bench --seed --rpcs check --duration 1s | grep -E '^Health/Check '
stop

for round in $(seq 1 "$rounds"); do
  cp "$work/bench.db" "$work/ceiling.db"
  rm -f "$work/ceiling.db-wal" "$work/ceiling.db-shm"
  echo "== round $round: one Python writer ($synchronous): $(SYNCHRONOUS=$synchronous python3 tests/bench/sqlite_send_ceiling.py "$work/ceiling.db" 10)"
  rm -f "$work"/ceiling.db*
  serve
  echo "== round $round: chatd SendMessage, 64 clients (synchronous $synchronous)"
  bench --rpcs check,send-message --concurrency 64 --duration 10s | grep -vE '^chatd bench'
  echo "== round $round: chatd SendMessage, 8 clients"
  bench --rpcs send-message --concurrency 8 --duration 10s | grep -vE '^chatd bench'
  echo "   WAL after the round: $(stat -c %s "$work/bench.db-wal" 2>/dev/null || echo 0) bytes"
  stop
done
echo "== the disk again: $(python3 tests/bench/fsync.py "$work" 5)"
