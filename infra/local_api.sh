# Sourced by the benchmark scripts. Starts local API servers (echo provider) on free ports, waits
# until each answers, and stops them all when the script exits.
#   start_local_api BINARY [VAR=VALUE ...]   sets $url and $server_pid
#   local_stack_pid                         the pid of the local stack `local_stack.py run` started
server_pids=()
trap 'kill "${server_pids[@]}" 2>/dev/null || true' EXIT

start_local_api() {
  local binary=$1 port
  shift
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  env LLM_PROVIDERS=echo RUST_LOG=warn LOCAL_API_ADDR="127.0.0.1:$port" "$@" "$binary" &
  server_pid=$!
  server_pids+=("$server_pid")
  url="http://127.0.0.1:$port"
  for _ in $(seq 100); do
    curl -sf "$url/health" >/dev/null && return 0
    sleep 0.1
  done
  echo "the local API server at $url did not answer" >&2
  return 1
}

local_stack_pid() {
  pgrep -f "local_stack.py serve ${AWS_ENDPOINT_URL##*:}" | head -n1
}
