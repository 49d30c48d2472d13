#!/usr/bin/env bash
# Render a run's report in headless Chromium (Debian's `chromium`), check that every section
# shows with content, and save a screenshot:
#   scripts/report_check.sh <distill binary> <run dir> [screenshot.png]
set -euo pipefail
bin=${1:?distill binary}
run=${2:?run directory}
shot=${3:-}
command -v chromium >/dev/null || { echo "chromium not installed (apt-get install chromium): skipped"; exit 0; }
"$bin" report "$run" >/dev/null
page=$(realpath "$run/report.html")
dom=$(mktemp)
chromium --headless --no-sandbox --disable-gpu --dump-dom "file://$page" 2>/dev/null >"$dom"
fail=0
for id in recipe data plots eval exports speculative; do
  # The section as the browser parsed it: its heading and something after it.
  body=$(python3 - "$dom" "$id" <<'PY'
import sys, re
html = open(sys.argv[1]).read()
m = re.search(r'<section id="%s"><h2>([^<]+)</h2>(.*?)</section>' % sys.argv[2], html, re.S)
print("" if not m else "%s|%d|%d|%d" % (m.group(1), len(re.sub(r"<[^>]+>", "", m.group(2)).strip()), m.group(2).count("<svg"), m.group(2).count("<tr>")))
PY
)
  if [ -z "$body" ]; then echo "section $id: MISSING"; fail=1; else echo "section $id: $body (heading|text chars|svg|table rows)"; fi
done
[ -n "$shot" ] && chromium --headless --no-sandbox --disable-gpu --hide-scrollbars --window-size=1200,3300 \
  --screenshot="$shot" "file://$page" 2>/dev/null && echo "screenshot: $shot"
rm -f "$dom"
exit $fail
