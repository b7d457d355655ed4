#!/usr/bin/env bash
# The whole test suite: formatting, lints, unit tests, then the integration
# tests twice from the same code: on the embedded default (SQLite, in-process
# log, in-memory presence) and on real servers (Postgres, Kafka, Redis).
#
# Real servers: Postgres on 127.0.0.1:5432 and Redis on 127.0.0.1:6379 must
# be running (TEST_POSTGRES / TEST_REDIS point elsewhere); the Kafka-compatible
# broker (tansu) is installed by scripts/install-tansu.sh and started here on
# a loopback port, and stopped when the tests end.
set -euo pipefail
cd "$(dirname "$0")/.."

log=$(mktemp)
broker_pid=""
cleanup() {
  if [ -n "$broker_pid" ]; then kill "$broker_pid" 2>/dev/null || true; wait "$broker_pid" 2>/dev/null || true; fi
  if [ "${TEST_STORES:-}" = real ]; then
    # The databases and keys each test node made (see tests/common/node.rs).
    for db in $(psql "$TEST_POSTGRES/postgres" -Atc "select datname from pg_database where datname like 'troupe\_t%'" 2>/dev/null); do
      psql "$TEST_POSTGRES/postgres" -qc "drop database if exists \"$db\" with (force)" >/dev/null 2>&1 || true
    done
    redis-cli -u "$TEST_REDIS" --scan --pattern 'troupe-t*' 2>/dev/null | xargs -r -n 500 redis-cli -u "$TEST_REDIS" del >/dev/null 2>&1 || true
  fi
  rm -f "$log"
}
trap cleanup EXIT

summary() {
  # One closing line for the whole run: the sum of every `test result:` line.
  awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
       END { printf "tests: %d passed, %d failed\n", p, f }' "$log"
}

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets --features test-hooks -- -D warnings

echo "== deploy/k8s manifests"
scripts/check-deploy.sh
echo "== dependencies (cargo deny)"
scripts/check-deps.sh

# The fault tests (tests/faults.rs) run brokers, Redis and Postgres of their own.
export TEST_TANSU
TEST_TANSU=$(scripts/install-tansu.sh)
# The admin and chat page tests (tests/admin_page.rs, tests/web_page.rs) drive
# Debian's chromium headless.
scripts/install-chromium.sh
# The attachment tests (tests/attachments.rs) start moto's S3 server.
export TEST_S3_SERVER
TEST_S3_SERVER=$(scripts/install-s3.sh)
# tests/api_docs.rs validates the node's /api/openapi.json with it.
export TEST_OPENAPI_VALIDATOR
TEST_OPENAPI_VALIDATOR=$(scripts/install-openapi-validator.sh)

echo "== unit and integration tests, embedded default (and the fault tests)"
cargo test --workspace --features test-hooks -- --skip cluster_ 2>&1 | tee -a "$log"

# Several troupe processes each, on Postgres, Redis and a tansu of their own:
# one scenario at a time (two cores).
echo "== cluster tests"
cargo test -p troupe --features test-hooks --test cluster -- --test-threads=1 2>&1 | tee -a "$log"
# The chat page in two browsers while a node of a two-node cluster is killed.
cargo test -p troupe --features test-hooks --test web_page -- cluster_ --test-threads=1 2>&1 | tee -a "$log"
# Offline notifications: the node holding a webhook POST is killed, the other delivers it.
cargo test -p troupe --features test-hooks --test notifications -- cluster_ --test-threads=1 2>&1 | tee -a "$log"

echo "== integration tests, real servers"
export TEST_POSTGRES="${TEST_POSTGRES:-postgres://root@127.0.0.1:5432}"
export TEST_REDIS="${TEST_REDIS:-redis://127.0.0.1:6379}"
psql "$TEST_POSTGRES/postgres" -qc 'select 1' >/dev/null \
  || { echo "error: PostgreSQL at $TEST_POSTGRES does not answer"; exit 1; }
redis-cli -u "$TEST_REDIS" ping | grep -q PONG \
  || { echo "error: Redis at $TEST_REDIS does not answer"; exit 1; }
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
"$TEST_TANSU" broker --listener-url "tcp://127.0.0.1:$port" --advertised-listener-url "tcp://127.0.0.1:$port" \
  --storage-engine memory://tansu/ >"${TMPDIR:-/tmp}/troupe-test-tansu.log" 2>&1 &
broker_pid=$!
for _ in $(seq 100); do
  (echo >"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
  sleep 0.1
done
(echo >"/dev/tcp/127.0.0.1/$port") 2>/dev/null || { echo "error: tansu did not start on port $port"; exit 1; }
export TEST_STORES=real TEST_KAFKA="127.0.0.1:$port"
# The fault and cluster tests already ran above, against servers of their own.
cargo test -p troupe --features test-hooks --tests -- --skip fault_ --skip cluster_ 2>&1 | tee -a "$log"

echo "== benchmarks: every scenario once at a tiny size (no timings judged)"
benches/smoke.sh

summary
if grep -q '^test result: FAILED' "$log"; then exit 1; fi
