#!/usr/bin/env bash
# Installs cargo-deny (licences, bans, sources of the dependency graph),
# pinned, into a cache outside the clone; prints the binary's path.
set -euo pipefail

VERSION=0.20.2
ROOT="${XDG_CACHE_HOME:-$HOME/.cache}/troupe/cargo-deny-$VERSION"
BIN="$ROOT/bin/cargo-deny"
if [ ! -x "$BIN" ]; then
  echo "installing cargo-deny $VERSION into $ROOT (first time on this machine)" >&2
  cargo install --locked --version "$VERSION" --root "$ROOT" cargo-deny >&2
fi
echo "$BIN"
