#!/usr/bin/env bash
# Chat through the local API server with the echo provider, at concurrency 1 and 50.
# Runs inside `local_stack.py run` (AWS_ENDPOINT_URL points at a private stack). Usage:
#   bench_chat.sh LOCAL_API_BINARY CHAT_LOAD_BINARY
set -euo pipefail
server=$1 load=$2
source "$(dirname "$0")/local_api.sh"
stack_pid=$(local_stack_pid)
start_local_api "$server"
"$load" "$url" 1 200 "$server_pid" "$stack_pid"
"$load" "$url" 50 500 "$server_pid" "$stack_pid"
