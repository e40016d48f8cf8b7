# The two commands a newcomer needs: `make dev` and `make test`. The rest are steps of those.
SHELL := /bin/bash
.DEFAULT_GOAL := help

VENV      := .venv
PYTHON    ?= python3
VENV_PY   := $(VENV)/bin/python
VENV_DONE := $(VENV)/.installed
# The SAM CLI pins an older boto3 than moto wants: it gets a venv of its own.
SAM_VENV  := .venv-sam
SAM_DONE  := $(SAM_VENV)/.installed
STACK     := $(VENV_PY) infra/local_stack.py
FUNCTIONS := chat feedback health history
# The arm64 build (release-arm64): Debian's toolchain, its own target dir.
ARM64_DIR      := target/aarch64
ARM64_PACKAGES := rustc-web cargo-web libstd-rust-web-dev:arm64 gcc-aarch64-linux-gnu libc6-dev-arm64-cross \
                  qemu-user-static

# The local stack's settings; the same names the functions read in Lambda. The emulator serves one
# request at a time, 10 to 100 times slower than DynamoDB: the tests' 50 writes in flight queue for
# seconds, so AWS calls get a minute instead of the 5 s default.
LOCAL_ENV := AWS_REGION=$${AWS_REGION:-us-east-1} AWS_OPERATION_TIMEOUT_MS=$${AWS_OPERATION_TIMEOUT_MS:-60000} \
             AWS_ACCESS_KEY_ID=local AWS_SECRET_ACCESS_KEY=local AWS_SESSION_TOKEN= \
             AWS_EC2_METADATA_DISABLED=true \
             TABLE_NAME=$${TABLE_NAME:-chat-local} SECRET_ID=$${SECRET_ID:-chat-local/provider-keys} \
             RUST_LOG=$${RUST_LOG:-info}

.PHONY: help dev test smoke smoke-local sam-validate bench-stream bench-cache bench-store bench-chat bench-history bench-cold bench-first bench-instances bench-load lint fmt-check clippy cfn-lint unit stack-up stack-down build release deploy publish-web clean web web-test screenshots
.PHONY: release-arm64 test-arm64

help:
	@echo "make dev     build, start the local AWS stack and the local API server on http://127.0.0.1:3000"
	@echo "make test    formatting, lints, template lint, then every test against a fresh local stack"
	@echo "make bench-store  what a chat turn costs the store, with 10 and 10,000 prior messages"
	@echo "make bench-chat   POST /chat through the local API server (echo provider) at concurrency 1 and 50"
	@echo "make bench-stream streamed POST /chat: added time to first delta, CPU per token, memory for 20 and 2,000 tokens"
	@echo "make bench-cache  what Bedrock prompt caching saves on a 30-turn conversation (provider stub with a modelled cache)"
	@echo "make bench-history  a chat turn through the local API server with 10 and 10,000 prior messages"
	@echo "make bench-cold   each function's release binary under a Runtime API emulator: init, first response, warm p50/p99, streamed answers' first delta and gaps, CPU, peak RSS"
	@echo "make bench-first  the cold first call over TLS (local stack and provider stub behind it), at full CPU and at 128 MB's share, with and without CONNECT_AT_INIT_MS"
	@echo "make smoke        a deployed stack's promises checked from outside: make smoke API_URL=... TOKEN=... [ORIGIN=...]"
	@echo "make bench-load   chat at 1, 10, 100 and 1,000 users with 0 and 1,000 ms of LLM latency"
	@echo "make bench-instances  four local API servers, 400 concurrent turns on one conversation"
	@echo "make release release binaries of the functions, x86_64 (cargo lambda) and arm64 (release-arm64)"
	@echo "make release-arm64  arm64 release binaries (Debian's Rust and cross gcc) in target/aarch64/lambda"
	@echo "make test-arm64     the sample events through the arm64 binaries under qemu-user (part of make test)"
	@echo "make deploy  sam build && sam deploy --guided"

$(VENV_DONE): infra/requirements.txt infra/constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -r infra/requirements.txt -c infra/constraints.txt
	touch $@

