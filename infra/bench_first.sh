#!/usr/bin/env bash
# The cold first turn, as a deployed chat function pays for it: its release binary started cold
# under the Runtime API emulator, its first invocation a chat turn, over TLS to DynamoDB and
# Secrets Manager (two hosts: infra/tls_front.py in front of the local stack) and to an
# OpenAI-compatible provider stub, the function trusting the system's roots plus the run's own CA
# as it would trust AWS's. Each case runs at full CPU ("full"), and at 1/14 of a core (what Lambda
# allots at 128 MB) once init is done ("on-demand": Lambda runs an on-demand environment's init on
# a full vCPU) or from the start ("provisioned": provisioned concurrency's init gets no burst, but
# runs before any caller), with connections left to the first call and opened during init
# (CONNECT_AT_INIT_MS).
# Runs inside `local_stack.py run`, whose secret must hold an openai_api_key. Usage:
#   bench_first.sh COLD_START_BINARY [COLD_STARTS]
# AWS_RTT_MS and PROVIDER_RTT_MS add round trips to those connections (default 0: loopback, only
# CPU is measured); CPU_LIMIT (default 7143/100000, QUOTA/PERIOD in µs) is the limited cases' CPU,
# which needs a cgroup the caller may create (root); CPU_LIMIT=none leaves those cases out.
set -euo pipefail
harness=$1 cold=${2:-10}
mkdir -p .local/tls
python3 infra/bench_events.py
rm -f .local/tls/endpoints
python3 infra/tls_front.py .local/tls "$AWS_ENDPOINT_URL" "${AWS_RTT_MS:-0}" "${PROVIDER_RTT_MS:-0}" >.local/tls/endpoints &
front=$!
trap 'kill $front 2>/dev/null || true' EXIT
for _ in $(seq 100); do [[ -s .local/tls/endpoints ]] && break; sleep 0.1; done
[[ -s .local/tls/endpoints ]] || { echo "bench-first: the TLS front did not start" >&2; exit 1; }
endpoint() { python3 -c "import json,sys; print(json.load(open('.local/tls/endpoints'))[sys.argv[1]])" "$1"; }
export AWS_ENDPOINT_URL_DYNAMODB=$(endpoint dynamodb)
export AWS_ENDPOINT_URL_SECRETS_MANAGER=$(endpoint secretsmanager)
export OPENAI_BASE_URL=$(endpoint openai)
unset AWS_ENDPOINT_URL SSL_CERT_DIR
export SSL_CERT_FILE=.local/tls/bundle.pem LLM_TLS_ROOTS=system LLM_PROVIDERS=openai
cpu_limit=${CPU_LIMIT:-7143/100000}
# One line per case: label, function, event, the CONNECT_AT_INIT_MS values to compare.
cases=(
  "chat JSON turn|chat|.local/chat-bench-event.json|0 1000"
  "chat streamed turn|chat|.local/chat-bench-stream-event.json|0 1000"
  "history, list conversations|history|events/history-list-conversations.json|0 1000"
)
for case in "${cases[@]}"; do
  IFS='|' read -r label function event connects <<<"$case"
  [[ -n "${ONLY:-}" && $label != *"$ONLY"* ]] && continue
  modes="full on-demand provisioned"
  [[ $cpu_limit == none ]] && modes=full
  for mode in $modes; do
    for connect in $connects; do
      limit=()
      case $mode in
        on-demand) limit=(CPU_LIMIT="$cpu_limit" CPU_INIT=full) ;;
        provisioned) limit=(CPU_LIMIT="$cpu_limit" CPU_INIT=limited) ;;
      esac
      env "${limit[@]}" CONNECT_AT_INIT_MS="$connect" \
        LABEL="$label, CPU $mode, CONNECT_AT_INIT_MS=$connect" \
        "$harness" "target/lambda/$function/bootstrap" "$event" 20 "$cold"
    done
  done
done
