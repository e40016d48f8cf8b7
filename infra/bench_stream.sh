#!/usr/bin/env bash
# Streamed chat turns through the local API server (echo provider, a fixed delay per token), read
# by an SSE client: our added time to the first delta, CPU per streamed token, peak memory for a
# 20-token and a 2,000-token reply (each on a fresh server). Runs inside `local_stack.py run`.
#   bench_stream.sh LOCAL_API_BINARY STREAM_BENCH_BINARY
set -euo pipefail
server=$1 bench=$2
source "$(dirname "$0")/local_api.sh"
start_local_api "$server" ECHO_TOKEN_DELAY_MS=5
"$bench" "$url" 20 100 5 "$server_pid"
start_local_api "$server" ECHO_TOKEN_DELAY_MS=1
"$bench" "$url" 2000 5 1 "$server_pid"
