#!/usr/bin/env bash
# The trip-booking saga, end to end: reserve, wait for a human, then confirm or compensate.
set -euo pipefail
cd "$(dirname "$0")/.."
export CADENZA_HOME="${CADENZA_HOME:-.cadenza/demo}"
cadenza=.venv/bin/cadenza
token_of() {  # the callback token the run waits on
  "$cadenza" runs show "$1" --json | .venv/bin/python -c \
    'import json,sys; print(json.load(sys.stdin)["waiting_for"][0]["token"])'
}
run_id_of() { .venv/bin/python -c 'import json,sys; print(json.load(sys.stdin)["run_id"])'; }

echo "== 1. Ada's trip: the saga reserves a flight and a hotel, then asks for approval"
approved=$("$cadenza" run examples.trip_booking:book_trip --quiet --json \
  --input '{"traveller": "Ada", "city": "Lisbon", "nights": 3}' | run_id_of)
"$cadenza" runs show "$approved"
echo
echo "== 2. The approver says yes (the run resumes from its journal and confirms)"
"$cadenza" callback succeed "$(token_of "$approved")" --payload '{"approved": true}'
echo
echo "== 3. Bob's trip is rejected: the saga cancels the hotel, then the flight"
rejected=$("$cadenza" run examples.trip_booking:book_trip --quiet --json \
  --input '{"traveller": "Bob", "city": "Oslo"}' | run_id_of)
"$cadenza" callback succeed "$(token_of "$rejected")" --payload '{"approved": false, "reason": "over budget"}'
echo
echo "== 4. Everything that happened is on record"
"$cadenza" runs history "$rejected"
echo
"$cadenza" runs list
echo
echo "State lives in $CADENZA_HOME. Try: $cadenza runs state $approved"
