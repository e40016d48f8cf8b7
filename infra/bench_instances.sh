#!/usr/bin/env bash
# Four local API servers (four "execution environments") against one local stack, 400 turns on
# one conversation spread over them at once. Runs inside `local_stack.py run`. Usage:
#   bench_instances.sh LOCAL_API_BINARY MANY_INSTANCES_BINARY
set -euo pipefail
server=$1 tool=$2
source "$(dirname "$0")/local_api.sh"
urls=()
for _ in 1 2 3 4; do
  start_local_api "$server"
  urls+=("$url")
done
"$tool" "$(IFS=,; echo "${urls[*]}")" 400 100
