#!/usr/bin/env bash
# The polling mix beside its ceiling, in one run, and where chatd's time goes:
#   - chatd serve on DATABASE_URL (seed it first: chatd bench --seed with the same
#     dataset flags) and `chatd bench --serve-cached-summaries`, the cached-answer
#     ceiling: the same answers (read from the database at its start) from a map, over
#     chatd's own gRPC stack and token check;
#   - ROUNDS (2) rounds of `chatd bench --poll --ceiling-target` with ONLINE (20000)
#     online tutors: chatd's gRPC polls, the ceiling's, Check and Check carrying the
#     users' tokens, in turn in slices (--poll-slices, 5), each DURATION (10s) in all,
#     then REST; each round prints chatd's polls as a fraction of Check and of the
#     ceiling;
#   - with PROFILE=DIR, one more round with perf recording chatd during its gRPC phase
#     (499 Hz, DWARF call graphs): tests/bench/flamegraph.py writes DIR/poll.svg and
#     prints the share of samples by part of the stack (kernel, h2, allocator, chatd...);
#     PERF_DATA=FILE keeps perf's recording there for `perf report -i FILE`;
#   - with CPU=1, one more round measuring CPU time (perf stat's task-clock): chatd's
#     during its gRPC phase and during the ceiling's (its background: the students'
#     writes, the sweep), and the ceiling's during its own; it prints the CPU each
#     server spends per poll, chatd's with its background taken out, and the cores
#     each process used in each phase (tests/bench/cpu_share.py): the servers, the
#     load generator, PostgreSQL;
#   - with DIFF=1, one more round with perf recording chatd during its gRPC phase and
#     the ceiling during its own (999 Hz, no call graphs): tests/bench/profile_diff.py
#     prints each one's CPU per poll by part of the stack and the difference.
#
#   tests/bench/poll.sh [-- chatd bench dataset flags]
#   PROFILE=docs/performance tests/bench/poll.sh -- --users 50000 --threads 200000 --messages 1000000
#
# perf comes from Debian's linux-perf (PROFILE and CPU only). CHATD_BIN picks another binary
# (default ./target/release/chatd): build first with
# cargo build --release. The server runs with --user-send-rate 0 (the dataset's writers
# are few users). Ports: gRPC 24351, REST 24380, the ceiling 24390.
set -euo pipefail
cd "$(dirname "$0")/../.."
[ "${1:-}" = "--" ] && shift
dataset=("$@")
chatd=${CHATD_BIN:-./target/release/chatd}
rounds=${ROUNDS:-2}
online=${ONLINE:-20000}
duration=${DURATION:-10s}
: "${DATABASE_URL:?set DATABASE_URL to the seeded database}"
export CHATD_JWT_SECRET=${CHATD_JWT_SECRET:-bench-secret-bench-secret-bench-secret}
grpc=127.0.0.1:24351
http=127.0.0.1:24380
ceiling=127.0.0.1:24390
work=$(mktemp -d /tmp/chatd-poll-bench.XXXXXX)
pids=()
stop() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; done
  pids=()
}
trap 'stop; rm -rf "$work"' EXIT
wait_for() { # FILE TEXT
  for _ in $(seq 1 1200); do grep -q "$2" "$1" && return; sleep 0.1; done
  echo "timed out waiting for '$2' in $1:" >&2; cat "$1" >&2; exit 1
}

"$chatd" serve --listen "$grpc" --http "$http" --user-send-rate 0 >"$work/serve.log" 2>&1 &
server=$!
pids+=("$server")
"$chatd" bench --serve-cached-summaries "$ceiling" --online-users "$online" >"$work/ceiling.log" 2>&1 &
ceiling_pid=$!
pids+=("$ceiling_pid")
wait_for "$work/serve.log" "chatd gRPC listening"
wait_for "$work/ceiling.log" "cached-answer ceiling"
cat "$work/ceiling.log"

poll() {
  "$chatd" bench --poll --online-users "$online" --duration "$duration" \
    --target "http://$grpc" --http-target "http://$http" --ceiling-target "http://$ceiling" \
    "${dataset[@]}" "$@"
}

# One more round in one slice (chatd's polls whole first, then the ceiling's, each
# DURATION long), measured from outside: measured_round FILE starts it, its output to
# FILE, and once its warm-up is done sets `bench` (its pid) and `seconds` (how long to
# measure each phase, starting now and 3 s into the ceiling's).
measured_round() {
  poll --poll-slices 1 >"$1" 2>&1 &
  bench=$!
  wait_for "$1" "warm-up:"
  seconds=$(( $(sed 's/s$//' <<<"$duration") - 2 ))
}

