#!/usr/bin/env bash
# Renders a `bertlab report` page in headless Chromium and saves a screenshot, to look at it:
#   scripts/screenshot-report.sh report.html report.png
# Needs Debian's chromium package (apt-get install chromium).
set -euo pipefail
page="$(realpath "$1")"
shot="${2:-${1%.html}.png}"
chromium --headless --no-sandbox --disable-gpu --hide-scrollbars --window-size=1400,1100 \
    --screenshot="$shot" "file://$page" 2>/dev/null
echo "wrote $shot"
