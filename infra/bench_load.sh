#!/usr/bin/env bash
# One cell of the chat load matrix: the local API server (echo provider with LLM_LATENCY ms
# standing in for an LLM) driven by USERS users for SECONDS. Runs inside its own
# `local_stack.py run`, so that a saturated cell cannot slow the next one. Usage:
#   bench_load.sh LOCAL_API_BINARY CHAT_LOAD_BINARY LLM_LATENCY USERS SECONDS
set -euo pipefail
server=$1 load=$2 latency=$3 users=$4 seconds=$5
stack_pid=$(pgrep -f "local_stack.py serve ${AWS_ENDPOINT_URL##*:}" | head -n1)
ulimit -n 65536 2>/dev/null || true
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
# The deployed default operation timeout, so that saturation shows as it would in Lambda.
AWS_OPERATION_TIMEOUT_MS=5000 LLM_PROVIDERS=echo ECHO_LATENCY_MS=$latency LOCAL_API_ADDR=127.0.0.1:$port \
  RUST_LOG=off "$server" &
server_pid=$!
trap 'kill $server_pid 2>/dev/null || true' EXIT
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$port/health" >/dev/null && break; sleep 0.1; done
echo "--- LLM latency ${latency} ms, ${users} users, ${seconds} s"
"$load" "http://127.0.0.1:$port" "$users" "${seconds}s" "$server_pid" "$stack_pid"
