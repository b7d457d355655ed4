#!/usr/bin/env bash
# Installs tansu, the Kafka-compatible broker the tests run against, pinned,
# into a cache outside the clone (it takes ~20 minutes to build from scratch,
# so a machine builds it once). Prints the binary's path.
#
# Its default build has no storage engine: `dynostore` brings `memory://`.
set -euo pipefail

VERSION=0.6.0
ROOT="${TANSU_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/troupe}/tansu-$VERSION"
BIN="$ROOT/bin/tansu"

if [ ! -x "$BIN" ]; then
  echo "installing tansu $VERSION into $ROOT (first time on this machine: ~20 min)" >&2
  cargo install --locked --features dynostore --version "$VERSION" --root "$ROOT" tansu >&2
fi
echo "$BIN"
