#!/usr/bin/env bash
# Chat through the local API server with the echo provider, at concurrency 1 and 50.
# Runs inside `local_stack.py run` (AWS_ENDPOINT_URL points at a private stack). Usage:
#   bench_chat.sh LOCAL_API_BINARY CHAT_LOAD_BINARY
set -euo pipefail
server=$1 load=$2
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
stack_pid=$(pgrep -f "local_stack.py serve ${AWS_ENDPOINT_URL##*:}" | head -n1)
LLM_PROVIDERS=echo LOCAL_API_ADDR=127.0.0.1:$port RUST_LOG=warn "$server" &
server_pid=$!
trap 'kill $server_pid 2>/dev/null || true' EXIT
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$port/health" >/dev/null && break; sleep 0.1; done
"$load" "http://127.0.0.1:$port" 1 200 "$server_pid" "$stack_pid"
"$load" "http://127.0.0.1:$port" 50 500 "$server_pid" "$stack_pid"
