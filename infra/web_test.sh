#!/usr/bin/env bash
# The web client's tests: its unit tests (vitest: the SSE parser, PKCE, settings, the streamed turn, paging, limits), then browser tests: the local API server (echo provider, a visible delay per word)
# serving web/dist, driven by Playwright in Debian's Chromium, with axe-core. Runs inside
# `local_stack.py run` (AWS_ENDPOINT_URL set); `make web-test` builds what it needs first.
#   web_test.sh LOCAL_API_BINARY [node --test arguments...]
# WEB_TEST_HOLD=1 keeps the server up (printing its URL) instead of running the tests.
# Screenshots go to SCREENSHOTS_DIR (default .local/screenshots; `make screenshots` refreshes
# docs/screenshots), so that a test run leaves the tracked files alone.
set -euo pipefail
server=$1
shift
root=$(cd "$(dirname "$0")/.." && pwd)
source "$root/infra/local_api.sh"
# No per-minute turn limit: the paging test writes about 40 turns for one user within seconds.
start_local_api "$server" ECHO_TOKEN_DELAY_MS="${ECHO_TOKEN_DELAY_MS:-30}" TURNS_PER_MINUTE=0 WEB_ROOT="$root/web/dist"
if [[ -n "${WEB_TEST_HOLD:-}" ]]; then
  echo "local API server with the web client: $url"
  wait "$server_pid"
fi
cd "$root/web"
npx vitest run
BASE_URL="$url" CHROMIUM="${CHROMIUM:-/usr/bin/chromium}" SCREENSHOTS_DIR="${SCREENSHOTS_DIR:-$root/.local/screenshots}" \
  node --test --test-concurrency=1 "$@" e2e/
