#!/usr/bin/env bash
# The deployed stack's smoke check (infra/smoke.py) against a local API server (echo provider,
# 5 ms a word, the CORS origin `make test` uses), so that it keeps working. Runs inside
# `local_stack.py run`. Usage: smoke_local.sh LOCAL_API_BINARY
set -euo pipefail
server=$1
origin=https://app.example.test
source "$(dirname "$0")/local_api.sh"
start_local_api "$server" ECHO_TOKEN_DELAY_MS=5 CORS_ALLOW_ORIGIN="$origin"
python3 "$(dirname "$0")/smoke.py" --url "$url" --dev-user "smoke-$(date +%s%N)" --origin "$origin"
