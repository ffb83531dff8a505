#!/usr/bin/env bash
# The main demo, offline: research-report with the local model, from a topic to an
# approval request, then the editor's approval publishes the report.
set -euo pipefail
cd "$(dirname "$0")/.."
export CADENZA_HOME="${CADENZA_HOME:-.cadenza/demo}"
port="${CADENZA_DEMO_PORT:-8765}"
# Links in notifications point at the service this demo starts.
export CADENZA_SERVICE_BASE_URL="http://127.0.0.1:$port"
export HF_HUB_OFFLINE=1 TRANSFORMERS_VERBOSITY=error TQDM_DISABLE=1
cadenza=.venv/bin/cadenza
py=.venv/bin/python

echo "== 1. research-report: search agent, summaries, writer and evaluator (local model)"
echo "   (a 135M-parameter model on 2 cores: expect a minute or two, and modest prose)"
# The live view shows each agent's work as it happens; the run then waits for the editor.
"$cadenza" examples run research-report || true
# field PATH: the value at a dotted path (0.run_id) of the JSON document on stdin.
field() {
  $py -c 'import json, sys
value = json.load(sys.stdin)
for key in sys.argv[1].split("."):
    value = value[int(key) if key.isdigit() else key]
print(value)' "$1"
}
run=$("$cadenza" runs list --workflow research-report --limit 1 --json | field 0.run_id)
"$cadenza" runs show "$run" --json > "$CADENZA_HOME.last.json"
status=$(field status < "$CADENZA_HOME.last.json")
if [ "$status" != "SUSPENDED" ]; then
  "$cadenza" runs show "$run"
  echo "the run did not reach the approval step; see: $cadenza runs history $run" >&2
  exit 1
fi
echo
echo "== 2. The run waits for the editor, holding no process. Their notification (in"
echo "   $CADENZA_HOME/notifications.log) carries a link of their own:"
link=$(tail -n 1 "$CADENZA_HOME/notifications.log" | field links.0.url)
echo "   $link"
echo "   'cadenza serve' answers it; the editor opens it and approves:"
"$cadenza" serve --port "$port" > "$CADENZA_HOME.serve.log" 2>&1 &
serve=$!
trap 'kill $serve 2>/dev/null || true' EXIT
"$py" - "$link" <<'PY'
import re
import sys
import time

import httpx

link = sys.argv[1]
for _ in range(150):  # the server takes a moment to start
    try:
        page = httpx.get(link, timeout=5)
        break
    except httpx.TransportError:
        time.sleep(0.2)
else:
    sys.exit("cadenza serve did not answer; see its log next to CADENZA_HOME (.serve.log)")
title = re.search(r"<h1[^>]*>(.*?)</h1>", page.text, re.S)
print(f"   GET  the link  -> {page.status_code}: {title[1].strip() if title else page.text[:80]}")
answer = httpx.post(link, data={"decision": "approve", "comment": "Ship it."}, timeout=30)
print(f"   POST 'Approve' -> {answer.status_code}")
if answer.status_code != 200:
    sys.exit(answer.text[:500])
PY
# The server's worker resumes the run and publishes the report.
for _ in $(seq 1 120); do
  status=$("$cadenza" runs show "$run" --json | field status)
  [ "$status" = "SUCCEEDED" ] && break
  sleep 1
done
kill "$serve" 2>/dev/null || true
wait "$serve" 2>/dev/null || true
if [ "$status" != "SUCCEEDED" ]; then
  "$cadenza" runs show "$run"
  echo "the run did not finish after the approval; see: $cadenza runs history $run" >&2
  exit 1
fi
echo "== 3. The published report"
cat "$CADENZA_HOME"/reports/"$run".md
echo
key=$("$cadenza" keys create --name demo-operator --scope read --scope operate --scope approve \
  --json | field key)
echo
echo "Everything the run did: $cadenza runs trace $run   (or: runs history, runs state)"
echo "The web console:        CADENZA_HOME=$CADENZA_HOME $cadenza serve"
echo "                        then open http://127.0.0.1:8000/ and sign in with the key"
echo "                        $key"
echo "The trip-booking saga:  $cadenza examples run trip-booking"