$(SAM_DONE): infra/requirements-sam.txt infra/constraints-sam.txt
	$(PYTHON) -m venv $(SAM_VENV)
	$(SAM_VENV)/bin/pip install --quiet --disable-pip-version-check -r infra/requirements-sam.txt -c infra/constraints-sam.txt
	touch $@

# The whole stack, locally: moto on LOCAL_STACK_PORT (default 4566) and the API on :3000.
# The echo provider answers offline; set LLM_PROVIDERS (and the keys) to use real ones.
# make dev's: LOCAL_ENV without its placeholder credentials (infra/dev.sh sets them unless
# LLM_PROVIDERS names bedrock, which then signs with the developer's own).
DEV_ENV := AWS_REGION=$${AWS_REGION:-us-east-1} AWS_OPERATION_TIMEOUT_MS=$${AWS_OPERATION_TIMEOUT_MS:-60000} \
           AWS_EC2_METADATA_DISABLED=true \
           TABLE_NAME=$${TABLE_NAME:-chat-local} SECRET_ID=$${SECRET_ID:-chat-local/provider-keys} \
           RUST_LOG=$${RUST_LOG:-info}

dev: $(VENV_DONE) web
	cargo build -p local-api
	@echo "Local API on http://127.0.0.1:3000. Try:"
	@echo "  curl -s localhost:3000/health/ready"
	@echo "  curl -s -H 'X-Dev-User: alice' -H 'content-type: application/json' -d '{\"message\":\"hello\"}' localhost:3000/chat"
	@echo "  curl -s -H 'X-Dev-User: alice' localhost:3000/conversations"
	@echo "  curl -N -H 'X-Dev-User: alice' -H 'Accept: text/event-stream' -H 'content-type: application/json' -d '{\"message\":\"hello there\"}' localhost:3000/chat"
	env $(DEV_ENV) LLM_PROVIDERS=$${LLM_PROVIDERS:-echo} \
	  infra/dev.sh "$(STACK)" target/debug/local-api $${LOCAL_STACK_PORT:-4566}

# The Rust tests' last line totals every test binary's results ("N passed, N failed"); the arm64
# binaries' event checks (test-arm64) and the web client's tests follow. The benchmarks
# (tests/bench) are left out: they alone turn on `shared`'s feature `metering`, and cargo would
# then build it into everything tested.
test: fmt-check clippy cfn-lint sam-validate
	@mkdir -p .local
	set -o pipefail; env $(LOCAL_ENV) CORS_ALLOW_ORIGIN=https://app.example.test \
	  $(STACK) run -- cargo test --workspace --exclude bench --locked 2>&1 \
	  | tee .local/test.log; status=$$?; \
	  awk '/^test result:/ { passed += $$4; failed += $$6 } END { printf "%d passed, %d failed\n", passed, failed }' .local/test.log; \
	  exit $$status
	$(MAKE) --no-print-directory test-arm64
	$(MAKE) --no-print-directory web-test
	$(MAKE) --no-print-directory smoke-local

# What a deployed stack promises, checked from outside after `sam deploy` (infra/smoke.py):
#   make smoke API_URL=https://<api>.execute-api.<region>.amazonaws.com/<stage> TOKEN=<id token> [ORIGIN=<web origin>]
smoke:
	@test -n "$(API_URL)" -a -n "$(TOKEN)" || { echo "usage: make smoke API_URL=<the stack's ApiUrl> TOKEN=<a Cognito ID token> [ORIGIN=<the web client's origin>]" >&2; exit 1; }
	python3 infra/smoke.py --url "$(API_URL)" --token "$(TOKEN)" $(if $(ORIGIN),--origin "$(ORIGIN)")

# The same check against a local API server, so that it keeps working (part of make test).
smoke-local: $(VENV_DONE)
	cargo build -p local-api
	env $(LOCAL_ENV) $(STACK) run -- infra/smoke_local.sh target/debug/local-api