# A phase's rate in a poll's output: rate PHASE FILE.
rate() { awk -v phase="$1" 'index($0, phase) == 1 { for (i = 1; i <= NF; i++) if ($i ~ /^[0-9]+$/) { print $i; exit } }' "$2"; }

for round in $(seq 1 "$rounds"); do
  echo "== round $round of $rounds"
  poll
done

if [ -n "${PROFILE:-}" ]; then
  echo "== profile: perf on chatd (pid $server) during its gRPC phase"
  mkdir -p "$PROFILE"
  perf_data=${PERF_DATA:-$work/perf.data}
  # One slice: chatd's polls run whole, first after the warm-up, while perf records.
  poll --poll-slices 1 >"$work/profiled.txt" 2>&1 &
  bench=$!
  wait_for "$work/profiled.txt" "warm-up:"
  seconds=$(( $(sed 's/s$//' <<<"$duration") - 1 ))
  perf record -q -F 499 --call-graph dwarf,16384 -p "$server" -o "$perf_data" -- sleep "$seconds" 2>/dev/null
  wait "$bench"
  cat "$work/profiled.txt"
  perf script -i "$perf_data" 2>/dev/null |
    python3 tests/bench/flamegraph.py "$PROFILE/poll.svg" \
      "chatd during the polling mix's gRPC phase, $online online tutors"
fi

if [ -n "${CPU:-}" ]; then
  echo "== CPU per poll: perf stat on chatd and on the ceiling, each during its phase"
  measured_round "$work/cpu.txt"
  task_clock() { perf stat -x, -e task-clock -p "$1" -- sleep "$seconds" 2>&1 >/dev/null | cut -d, -f1; }
  generator=$(pgrep -P "$bench" || echo "$bench")
  share() { python3 tests/bench/cpu_share.py "$seconds" "$1" "chatd serve=$server" \
    "the ceiling=$ceiling_pid" "the load generator=$generator" & shares+=($!); }
  shares=()
  share "$work/chatd.share"
  chatd_polling=$(task_clock "$server")
  sleep 3 # into the ceiling's phase
  share "$work/ceiling.share"
  task_clock "$ceiling_pid" >"$work/ceiling.cpu" &
  ceiling_clock=$!
  chatd_background=$(task_clock "$server")
  wait "$ceiling_clock"
  wait "$bench" "${shares[@]}"
  cat "$work/cpu.txt"
  echo "the machine's CPU during chatd's phase:"
  cat "$work/chatd.share"
  echo "the machine's CPU during the ceiling's phase:"
  cat "$work/ceiling.share"
  awk -v polling="$chatd_polling" -v background="$chatd_background" -v ceiling="$(cat "$work/ceiling.cpu")" \
    -v chatd_rate="$(rate "GetUnreadSummary (gRPC)" "$work/cpu.txt")" \
    -v ceiling_rate="$(rate "cached-answer ceiling" "$work/cpu.txt")" \
    -v seconds="$seconds" 'BEGIN {
      printf "CPU per poll: chatd %.1f us (%.1f us of its background taken out: %.3f cores), the ceiling %.1f us\n",
        (polling - background) * 1000 / (chatd_rate * seconds), background * 1000 / (chatd_rate * seconds),
        background / (seconds * 1000), ceiling * 1000 / (ceiling_rate * seconds) }'
fi

if [ -n "${DIFF:-}" ]; then
  echo "== CPU per poll by part of the stack: perf on chatd and on the ceiling, each during its phase"
  measured_round "$work/diff.txt"
  perf record -q -F 999 -p "$server" -o "$work/chatd.perf" -- sleep "$seconds" 2>/dev/null
  sleep 3 # into the ceiling's phase
  perf record -q -F 999 -p "$ceiling_pid" -o "$work/ceiling.perf" -- sleep "$seconds" 2>/dev/null
  wait "$bench"
  cat "$work/diff.txt"
  python3 tests/bench/profile_diff.py 999 \
    "$work/chatd.perf" "$(( $(rate "GetUnreadSummary (gRPC)" "$work/diff.txt") * seconds ))" \
    "$work/ceiling.perf" "$(( $(rate "cached-answer ceiling" "$work/diff.txt") * seconds ))"
fi
