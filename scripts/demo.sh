#!/usr/bin/env bash
# The main demo, offline: research-report with the local model, from a topic to an
# approval request, then the editor's approval publishes the report.
set -euo pipefail
cd "$(dirname "$0")/.."
export CADENZA_HOME="${CADENZA_HOME:-.cadenza/demo}"
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
token=$(field waiting_for.0.token < "$CADENZA_HOME.last.json")
echo
echo "== 2. The run waits for the editor, holding no process. The editor approves:"
echo "   $cadenza callback succeed <token> --payload '{\"decision\": \"approve\"}'"
"$cadenza" callback succeed "$token" --payload '{"decision": "approve"}'
echo
echo "== 3. The published report"
cat "$CADENZA_HOME"/reports/"$run".md
echo
echo "Everything the run did: $cadenza runs history $run"
echo "Its state document:     $cadenza runs state $run"
echo "The trip-booking saga:  $cadenza examples run trip-booking"