# The web client (web/): dependencies as package-lock.json pins them, then the build into web/dist
# (it prints the first-load size and fails above the budget).
web/node_modules/.package-lock.json: web/package-lock.json
	cd web && npm ci --no-audit --no-fund
	touch $@

web: web/node_modules/.package-lock.json
	cd web && npm run build

# Browser tests: Debian's Chromium (installed when missing) drives the client served by the local
# API server, against a fresh local stack.
web-test: $(VENV_DONE) web
	test -x /usr/bin/chromium || { $$( [ "$$(id -u)" = 0 ] || echo sudo ) apt-get update && \
	  $$( [ "$$(id -u)" = 0 ] || echo sudo ) apt-get install -y --no-install-recommends chromium; }
	cargo build -p local-api
	env $(LOCAL_ENV) $(STACK) run -- infra/web_test.sh target/debug/local-api

# The README's screenshots, from the browser tests (web-test writes them under .local/).
screenshots:
	SCREENSHOTS_DIR=$(CURDIR)/docs/screenshots $(MAKE) --no-print-directory web-test

# Benchmarks print figures; they are not tests. They send hundreds of turns as a few users, so
# the per-user budgets (DAILY_TURN_BUDGET and the others, see template.yaml) are off for them.
UNLIMITED := DAILY_TURN_BUDGET=0 DAILY_TOKEN_BUDGET=0 TURNS_PER_MINUTE=0

bench-store: $(VENV_DONE)
	cargo build --release -p bench --bin store-bench
	env $(LOCAL_ENV) $(STACK) run -- target/release/store-bench

bench-chat: $(VENV_DONE)
	cargo build --release -p local-api -p bench --bin local-api --bin chat-load
	env $(LOCAL_ENV) $(UNLIMITED) $(STACK) run -- infra/bench_chat.sh target/release/local-api target/release/chat-load

bench-stream: $(VENV_DONE)
	cargo build --release -p local-api -p bench --bin local-api --bin stream-bench --bin provider-stub
	env $(LOCAL_ENV) $(UNLIMITED) OPENAI_API_KEY=sk-bench-not-a-key ANTHROPIC_API_KEY=sk-ant-bench-not-a-key \
	  $(STACK) run -- infra/bench_stream.sh target/release/local-api target/release/stream-bench target/release/provider-stub

bench-cache: $(VENV_DONE)
	cargo build --release -p local-api -p bench --bin local-api --bin cache-bench --bin provider-stub
	env $(LOCAL_ENV) $(UNLIMITED) $(STACK) run -- infra/bench_cache.sh target/release/local-api target/release/cache-bench target/release/provider-stub

bench-history: $(VENV_DONE)
	cargo build --release -p local-api -p bench --bin local-api --bin history-bench
	env $(LOCAL_ENV) $(UNLIMITED) $(STACK) run -- infra/bench_history.sh target/release/local-api target/release/history-bench

bench-cold: release
	cargo build --release -p bench --bin cold-start
	env $(LOCAL_ENV) $(UNLIMITED) $(STACK) run -- infra/bench_cold.sh target/release/cold-start

bench-first: release
	cargo build --release -p bench --bin cold-start
	env $(LOCAL_ENV) $(UNLIMITED) OPENAI_API_KEY=sk-bench-not-a-key $(STACK) run -- infra/bench_first.sh target/release/cold-start

bench-load: $(VENV_DONE)
	cargo build --release -p local-api -p bench --bin local-api --bin chat-load
	for latency in 0 1000; do for users in 1 10 100 1000; do \
	  env $(LOCAL_ENV) $(UNLIMITED) $(STACK) run -- infra/bench_load.sh target/release/local-api target/release/chat-load \
	    $$latency $$users 20 || echo "(cell failed: $$?)"; \
	done; done

# A correctness run more than a speed one: debug builds are enough.
bench-instances: $(VENV_DONE)
	cargo build -p local-api -p bench --bin local-api --bin many-instances
	env $(LOCAL_ENV) $(UNLIMITED) $(STACK) run -- infra/bench_instances.sh target/debug/local-api target/debug/many-instances

