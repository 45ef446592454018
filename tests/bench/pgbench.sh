#!/usr/bin/env bash
# Runs one of chatd's own PostgreSQL statement files (src/storage/writes/*.sql) with
# pgbench, on a database seeded by `chatd bench --seed`: the same SQL chatd sends, with
# no chatd in between, so a chatd figure can be read as a ratio to it.
#
#   tests/bench/pgbench.sh send_message DB [pgbench options, e.g. -c 64 -j 2 -T 10]
#   tests/bench/pgbench.sh mark_read DB ...
#
# The seeded dataset's shape comes from USERS and THREADS (defaults: chatd bench's
# 100000 and 1000000); thread x is tutor 1 + x % tutors and student
# tutors + 1 + (x / tutors) % students, as src/bench/seed.rs writes them. Like
# `chatd bench --rpcs`, the load goes to SAMPLE threads (default 2048) spread over the
# dataset, so both meet the same share of cached pages.
set -euo pipefail
statement=${1:?usage: pgbench.sh send_message|mark_read DB [pgbench options]}
database=${2:?usage: pgbench.sh send_message|mark_read DB [pgbench options]}
shift 2
here=$(cd "$(dirname "$0")/../.." && pwd)
file="$here/src/storage/writes/$statement.sql"
[ -f "$file" ] || { echo "no statement file $file" >&2; exit 2; }
users=${USERS:-100000}
threads=${THREADS:-1000000}
sample=${SAMPLE:-2048}
tutors=$((users / 2))
students=$((users - tutors))

script=$(mktemp)
trap 'rm -f "$script"' EXIT
{
  echo '\set thread_id 1 + random(0, :sample - 1) * (:threads / :sample)'
  case "$statement" in
    send_message)
      # The thread's student writes, with an idempotency key, as the bench's senders do.
      echo '\set sender_id :tutors + 1 + (:thread_id / :tutors) % :students'
      echo '\set client_message_id random(1, 9223372036854775806)'
      ;;
    mark_read)
      # The thread's tutor reads everything.
      echo '\set user_id 1 + :thread_id % :tutors'
      ;;
    *) echo "pgbench.sh knows the parameters of send_message and mark_read only" >&2; exit 2 ;;
  esac
  cat "$file"
} > "$script"

exec pgbench -h "${PGHOST:-127.0.0.1}" -U "${PGUSER:-postgres}" -n -M prepared \
  -D threads="$threads" -D tutors="$tutors" -D students="$students" -D sample="$sample" \
  -D side="$([ "$statement" = send_message ] && echo student || echo tutor)" \
  -D body='pgbench body' -D preview='pgbench body' \
  -D unlocking='{UNLOCKED}' -D up_to_seq=9223372036854775807 \
  -f "$script" "$@" "$database"
