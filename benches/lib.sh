# Shared by run.sh and smoke.sh (sourced): builds the binaries, starts and
# stops the servers under test. Every process started here is stopped by
# bench_cleanup (run it from an EXIT trap).

BENCH_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BENCH_TMP=$(mktemp -d "${TMPDIR:-/tmp}/troupe-bench.XXXXXX")
BENCH_PIDS=()

# troupe with limits that never throttle a benchmark. The cheap password hash
# only speeds up the set-up (thousands of logins); the message path is the same.
TROUPE_BENCH_ENV=(
  TROUPE_LIMITS__MESSAGES_PER_SECOND=1000000
  TROUPE_LIMITS__MESSAGE_BURST=1000000
  TROUPE_LIMITS__OUTBOUND_QUEUE=65536
  TROUPE_LIMITS__OUTBOUND_QUEUE_BYTES=268435456
  TROUPE_LIMITS__LOGINS_PER_MINUTE=1000000
  # Thousands of connections come from a few loopback addresses, and some
  # scenarios share one login among many connections: no connection caps.
  TROUPE_HTTP__MAX_CONNECTIONS=0
  TROUPE_HTTP__MAX_CONNECTIONS_PER_ADDRESS=0
  TROUPE_HTTP__MAX_SESSIONS_PER_USER=0
  TROUPE_RATE_LIMITS__REGISTER__BURST=1000000
  # coldrooms: one user creates thousands of rooms.
  TROUPE_RATE_LIMITS__CREATE_ROOM__BURST=1000000
  TROUPE_AUTH__SCRYPT_LOG_N="${BENCH_SCRYPT_LOG_N:-10}"
  RUST_LOG="${BENCH_RUST_LOG:-info}"
)

bench_cleanup() {
  local pid
  for pid in "${BENCH_PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${BENCH_PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  BENCH_PIDS=()
  rm -rf "$BENCH_TMP"
}

# bench_build PROFILE: builds troupe and troupe-bench; sets BIN_DIR.
bench_build() {
  local profile=$1
  local flags=()
  [ "$profile" = release ] && flags=(--release)
  (cd "$BENCH_ROOT" && cargo build "${flags[@]}" -p troupe -p troupe-bench --bins ${BENCH_CARGO_FLAGS:-})
  local dir=debug
  [ "$profile" = release ] && dir=release
  BIN_DIR="${CARGO_TARGET_DIR:-$BENCH_ROOT/target}/$dir"
}

# A free loopback TCP port.
free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# wait_port PORT: until something accepts on 127.0.0.1:PORT (at most 30 s).
wait_port() {
  local i
  for i in $(seq 300); do
    (echo >"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.1
  done
  echo "error: nothing listens on 127.0.0.1:$1" >&2
  return 1
}

# stop_pid PID: SIGTERM, then SIGKILL after 15 s.
stop_pid() {
  local pid=$1 i
  kill "$pid" 2>/dev/null || return 0
  for i in $(seq 150); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  kill -9 "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  local kept=()
  for i in "${BENCH_PIDS[@]}"; do [ "$i" != "$pid" ] && kept+=("$i"); done
  BENCH_PIDS=("${kept[@]}")
}

# start_troupe [PIN...]: a troupe node on the embedded default in a fresh
# data dir; sets SERVER_PID and SERVER_URL. PIN is a command prefix such as
# `taskset -c 0`.
start_troupe() {
  local port; port=$(free_port)
  local data="$BENCH_TMP/troupe-$port"
  mkdir -p "$data"
  env "${TROUPE_BENCH_ENV[@]}" "$@" "$BIN_DIR/troupe" serve --listen "127.0.0.1:$port" --data-dir "$data" \
    >"$BENCH_TMP/troupe-$port.log" 2>&1 &
  SERVER_PID=$!
  BENCH_PIDS+=("$SERVER_PID")
  SERVER_URL="http://127.0.0.1:$port"
  wait_port "$port" || { tail -20 "$BENCH_TMP/troupe-$port.log" >&2; return 1; }
}

# start_bare [PIN...]: the bare broadcast baseline; sets SERVER_PID and SERVER_URL.
start_bare() {
  local port; port=$(free_port)
  "$@" "$BIN_DIR/bare-broadcast" --listen "127.0.0.1:$port" ${BARE_FLAGS:-} \
    >"$BENCH_TMP/bare-$port.log" 2>&1 &
  SERVER_PID=$!
  BENCH_PIDS+=("$SERVER_PID")
  SERVER_URL="ws://127.0.0.1:$port"
  wait_port "$port" || { tail -20 "$BENCH_TMP/bare-$port.log" >&2; return 1; }
}
