#!/usr/bin/env bash
# Upload throughput and the node's RSS during a 20 MiB upload, on the local
# store and on an S3-compatible store (moto_server from scripts/install-s3.sh),
# with curl as the client. Release build; prints one Markdown row per store.
#
#   benches/attachments.sh [RUNS]      (default 5 uploads per store)
set -euo pipefail
source "$(dirname "$0")/lib.sh"
trap bench_cleanup EXIT

RUNS=${1:-5}
SIZE=$((20 * 1024 * 1024))
(cd "$BENCH_ROOT" && cargo build --release -p troupe ${BENCH_CARGO_FLAGS:-})
TROUPE="${CARGO_TARGET_DIR:-$BENCH_ROOT/target}/release/troupe"
FILE="$BENCH_TMP/file.bin"
head -c "$SIZE" /dev/urandom >"$FILE"

rss_kib() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status"; }

# measure STORE [ENV...]: a node, a user and a room, then RUNS uploads.
measure() {
  local store=$1; shift
  local port dir pid token
  port=$(free_port)
  dir="$BENCH_TMP/node-$store"
  env "${TROUPE_BENCH_ENV[@]}" "$@" "$TROUPE" serve --listen "127.0.0.1:$port" --data-dir "$dir" \
    >"$BENCH_TMP/troupe-$store.log" 2>&1 &
  pid=$!
  BENCH_PIDS+=("$pid")
  wait_port "$port"
  local api="http://127.0.0.1:$port/api/v1"
  curl -sf -X POST "$api/register" -H 'content-type: application/json' \
    -d '{"username":"bench","password":"bench password"}' >/dev/null
  token=$(curl -sf -X POST "$api/login" -H 'content-type: application/json' \
    -d '{"username":"bench","password":"bench password"}' | python3 -c 'import json,sys; print(json.load(sys.stdin)["token"])')
  curl -sf -X POST "$api/rooms" -H "authorization: Bearer $token" -H 'content-type: application/json' \
    -d '{"name":"bench"}' >/dev/null
  # One upload first: the paths warm (allocator, database, room).
  curl -sf -X POST "$api/rooms/bench/attachments" -H "authorization: Bearer $token" \
    -H 'content-type: video/mp4' --data-binary @"$FILE" >/dev/null
  local before peak rates=() growths=() i seconds sampler
  for i in $(seq "$RUNS"); do
    before=$(rss_kib "$pid")
    (peak=0; while kill -0 "$pid" 2>/dev/null; do r=$(rss_kib "$pid"); [ "$r" -gt "$peak" ] && peak=$r && echo "$peak" >"$BENCH_TMP/peak"; sleep 0.005; done) &
    sampler=$!
    echo "$before" >"$BENCH_TMP/peak"
    seconds=$(curl -sf -o /dev/null -w '%{time_total}' -X POST "$api/rooms/bench/attachments" \
      -H "authorization: Bearer $token" -H 'content-type: video/mp4' --data-binary @"$FILE")
    kill "$sampler" 2>/dev/null || true; wait "$sampler" 2>/dev/null || true
    peak=$(cat "$BENCH_TMP/peak")
    rates+=("$(python3 -c "print(f'{$SIZE / 1048576 / $seconds:.0f}')")")
    growths+=("$(python3 -c "print(f'{($peak - $before) / 1024:.1f}')")")
  done
  echo "| $store | ${rates[*]} | $(python3 -c "print(f'{$before / 1024:.1f}')") | ${growths[*]} |"
  kill "$pid"; wait "$pid" 2>/dev/null || true
}

echo "| store | MiB/s per upload (20 MiB, curl) | RSS before (MiB) | RSS growth during each upload (MiB) |"
echo "|---|---|---:|---|"
measure local

MOTO=$("$BENCH_ROOT/scripts/install-s3.sh")
s3_port=$(free_port)
"$MOTO" -H 127.0.0.1 -p "$s3_port" >"$BENCH_TMP/moto.log" 2>&1 &
BENCH_PIDS+=("$!")
wait_port "$s3_port"
curl -sf -X PUT "http://127.0.0.1:$s3_port/bench" >/dev/null
measure s3 TROUPE_ATTACHMENTS__STORE=s3 TROUPE_ATTACHMENTS__S3__ENDPOINT="http://127.0.0.1:$s3_port" \
  TROUPE_ATTACHMENTS__S3__BUCKET=bench TROUPE_ATTACHMENTS__S3__ACCESS_KEY_ID=bench \
  TROUPE_ATTACHMENTS__S3__SECRET_ACCESS_KEY=bench-secret TROUPE_ATTACHMENTS__S3__ALLOW_HTTP=true
