#!/usr/bin/env bash
# heaptrack (and heaptrack_print), for benches/heaptrack.sh: where the bytes
# of idle connections are. Benchmarks only, never CI. Debian and Ubuntu
# package it (1.4 was used for benches/RESULTS.md); elsewhere, install it
# from your distribution or https://github.com/KDE/heaptrack.
set -euo pipefail
if command -v heaptrack >/dev/null && command -v heaptrack_print >/dev/null; then
  heaptrack --version 2>/dev/null | head -1
  exit 0
fi
if command -v apt-get >/dev/null; then
  sudo=()
  [ "$(id -u)" -ne 0 ] && sudo=(sudo)
  "${sudo[@]}" apt-get update -qq
  "${sudo[@]}" apt-get install -y -qq heaptrack >/dev/null
  heaptrack --version 2>/dev/null | head -1
  exit 0
fi
echo "heaptrack is not installed and there is no apt-get here: install heaptrack (with heaptrack_print) from your distribution" >&2
exit 1
