#!/usr/bin/env bash
# Streamed chat turns through the local API server (echo provider, a fixed delay per token), read
# by an SSE client: our added time to the first delta, CPU per streamed token, peak memory for a
# 20-token and a 2,000-token reply (each on a fresh server). Runs inside `local_stack.py run`.
# Then the same 20-token turns from OpenAI, Anthropic and Bedrock, each a provider stub in its own
# wire format over HTTP on loopback (provider-stub), so that the figures compare what each
# provider's client and parser add. The secret must hold openai_api_key and anthropic_api_key.
#   bench_stream.sh LOCAL_API_BINARY STREAM_BENCH_BINARY PROVIDER_STUB_BINARY
set -euo pipefail
server=$1 bench=$2 stub=$3
source "$(dirname "$0")/local_api.sh"
start_local_api "$server" ECHO_TOKEN_DELAY_MS=5
"$bench" "$url" 20 100 5 "$server_pid"
mkdir -p .local
"$stub" 20 5 >.local/provider-stub.url &
server_pids+=("$!")
for _ in $(seq 100); do [[ -s .local/provider-stub.url ]] && break; sleep 0.1; done
stub_url=$(head -n1 .local/provider-stub.url)
start_local_api "$server" LLM_PROVIDERS=openai OPENAI_BASE_URL="$stub_url/v1" OPENAI_MODELS=gpt-bench
LABEL=openai "$bench" "$url" 20 100 5 "$server_pid"
start_local_api "$server" LLM_PROVIDERS=anthropic ANTHROPIC_BASE_URL="$stub_url/v1" ANTHROPIC_MODELS=claude-bench
LABEL=anthropic "$bench" "$url" 20 100 5 "$server_pid"
start_local_api "$server" LLM_PROVIDERS=bedrock AWS_ENDPOINT_URL_BEDROCK_RUNTIME="$stub_url" BEDROCK_MODELS=us.anthropic.claude-bench-v1:0
LABEL=bedrock "$bench" "$url" 20 100 5 "$server_pid"
start_local_api "$server" ECHO_TOKEN_DELAY_MS=1
"$bench" "$url" 2000 5 1 "$server_pid"
