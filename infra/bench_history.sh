#!/usr/bin/env bash
# Per-turn latency through the whole chat path with 10 and 10,000 prior messages.
# Runs inside `local_stack.py run` (AWS_ENDPOINT_URL points at a private stack). Usage:
#   bench_history.sh LOCAL_API_BINARY HISTORY_BENCH_BINARY
set -euo pipefail
server=$1 bench=$2
source "$(dirname "$0")/local_api.sh"
start_local_api "$server"
"$bench" "$url" "$server_pid"
