#!/usr/bin/env bash
# POST /chat load through the local API server (echo provider standing in for an LLM) at 1, 10,
# 100 and 1,000 users, with 0 and 1,000 ms of LLM latency, each for a bounded time. Runs inside
# `local_stack.py run`. Usage: bench_load.sh LOCAL_API_BINARY CHAT_LOAD_BINARY [SECONDS]
set -euo pipefail
server=$1 load=$2 seconds=${3:-20}
stack_pid=$(pgrep -f "local_stack.py serve ${AWS_ENDPOINT_URL##*:}" | head -n1)
ulimit -n 65536 2>/dev/null || true
for latency in 0 1000; do
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  LLM_PROVIDERS=echo ECHO_LATENCY_MS=$latency LOCAL_API_ADDR=127.0.0.1:$port RUST_LOG=warn "$server" &
  server_pid=$!
  for _ in $(seq 100); do curl -sf "http://127.0.0.1:$port/health" >/dev/null && break; sleep 0.1; done
  for users in 1 10 100 1000; do
    echo "--- LLM latency ${latency} ms, ${users} users, ${seconds} s"
    "$load" "http://127.0.0.1:$port" "$users" "${seconds}s" "$server_pid" "$stack_pid" || echo "(run failed: $?)"
  done
  kill "$server_pid"; wait "$server_pid" 2>/dev/null || true
done
