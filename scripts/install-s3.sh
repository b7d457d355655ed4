#!/usr/bin/env bash
# Installs moto's S3-compatible server (`moto_server`), pinned, into a
# virtualenv in a cache outside the clone; the attachment tests run troupe's
# S3 store against it (tests/common/s3.rs starts it on a loopback port).
# Prints the server's path.
set -euo pipefail

VERSION=5.2.5
ROOT="${S3_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/troupe}/moto-$VERSION"
BIN="$ROOT/bin/moto_server"

# One install at a time (test binaries may call this concurrently), and a
# half-made virtualenv (an interrupted install) is never taken for a whole one.
mkdir -p "$(dirname "$ROOT")"
exec 9>"$ROOT.lock"
flock 9
if [ ! -f "$ROOT/.installed" ]; then
  echo "installing moto[server] $VERSION into $ROOT" >&2
  rm -rf "$ROOT"
  python3 -m venv "$ROOT" >&2
  "$ROOT/bin/pip" install --quiet --disable-pip-version-check "moto[server]==$VERSION" >&2
  touch "$ROOT/.installed"
fi
echo "$BIN"
