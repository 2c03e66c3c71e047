#!/usr/bin/env bash
# Renders a finetune report in headless Chromium and fails on any console error or missing plot; saves a
# screenshot. Installs the Debian package `chromium` when it is missing (needs apt-get and root).
#
#   scripts/report-check.sh REPORT.html [SCREENSHOT.png] [MIN_PLOTS]
#
# Checks: the DOM after rendering holds at least MIN_PLOTS (default 1) <svg class="plot"> elements, every plot
# has drawn content, the page has no <script> and loads nothing from the network, and Chromium logs no console
# message of level warning or error ("CONSOLE" lines of --enable-logging=stderr).
set -euo pipefail
report=${1:?usage: $0 REPORT.html [SCREENSHOT.png] [MIN_PLOTS]}
shot=${2:-${report%.html}.png}
min_plots=${3:-1}
[ -f "$report" ] || { echo "error: $report: no such file" >&2; exit 2; }

browser=$(command -v chromium || command -v chromium-browser || true)
if [ -z "$browser" ]; then
  echo "installing chromium (apt-get)..." >&2
  apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core >/dev/null
  browser=$(command -v chromium)
fi

url="file://$(cd "$(dirname "$report")" && pwd)/$(basename "$report")"
profile=$(mktemp -d)
work=$(mktemp -d)
trap 'rm -rf "$profile" "$work"' EXIT
flags=(--headless --no-sandbox --disable-gpu --disable-quic --no-first-run --disable-background-networking
       --disable-component-update --disable-sync --user-data-dir="$profile" --enable-logging=stderr --v=0
       --virtual-time-budget=3000)

"$browser" "${flags[@]}" --dump-dom "$url" >"$work/dom.html" 2>"$work/log.txt" || {
  cat "$work/log.txt" >&2; echo "error: chromium failed to render $report" >&2; exit 1; }

fail=0
plots=$(grep -o '<svg class="plot' "$work/dom.html" | wc -l)
echo "plots rendered: $plots"
if [ "$plots" -lt "$min_plots" ]; then
  echo "error: $plots plots in the rendered page, expected at least $min_plots" >&2; fail=1
fi
# A plot must draw something: a path, a bar, a heat-map cell or a marker.
empty=$(python3 - "$work/dom.html" <<'PY'
import re, sys
dom = open(sys.argv[1], encoding="utf-8").read()
svgs = re.findall(r'<svg class="plot.*?</svg>', dom, re.S)
bad = [re.search(r'<title>(.*?)</title>', s).group(1) for s in svgs
       if not re.search(r'<(path|circle) |class="(cell|b\d)"', s)]
print("\n".join(bad))
PY
)
if [ -n "$empty" ]; then echo "error: plots without data: $empty" >&2; fail=1; fi
if grep -q '<script' "$work/dom.html"; then echo "error: the report contains a script" >&2; fail=1; fi
if grep -Eo '(src|href)="(https?:)?//[^"]*' "$work/dom.html" | grep -q .; then
  echo "error: the report loads from the network" >&2; fail=1
fi
if grep -E 'CONSOLE|Uncaught|ERROR:.*(Failed to load|net::)' "$work/log.txt" | grep -v 'dbus\|Fontconfig\|gpu\|sandbox' ; then
  echo "error: console messages while rendering (above)" >&2; fail=1
fi

"$browser" "${flags[@]}" --hide-scrollbars --window-size=1280,2400 --screenshot="$shot" "$url" >/dev/null 2>&1
[ -s "$shot" ] || { echo "error: no screenshot written" >&2; exit 1; }
echo "screenshot: $shot"
exit $fail
