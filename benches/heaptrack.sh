#!/usr/bin/env bash
# Where the bytes of idle connections are: a release troupe under heaptrack
# holding N idle authenticated connections (`troupe-bench connections`),
# killed with SIGKILL while they are held, so that what heaptrack reports as
# "leaked" is the live heap at that moment. Prints the heap per connection
# and the top allocation sites of the live heap.
#
#   benches/heaptrack.sh [N]          # default 2000 connections
#
# The live heap is divided by N whole: what the node holds without any
# connection (a few MB) is spread over them, so compare runs of the same N.
# Sites are grouped by benches/heaptrack_sites.py (troupe's own frame and the
# library frame that allocated).
#
# Environment: BENCH_NO_BUILD=1 (use the binaries in target/release, or in
# $CARGO_TARGET_DIR/release), HEAPTRACK_OUT (default
# benches/out/<time>-heaptrack), TOP (allocation sites printed, default 40),
# SETTLE_SECS (after the last connection, before the kill; default 5).
# Needs heaptrack (scripts/install-heaptrack.sh). Not part of CI.
set -euo pipefail
cd "$(dirname "$0")/.."
source benches/lib.sh
trap bench_cleanup EXIT
trap 'exit 130' INT TERM

n=${1:-2000}
command -v heaptrack >/dev/null || { echo "heaptrack is not installed: scripts/install-heaptrack.sh" >&2; exit 1; }
if [ -z "${BENCH_NO_BUILD:-}" ]; then bench_build release; else BIN_DIR="${CARGO_TARGET_DIR:-$PWD/target}/release"; fi
out=${HEAPTRACK_OUT:-benches/out/$(date +%Y%m%d-%H%M%S)-heaptrack}
mkdir -p "$out"
out=$(cd "$out" && pwd)

# heaptrack in front of the binary; its own process is the one to kill.
port=$(free_port)
data="$BENCH_TMP/troupe-$port"
mkdir -p "$data"
env "${TROUPE_BENCH_ENV[@]}" heaptrack -o "$out/troupe" "$BIN_DIR/troupe" serve \
  --listen "127.0.0.1:$port" --data-dir "$data" >"$out/troupe.log" 2>&1 &
BENCH_PIDS+=($!)
wait_port "$port" || { tail -20 "$out/troupe.log" >&2; exit 1; }
pid=$(pgrep -f -n "^$BIN_DIR/troupe serve --listen 127.0.0.1:$port") || { echo "troupe not found" >&2; exit 1; }

# Held long enough to be killed while held: once every connection is up
# (the generator says "holding"), plus a few seconds to settle.
"$BIN_DIR/troupe-bench" connections --target troupe --url "http://127.0.0.1:$port" \
  --server-pid "$pid" -n "$n" --hold-secs 60 --json "$out/connections.json" 2>"$out/generator.log" &
gen=$!
BENCH_PIDS+=("$gen")
for _ in $(seq 1200); do
  grep -q holding "$out/generator.log" && break
  kill -0 "$gen" 2>/dev/null || { cat "$out/generator.log" >&2; exit 1; }
  sleep 0.5
done
sleep "${SETTLE_SECS:-5}"
grep holding "$out/generator.log" >&2 || true
kill -9 "$pid"
wait "$gen" 2>/dev/null || true
sleep 2
file=$(ls -t "$out"/troupe*.zst "$out"/troupe*.gz 2>/dev/null | head -1 || true)
[ -n "$file" ] || { echo "no heaptrack data in $out" >&2; exit 1; }
heaptrack_print -f "$file" --print-leaks 1 --print-peaks 0 --print-allocators 0 \
  --print-temporary 0 --merge-backtraces 0 -n 1000000 >"$out/leaks.txt" 2>/dev/null || true
echo "heaptrack data: $file" >&2
python3 benches/heaptrack_sites.py "$out/leaks.txt" "$n" "${TOP:-40}" | tee "$out/sites.txt"
