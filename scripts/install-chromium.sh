#!/usr/bin/env bash
# Installs Debian's chromium, which the admin page test (tests/admin_page.rs)
# drives headless. Idempotent: nothing happens when /usr/bin/chromium exists;
# `apt-get update` runs only when the package is not installable as is.
# Needs root (CI runs as root on a fresh Debian machine).
set -euo pipefail

BIN=/usr/bin/chromium
if [ -x "$BIN" ]; then
  exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
  echo "error: $BIN is missing and installing it needs root (apt-get install chromium)" >&2
  exit 1
fi

export DEBIAN_FRONTEND=noninteractive
echo "installing chromium (apt-get) for the admin page test" >&2
# A fresh machine has empty package lists: fetch them only then.
if ! apt-cache show chromium >/dev/null 2>&1 || [ -z "$(apt-cache policy chromium | awk '/Candidate:/ { print $2 }' | grep -v none)" ]; then
  apt-get update -qq >&2
fi
if ! apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core >&2; then
  # Stale lists (a package version gone from the mirror): refresh once and retry.
  apt-get update -qq >&2
  apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core >&2
fi
[ -x "$BIN" ] || { echo "error: chromium installed but $BIN is missing" >&2; exit 1; }
