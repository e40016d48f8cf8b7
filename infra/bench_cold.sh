#!/usr/bin/env bash
# Every function's release binary through a local Lambda Runtime API whose receiver delays its
# acknowledgements as a default Linux stack does (tests/src/runtime_api.rs), against the local
# stack: cold starts, then warm invocations, buffered and streamed answers side by side. Runs
# inside `local_stack.py run`. Usage:
#   bench_cold.sh COLD_START_BINARY [INVOCATIONS]
# With BASELINE=DIR (another checkout's target/lambda, e.g. of the previous commit), each line is
# measured twice in the same run, the baseline's binary first, with the same harness.
set -euo pipefail
harness=$1 invocations=${2:-1000}
# Chat's turns fill moto's table, which slows every later turn: fewer of them.
chat_invocations=$(( invocations < 200 ? invocations : 200 ))
mkdir -p .local
python3 infra/bench_events.py
export LLM_PROVIDERS=echo
# Init as the process's own work, without the connections it opens ahead for its first call
# (CONNECT_AT_INIT_MS, on by default): `make bench-first` measures those, over TLS.
export CONNECT_AT_INIT_MS=0
# One line per case: label, function, event, invocations, extra environment.
cases=(
  "health|health|events/health-get.json|$invocations|"
  "history|history|events/history-list-conversations.json|$invocations|"
  "feedback|feedback|events/feedback-get.json|$invocations|"
  "chat JSON turn|chat|.local/chat-bench-event.json|$chat_invocations|"
  "chat 401 (streamed format)|chat|.local/chat-bench-anonymous-event.json|$invocations|"
  "chat 401, ACKs at once|chat|.local/chat-bench-anonymous-event.json|$invocations|ACKS=at-once"
  "chat streamed turn, 5 ms a token|chat|.local/chat-bench-stream-event.json|$chat_invocations|ECHO_TOKEN_DELAY_MS=5"
  "chat streamed turn, ACKs at once|chat|.local/chat-bench-stream-event.json|$chat_invocations|ECHO_TOKEN_DELAY_MS=5 ACKS=at-once"
)
for case in "${cases[@]}"; do
  IFS='|' read -r label function event count extra <<<"$case"
  if [[ -n "${BASELINE:-}" ]]; then
    env $extra LABEL="$label, baseline" "$harness" "$BASELINE/$function/bootstrap" "$event" "$count"
  fi
  env $extra LABEL="$label" "$harness" "target/lambda/$function/bootstrap" "$event" "$count"
done
