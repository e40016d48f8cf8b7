#!/usr/bin/env bash
# Four local API servers (four "execution environments") against one local stack, 400 turns on
# one conversation spread over them at once. Runs inside `local_stack.py run`. Usage:
#   bench_instances.sh LOCAL_API_BINARY MANY_INSTANCES_BINARY
set -euo pipefail
server=$1 tool=$2
pids=() urls=()
trap 'kill "${pids[@]}" 2>/dev/null || true' EXIT
for _ in 1 2 3 4; do
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  LLM_PROVIDERS=echo LOCAL_API_ADDR=127.0.0.1:$port RUST_LOG=warn "$server" &
  pids+=($!) urls+=("http://127.0.0.1:$port")
done
for url in "${urls[@]}"; do
  for _ in $(seq 100); do curl -sf "$url/health" >/dev/null && break; sleep 0.1; done
done
"$tool" "$(IFS=,; echo "${urls[*]}")" 400 100
