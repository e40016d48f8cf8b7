#!/usr/bin/env bash
# What Bedrock's prompt caching (BEDROCK_PROMPT_CACHE) saves on a long conversation: 30 streamed
# turns of one conversation through the local API server, whose Bedrock is provider-stub (it models
# Claude's prompt cache and reports its usage), with caching on and then off; the context window as
# deployed by default (HISTORY_CONTEXT_MESSAGES 20, HISTORY_CONTEXT_CHARS 16,000), a 600-character
# system prompt. Runs inside `local_stack.py run`.
#   bench_cache.sh LOCAL_API_BINARY CACHE_BENCH_BINARY PROVIDER_STUB_BINARY
set -euo pipefail
server=$1 bench=$2 stub=$3
source "$(dirname "$0")/local_api.sh"
mkdir -p .local
"$stub" 100 0 >.local/provider-stub.url &
server_pids+=("$!")
for _ in $(seq 100); do [[ -s .local/provider-stub.url ]] && break; sleep 0.1; done
stub_url=$(head -n1 .local/provider-stub.url)
prompt=$(python3 -c 'print(("You are a careful assistant for our team. " * 15)[:600])')
for cache in true false; do
  start_local_api "$server" LLM_PROVIDERS=bedrock AWS_ENDPOINT_URL_BEDROCK_RUNTIME="$stub_url" \
    BEDROCK_MODELS=us.anthropic.claude-bench-v1:0 BEDROCK_PROMPT_CACHE=$cache SYSTEM_PROMPT="$prompt"
  LABEL="BEDROCK_PROMPT_CACHE=$cache" "$bench" "$url" "$stub_url" 30 1200
done
