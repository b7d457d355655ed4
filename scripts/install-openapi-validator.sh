#!/usr/bin/env bash
# Installs openapi-spec-validator (PyPI), pinned, into a virtualenv in a
# cache outside the clone; tests/api_docs.rs validates the node's
# `/api/openapi.json` with it. Prints the validator's path.
set -euo pipefail

VERSION=0.9.0
ROOT="${OPENAPI_VALIDATOR_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/troupe}/openapi-spec-validator-$VERSION"
BIN="$ROOT/bin/openapi-spec-validator"

# One install at a time (the test phases may call this concurrently), and a
# half-made virtualenv (an interrupted install) is never taken for a whole one.
mkdir -p "$(dirname "$ROOT")"
exec 9>"$ROOT.lock"
flock 9
if [ ! -f "$ROOT/.installed" ]; then
  echo "installing openapi-spec-validator $VERSION into $ROOT" >&2
  rm -rf "$ROOT"
  python3 -m venv "$ROOT" >&2
  "$ROOT/bin/pip" install --quiet --disable-pip-version-check "openapi-spec-validator==$VERSION" >&2
  touch "$ROOT/.installed"
fi
echo "$BIN"
