#!/usr/bin/env bash
# Screenshot a page of the sandbox's Prefect UI with headless Chromium (Debian package `chromium`).
# usage: scripts/screenshot-ui.sh [PAGE] [OUT.png]    e.g. scripts/screenshot-ui.sh deployments docs/prefect-ui-deployments.png
# SIZE=W,H sets the window (default 1440,900), e.g. for a longer page.
set -euo pipefail
page=${1:-deployments}
out=${2:-docs/prefect-ui-${page//\//-}.png}
api=$(.venv/bin/scaleops sandbox env --json | .venv/bin/python -c 'import json,sys; print(json.load(sys.stdin)["PREFECT_API_URL"])')
profile=$(mktemp -d)
trap 'rm -rf "$profile"' EXIT
# the background-networking flags keep Chromium from reaching for hosts this machine cannot reach
chromium --headless --no-sandbox --disable-gpu --disable-quic --no-first-run --disable-background-networking \
  --disable-component-update --disable-sync --user-data-dir="$profile" --window-size="${SIZE:-1440,900}" \
  --virtual-time-budget=15000 --screenshot="$out" "${api%/api}/$page" 2>/dev/null
echo "$out"
