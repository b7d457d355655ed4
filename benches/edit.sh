#!/usr/bin/env bash
# The latency of changing a message (an edit, a reaction), on the embedded
# default (SQLite, the log in the same file) and on Postgres (history and
# the log in Postgres): a release node per store, one user and one room of
# 400 messages sent over REST, then `edit-bench` times PATCH (edit) and PUT
# (reaction) one request at a time. An edit is a room event: appended to the
# log and durable before the answer, then the message's view is read back.
# "Old" messages are beyond the room's views in memory (`rooms.recent` = 4
# here: 16 views), so their state is read from history first.
#
#   benches/edit.sh [sqlite|postgres|both]
#
# Environment: TEST_POSTGRES (default postgres://root@127.0.0.1:5432; a
# database troupe_bench_edit_<pid> is made and dropped), BENCH_NO_BUILD=1,
# SERVER_CPUS / GEN_CPUS (default 0 / 1).
set -euo pipefail
cd "$(dirname "$0")/.."
source benches/lib.sh
PG=${TEST_POSTGRES:-postgres://root@127.0.0.1:5432}
PG_DB="troupe_bench_edit_$$"
cleanup() {
  bench_cleanup
  psql "$PG/postgres" -qc "drop database if exists $PG_DB with (force)" >/dev/null 2>&1 || true
}
trap cleanup EXIT
trap 'exit 130' INT TERM

which=${1:-both}
if [ -z "${BENCH_NO_BUILD:-}" ]; then bench_build release; else BIN_DIR="${CARGO_TARGET_DIR:-$PWD/target}/release"; fi

server_pin=() gen_pin=()
if [ "$(nproc --all)" -ge 2 ] && command -v taskset >/dev/null; then
  server_pin=(taskset -c "${SERVER_CPUS:-0}")
  gen_pin=(taskset -c "${GEN_CPUS:-1}")
fi

EDIT_ENV=(
  TROUPE_ROOMS__RECENT=4
  TROUPE_RATE_LIMITS__CREATE_ROOM__BURST=1000000
  TROUPE_RATE_LIMITS__REST_READ__BURST=1000000
  TROUPE_RATE_LIMITS__REST_READ__PER_SECOND=1000000
)

# node DATA_DIR [VAR=VALUE...]: a release node; sets PORT.
node() {
  local data=$1
  shift
  mkdir -p "$data"
  PORT=$(free_port)
  env "${TROUPE_BENCH_ENV[@]}" "${EDIT_ENV[@]}" "$@" "${server_pin[@]}" "$BIN_DIR/troupe" serve \
    --listen "127.0.0.1:$PORT" --data-dir "$data" >>"$data/node.log" 2>&1 &
  SERVER_PID=$!
  BENCH_PIDS+=("$SERVER_PID")
  wait_port "$PORT" || { tail -20 "$data/node.log" >&2; return 1; }
}

# api METHOD PATH [BODY [TOKEN]]
api() {
  local auth=()
  [ -n "${4:-}" ] && auth=(-H "authorization: Bearer $4")
  curl -sf -X "$1" "http://127.0.0.1:$PORT$2" -H 'content-type: application/json' "${auth[@]}" ${3:+-d "$3"}
}

# The user, the room and its 400 messages; sets TOKEN.
setup() {
  api POST /api/v1/register '{"username":"bencher","password":"bench-password"}' >/dev/null
  TOKEN=$(api POST /api/v1/login '{"username":"bencher","password":"bench-password"}' \
    | python3 -c 'import json, sys; print(json.load(sys.stdin)["token"])')
  api POST /api/v1/rooms '{"name":"bench"}' "$TOKEN" >/dev/null
  local i
  for i in $(seq 1 400); do
    api POST /api/v1/rooms/bench/messages "{\"body\":\"message $i\",\"client_id\":\"m$i\"}" "$TOKEN" >/dev/null
  done
}

measure() { # LABEL
  "${gen_pin[@]}" "$BIN_DIR/edit-bench" --addr "127.0.0.1:$PORT" --token "$TOKEN" --label "$1" \
    --recent "$(seq -s, 391 400)" --old "$(seq -s, 1 340)"
}

if [ "$which" = sqlite ] || [ "$which" = both ]; then
  node "$BENCH_TMP/sqlite"
  setup
  measure "SQLite"
  stop_pid "$SERVER_PID"
fi

if [ "$which" = postgres ] || [ "$which" = both ]; then
  psql "$PG/postgres" -qc "create database $PG_DB" >/dev/null
  node "$BENCH_TMP/postgres" "TROUPE_DATABASE__URL=$PG/$PG_DB"
  setup
  measure "Postgres"
  stop_pid "$SERVER_PID"
fi
