#!/usr/bin/env bash
# The latency of a full-text search over 100,000 messages, on the embedded
# default (SQLite FTS5) and on Postgres (GIN over a tsvector): a release node
# per store, 100,000 messages seeded straight into history and the index with
# SQL (10 rooms of one user; which words occur how often: see below), then
# `search-bench` times GET /api/v1/search one request at a time.
#
#   benches/search.sh [sqlite|postgres|both]
#
# Environment: SEARCH_MESSAGES (default 100000), TEST_POSTGRES (default
# postgres://root@127.0.0.1:5432; a database troupe_bench_search_<pid> is
# made and dropped), BENCH_NO_BUILD=1, SERVER_CPUS / GEN_CPUS (default 0 / 1).
set -euo pipefail
cd "$(dirname "$0")/.."
source benches/lib.sh
PG=${TEST_POSTGRES:-postgres://root@127.0.0.1:5432}
PG_DB="troupe_bench_search_$$"
cleanup() {
  bench_cleanup
  psql "$PG/postgres" -qc "drop database if exists $PG_DB with (force)" >/dev/null 2>&1 || true
}
trap cleanup EXIT
trap 'exit 130' INT TERM

which=${1:-both}
N=${SEARCH_MESSAGES:-100000}
if [ -z "${BENCH_NO_BUILD:-}" ]; then bench_build release; else BIN_DIR="${CARGO_TARGET_DIR:-$PWD/target}/release"; fi

server_pin=() gen_pin=()
if [ "$(nproc --all)" -ge 2 ] && command -v taskset >/dev/null; then
  server_pin=(taskset -c "${SERVER_CPUS:-0}")
  gen_pin=(taskset -c "${GEN_CPUS:-1}")
fi

SEARCH_ENV=(
  TROUPE_RATE_LIMITS__SEARCH__BURST=1000000
  TROUPE_RATE_LIMITS__SEARCH__PER_SECOND=1000000
  TROUPE_RATE_LIMITS__CREATE_ROOM__BURST=1000000
)

# node DATA_DIR [VAR=VALUE...]: a release node; sets PORT.
node() {
  local data=$1
  shift
  mkdir -p "$data"
  PORT=$(free_port)
  env "${TROUPE_BENCH_ENV[@]}" "${SEARCH_ENV[@]}" "$@" "${server_pin[@]}" "$BIN_DIR/troupe" serve \
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

# The user and its 10 rooms; sets TOKEN.
setup() {
  api POST /api/v1/register '{"username":"bencher","password":"bench-password"}' >/dev/null
  TOKEN=$(api POST /api/v1/login '{"username":"bencher","password":"bench-password"}' \
    | python3 -c 'import json, sys; print(json.load(sys.stdin)["token"])')
  local r
  for r in $(seq 0 9); do api POST /api/v1/rooms "{\"name\":\"bench$r\"}" "$TOKEN" >/dev/null; done
}

# The body of message i (an SQL expression of i): every one has "hello",
# every 10th "lorem", every 100th "ipsum" (so "lorem ipsum" too), every
# 10,000th "zephyr"; the rest varies.
BODY="'hello message ' || i || ' about topic' || ((i * 7919) % 500) || ' and thing' || ((i * 104729) % 2000)
  || CASE WHEN i % 10 = 0 THEN ' lorem' ELSE '' END
  || CASE WHEN i % 100 = 0 THEN ' ipsum' ELSE '' END
  || CASE WHEN i % 10000 = 3 THEN ' zephyr' ELSE '' END"
ROOM="'bench' || ((i / 3) % 10)"

seed_sql() { # the rows source: a recursive CTE (SQLite) or generate_series (Postgres)
  local rows=$1
  cat <<SQL
INSERT INTO messages (room, seq, sender, client_id, body, ts)
  SELECT $ROOM, i, 'bencher', 'seed-' || i, $BODY, 1700000000000 + i * 1000 FROM $rows;
INSERT INTO search_docs (room, seq, sender, body, ts)
  SELECT room, seq, sender, body, ts FROM messages WHERE client_id LIKE 'seed-%';
SQL
}

measure() { # LABEL
  "${gen_pin[@]}" "$BIN_DIR/search-bench" --addr "127.0.0.1:$PORT" --token "$TOKEN" --label "$1"
}

if [ "$which" = sqlite ] || [ "$which" = both ]; then
  data="$BENCH_TMP/sqlite"
  node "$data"
  setup
  start=$(date +%s.%N)
  sqlite3 -bail "$data/troupe.db" <<SQL
.timeout 30000
BEGIN;
CREATE TEMP TABLE n AS WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < $N) SELECT i FROM s;
$(seed_sql n)
COMMIT;
SQL
  echo "sqlite: seeded $N messages in $(awk "BEGIN { printf \"%.1f\", $(date +%s.%N) - $start }") s" >&2
  measure "SQLite (FTS5)"
  stop_pid "$SERVER_PID"
fi

if [ "$which" = postgres ] || [ "$which" = both ]; then
  psql "$PG/postgres" -qc "create database $PG_DB" >/dev/null
  data="$BENCH_TMP/postgres"
  node "$data" "TROUPE_DATABASE__URL=$PG/$PG_DB"
  setup
  start=$(date +%s.%N)
  psql -q -v ON_ERROR_STOP=1 "$PG/$PG_DB" <<SQL
BEGIN;
$(seed_sql "generate_series(1::bigint, $N) AS s(i)")
COMMIT;
ANALYZE search_docs;
SQL
  echo "postgres: seeded $N messages in $(awk "BEGIN { printf \"%.1f\", $(date +%s.%N) - $start }") s" >&2
  measure "Postgres (GIN)"
  stop_pid "$SERVER_PID"
fi
