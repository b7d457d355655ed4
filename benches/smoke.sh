#!/usr/bin/env bash
# CI's check of the benchmarks: builds them and runs every working scenario
# once, at a tiny size, against troupe and against the bare baseline. Fails on
# any error, loss, duplicate or refused connection; never on timings.
set -euo pipefail
cd "$(dirname "$0")/.."
source benches/lib.sh
trap bench_cleanup EXIT
trap 'exit 130' INT TERM

bench_build "${BENCH_PROFILE:-debug}"
start_troupe
troupe_pid=$SERVER_PID troupe_url=$SERVER_URL
start_bare
bare_pid=$SERVER_PID bare_url=$SERVER_URL

runs=(
  "fanout -s 5 -p 1 -r 50 -d 2"
  "fanout -s 5 -p 2 -r 50 --find-max --round-secs 1 --max-rounds 2"
  "rooms -m 2 -k 3 -r 5 -d 2"
  "connections -n 50 --hold-secs 0.5"
)
failed=0
for run in "${runs[@]}"; do
  for target in troupe bare; do
    if [ "$target" = troupe ]; then url=$troupe_url pid=$troupe_pid; else url=$bare_url pid=$bare_pid; fi
    name=$(printf "%s" "$run-$target" | tr -c 'a-zA-Z0-9-' '_')
    # shellcheck disable=SC2086 # the run's words are its options
    if "$BIN_DIR/troupe-bench" $run --target "$target" --url "$url" --server-pid "$pid" \
        --settle-ms 300 --quiet --json "$BENCH_TMP/$name.json" --markdown "$BENCH_TMP/$name.md"; then
      echo "ok   $run ($target)"
    else
      echo "FAIL $run ($target)"
      failed=1
    fi
    [ -f "$BENCH_TMP/$name.md" ] && sed 's/^/     /' "$BENCH_TMP/$name.md"
  done
done

# The comparison table reads both summaries.
first=$(printf "%s" "${runs[0]}" | tr -c 'a-zA-Z0-9-' '_')
"$BIN_DIR/troupe-bench" compare --troupe "$BENCH_TMP/$first-troupe.json" --bare "$BENCH_TMP/$first-bare.json" >/dev/null \
  || { echo "FAIL compare"; failed=1; }
# The cluster scenarios are stubs until the cluster exists: they must say so and fail.
if "$BIN_DIR/troupe-bench" cluster 2>/dev/null; then echo "FAIL cluster stub exited 0"; failed=1; fi

kill -0 "$troupe_pid" 2>/dev/null || { echo "FAIL troupe died"; failed=1; }
kill -0 "$bare_pid" 2>/dev/null || { echo "FAIL bare-broadcast died"; failed=1; }
if [ $failed -ne 0 ]; then
  echo "smoke: FAILED (server logs follow)"
  tail -30 "$BENCH_TMP"/troupe-*.log "$BENCH_TMP"/bare-*.log || true
  exit 1
fi
echo "smoke: all scenarios ran, nothing lost"
