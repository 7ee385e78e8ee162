#!/usr/bin/env bash
# Render report.html (from `make report`) in headless Chromium and save a screenshot,
# so that a person can check that the report actually renders.
#   usage: tools/screenshot_report.sh [report.html] [report.png]
# Needs Debian's chromium (`apt-get install chromium`).
set -euo pipefail
html="$(realpath "${1:-report.html}")"
png="$(realpath -m "${2:-report.png}")"
profile="$(mktemp -d)"
trap 'rm -rf "$profile"' EXIT
chromium --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
    --disable-background-networking --disable-component-update --disable-sync \
    --user-data-dir="$profile" --window-size=1400,1000 --virtual-time-budget=8000 \
    --screenshot="$png" "file://$html" 2>/dev/null
echo "wrote $png"