lint: fmt-check clippy cfn-lint sam-validate

fmt-check:
	cargo fmt --all -- --check

clippy:
	cargo clippy --workspace --all-targets --locked -- -D warnings

cfn-lint: $(VENV_DONE)
	$(VENV)/bin/cfn-lint template.yaml

# Offline: the SAM transform and its linter, then what the transform makes of the API's auth for
# each setting of the ApiKeys parameter. No AWS call.
sam-validate: $(SAM_DONE)
	SAM_CLI_TELEMETRY=0 $(SAM_VENV)/bin/sam validate --lint --template template.yaml --region us-east-1
	AWS_DEFAULT_REGION=us-east-1 $(SAM_VENV)/bin/python infra/check_template.py template.yaml

stack-up: $(VENV_DONE)
	env $(LOCAL_ENV) $(STACK) up

stack-down: $(VENV_DONE)
	$(STACK) down

# Both architectures the template deploys (Architecture, arm64 by default). x86_64 with
# cargo-lambda (PyPI) and the machine's Rust; arm64 by release-arm64.
release: $(VENV_DONE) release-arm64
	$(VENV)/bin/pip show cargo-lambda >/dev/null 2>&1 || $(VENV)/bin/pip install --quiet cargo-lambda
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" cargo lambda build --release --compiler cargo $(addprefix -p ,$(FUNCTIONS))
	@$(PYTHON) infra/release_sizes.py x86_64 target/lambda $(FUNCTIONS)
	@$(PYTHON) infra/release_sizes.py arm64 $(ARM64_DIR)/lambda $(FUNCTIONS)

# arm64 with Debian's Rust (rustc-web, with its arm64 standard library from the arm64 architecture)
# and cross gcc as linker and as C compiler (aws-lc-sys), installed when missing: all from Debian,
# which the development machines reach, where rustup's aarch64 standard library is not promised.
# Debian's rustc is another compiler than rustup's: its build has its own target dir, so neither
# invalidates the other. Out: $(ARM64_DIR)/lambda/<function>/bootstrap.
release-arm64:
	dpkg -s $(ARM64_PACKAGES) >/dev/null 2>&1 || { sudo=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$sudo dpkg --add-architecture arm64 && $$sudo apt-get update && \
	  $$sudo apt-get install -y --no-install-recommends $(ARM64_PACKAGES); }
	env RUSTC=/usr/bin/rustc \
	  CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc \
	  CC_aarch64_unknown_linux_gnu=aarch64-linux-gnu-gcc AR_aarch64_unknown_linux_gnu=aarch64-linux-gnu-ar \
	  /usr/bin/cargo build --release --locked --target aarch64-unknown-linux-gnu --target-dir $(ARM64_DIR) \
	  $(addprefix -p ,$(FUNCTIONS))
	@for f in $(FUNCTIONS); do mkdir -p $(ARM64_DIR)/lambda/$$f && \
	  cp $(ARM64_DIR)/aarch64-unknown-linux-gnu/release/$$f $(ARM64_DIR)/lambda/$$f/bootstrap; done
	@$(PYTHON) infra/release_sizes.py arm64 $(ARM64_DIR)/lambda $(FUNCTIONS)

# The sample events through the arm64 release binaries under qemu-user, against a fresh local
# stack (infra/arm64_events.py: its Runtime API, and what each event must get).
test-arm64: $(VENV_DONE) release-arm64
	env $(LOCAL_ENV) $(STACK) run -- $(VENV_PY) infra/arm64_events.py $(ARM64_DIR)/lambda

deploy:
	sam build && sam deploy --guided

# The built web client to a deployed stack (docs/DEPLOY.md): its config.json from the stack's outputs,
# the files to the stack's bucket, CloudFront's copies of the entry points invalidated.
publish-web: web
	@test -n "$(STACK_NAME)" || { echo "usage: make publish-web STACK_NAME=<stack>" >&2; exit 1; }
	infra/publish_web.sh "$(STACK_NAME)"

clean:
	cargo clean
	rm -rf $(VENV) $(SAM_VENV) .local
