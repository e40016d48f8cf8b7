#!/usr/bin/env bash
# Per-turn latency through the whole chat path with 10 and 10,000 prior messages.
# Runs inside `local_stack.py run` (AWS_ENDPOINT_URL points at a private stack). Usage:
#   bench_history.sh LOCAL_API_BINARY HISTORY_BENCH_BINARY
set -euo pipefail
server=$1 bench=$2
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
LLM_PROVIDERS=echo LOCAL_API_ADDR=127.0.0.1:$port RUST_LOG=warn "$server" &
server_pid=$!
trap 'kill $server_pid 2>/dev/null || true' EXIT
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$port/health" >/dev/null && break; sleep 0.1; done
"$bench" "http://127.0.0.1:$port" "$server_pid"
