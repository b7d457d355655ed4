#!/usr/bin/env bash
# A measurement: troupe and the bare baseline under the same scenario, one
# after the other in the same run, each server pinned to one core and the
# generator to another; then the figures side by side with troupe/bare ratios.
#
#   benches/run.sh SCENARIO [troupe-bench options]
#   benches/run.sh fanout -s 100 -r 1000 -d 5
#   benches/run.sh fanout -s 1000 -r 200 --find-max
#   benches/run.sh connections -n 10000
#   benches/run.sh coldrooms -m 10000 -c 64                # troupe only: first message into stopped rooms
#   benches/run.sh cluster -s 1000 -r 100 -d 10      # a 3-node cluster: cross-node vs single-node
#   benches/run.sh failover -m 10 -k 20 -r 2         # kill -9 of a node under traffic
#
# Environment: BENCH_OUT (where the JSON, Markdown and SVG plots go, default
# benches/out/<time>-<scenario>; plots in its plots/), SERVER_CPUS (default 0), GEN_CPUS
# (default 1), BENCH_TARGETS (default "troupe bare"), BENCH_NO_BUILD=1,
# BARE_FLAGS (extra bare-broadcast flags), BENCH_RUST_LOG (troupe's RUST_LOG),
# and for cluster/failover TEST_TANSU, TEST_POSTGRES, TEST_REDIS, and
# BENCH_TROUPE_BIN: the troupe binary of the cluster's nodes (default the one
# just built), to measure another commit's build in the same hour.
set -euo pipefail
cd "$(dirname "$0")/.."
source benches/lib.sh
trap bench_cleanup EXIT
trap 'exit 130' INT TERM

[ $# -ge 1 ] || { sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'; exit 2; }
scenario=$1
shift

if [ -z "${BENCH_NO_BUILD:-}" ]; then bench_build release; else BIN_DIR="${CARGO_TARGET_DIR:-$PWD/target}/release"; fi

server_pin=() gen_pin=()
if [ "$(nproc --all)" -ge 2 ] && command -v taskset >/dev/null; then
  server_pin=(taskset -c "${SERVER_CPUS:-0}")
  gen_pin=(taskset -c "${GEN_CPUS:-1}")
else
  echo "warning: fewer than 2 CPUs or no taskset: server and generator are not pinned" >&2
fi

out=${BENCH_OUT:-benches/out/$(date +%Y%m%d-%H%M%S)-$scenario}
mkdir -p "$out"
status=0

# The cluster scenarios: the generator starts the cluster itself (its nodes
# and the tansu broker pinned to SERVER_CPUS, the generator to GEN_CPUS;
# Postgres and Redis are the machine's own servers), with the same node
# settings as a single troupe here (TROUPE_BENCH_ENV), and keeps the node logs.
case $scenario in
  cluster|failover)
    if [ -z "${TEST_TANSU:-}" ]; then TEST_TANSU=$(scripts/install-tansu.sh); fi
    export TEST_TANSU
    server_cpus=()
    [ ${#server_pin[@]} -gt 0 ] && server_cpus=(--server-cpus "${SERVER_CPUS:-0}")
    echo "== $scenario against a troupe cluster (nodes and broker on CPUs ${SERVER_CPUS:-0}, generator on ${GEN_CPUS:-1})" >&2
    env "${TROUPE_BENCH_ENV[@]}" "${gen_pin[@]}" "$BIN_DIR/troupe-bench" "$scenario" \
      --troupe-bin "${BENCH_TROUPE_BIN:-$BIN_DIR/troupe}" "${server_cpus[@]}" --logs "$out/logs" \
      --json "$out/troupe.json" --markdown "$out/troupe.md" --plots "$out/plots" "$@" \
      || { status=1; echo "== the $scenario run failed or was not ok" >&2; }
    [ -f "$out/troupe.md" ] && cat "$out/troupe.md"
    echo "results (and node logs) in $out" >&2
    exit $status
    ;;
esac
targets=${BENCH_TARGETS:-troupe bare}
case $scenario in
  # The rooms must go cold between the set-up and the measurement: a node
  # that stops idle rooms after 2 s. The baseline has no rooms to restore.
  coldrooms)
    TROUPE_BENCH_ENV+=("TROUPE_ROOMS__IDLE_STOP_SECS=${BENCH_IDLE_STOP_SECS:-2}")
    targets=${BENCH_TARGETS:-troupe}
    ;;
esac
for target in $targets; do
  echo "== $scenario against $target (server on CPUs ${SERVER_CPUS:-0}, generator on ${GEN_CPUS:-1})" >&2
  case $target in
    troupe) start_troupe "${server_pin[@]}" ;;
    bare) BARE_FLAGS="--threads 1 ${BARE_FLAGS:-}" start_bare "${server_pin[@]}" ;;
    *) echo "unknown target $target" >&2; exit 2 ;;
  esac
  "${gen_pin[@]}" "$BIN_DIR/troupe-bench" "$scenario" --target "$target" --url "$SERVER_URL" \
    --server-pid "$SERVER_PID" --json "$out/$target.json" --markdown "$out/$target.md" \
    --plots "$out/plots" "$@" \
    || { status=1; echo "== $target run failed or not ok" >&2; }
  stop_pid "$SERVER_PID"
  [ -f "$out/$target.md" ] && cat "$out/$target.md"
done

if [ -f "$out/troupe.json" ] && [ -f "$out/bare.json" ]; then
  "$BIN_DIR/troupe-bench" compare --troupe "$out/troupe.json" --bare "$out/bare.json" \
    --markdown "$out/compare.md" --plots "$out/plots"
fi
echo "results in $out" >&2
exit $status
