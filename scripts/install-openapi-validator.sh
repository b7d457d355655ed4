#!/usr/bin/env bash
# Installs openapi-spec-validator (PyPI), pinned, into a virtualenv in a
# cache outside the clone; tests/api_docs.rs validates the node's
# `/api/openapi.json` with it. Prints the validator's path.
set -euo pipefail

VERSION=0.9.0
ROOT="${OPENAPI_VALIDATOR_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/troupe}/openapi-spec-validator-$VERSION"
BIN="$ROOT/bin/openapi-spec-validator"

if [ ! -x "$BIN" ]; then
  echo "installing openapi-spec-validator $VERSION into $ROOT" >&2
  rm -rf "$ROOT"
  python3 -m venv "$ROOT" >&2
  "$ROOT/bin/pip" install --quiet --disable-pip-version-check "openapi-spec-validator==$VERSION" >&2
fi
echo "$BIN"
