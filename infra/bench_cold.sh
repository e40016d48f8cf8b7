#!/usr/bin/env bash
# Cold start and warm invocations of every function's release binary, through a local Lambda
# Runtime API, against the local stack. Runs inside `local_stack.py run`. Usage:
#   bench_cold.sh COLD_START_BINARY [INVOCATIONS]
# With BASELINE=DIR (another checkout's target/lambda, e.g. of the previous commit), each function
# is measured twice in the same run, the baseline's binary first, with the same harness.
set -euo pipefail
harness=$1 invocations=${2:-1000}
mkdir -p .local
# The chat sample without its Idempotency-Key, so that every invocation is a real turn.
python3 - <<'PY'
import json
event = json.load(open("events/chat-post.json"))
for headers in (event["headers"], event["multiValueHeaders"]):
    headers.pop("Idempotency-Key", None)
json.dump(event, open(".local/chat-bench-event.json", "w"))
PY
export LLM_PROVIDERS=echo
for pair in health:events/health-get.json history:events/history-list-conversations.json \
            feedback:events/feedback-get.json chat:.local/chat-bench-event.json; do
  function=${pair%%:*} event=${pair#*:}
  if [[ -n "${BASELINE:-}" ]]; then
    echo "== $function, baseline ($BASELINE)"
    "$harness" "$BASELINE/$function/bootstrap" "$event" "$invocations"
    echo "== $function, this checkout"
  fi
  "$harness" "target/lambda/$function/bootstrap" "$event" "$invocations"
done
