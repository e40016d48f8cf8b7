#!/usr/bin/env bash
# One cell of the chat load matrix: the local API server (echo provider with LLM_LATENCY ms
# standing in for an LLM) driven by USERS users for SECONDS. Runs inside its own
# `local_stack.py run`, so that a saturated cell cannot slow the next one. Usage:
#   bench_load.sh LOCAL_API_BINARY CHAT_LOAD_BINARY LLM_LATENCY USERS SECONDS
set -euo pipefail
server=$1 load=$2 latency=$3 users=$4 seconds=$5
source "$(dirname "$0")/local_api.sh"
stack_pid=$(local_stack_pid)
ulimit -n 65536 2>/dev/null || true
# The deployed default operation timeout, so that saturation shows as it would in Lambda.
start_local_api "$server" AWS_OPERATION_TIMEOUT_MS=5000 ECHO_LATENCY_MS="$latency" RUST_LOG=off
echo "--- LLM latency ${latency} ms, ${users} users, ${seconds} s"
"$load" "$url" "$users" "${seconds}s" "$server_pid" "$stack_pid"
