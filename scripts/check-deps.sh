#!/usr/bin/env bash
# The dependency graph against deny.toml: licences, banned and duplicate
# crates, sources (crates.io only). See deny.toml about advisories.
set -euo pipefail
cd "$(dirname "$0")/.."
DENY=$(scripts/install-cargo-deny.sh)
# Duplicates are warnings (listed in the log); a disallowed licence, a
# wildcard or an unknown source fails.
"$DENY" check licenses bans sources 2>&1 | grep -E '^(error|warning)\[' | sort | uniq -c || true
"$DENY" check licenses bans sources >/dev/null 2>&1 || { "$DENY" check licenses bans sources; exit 1; }
echo "dependencies: licences, bans and sources as deny.toml allows"
