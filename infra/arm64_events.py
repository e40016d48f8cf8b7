#!/usr/bin/env python3
"""The sample events (events/*.json) through the arm64 release binaries, under qemu-user.

    arm64_events.py LAMBDA_DIR      LAMBDA_DIR/<function>/bootstrap for chat, feedback, health, history

A small Lambda Runtime API on loopback (GET /2018-06-01/runtime/invocation/next, POST
.../invocation/{id}/response and .../error, POST .../init/error) starts each function's binary the way
Lambda does (AWS_LAMBDA_RUNTIME_API, the function's environment), one execution environment per
function, hands it the function's events in turn and checks every answer against EXPECTED below:
the status code, that the body is JSON where it should be, and one fact of each answer, as the
x86_64 event tests (tests/tests/{chat,history,feedback,health}.rs) check them. chat answers in
Lambda's streaming format (Lambda-Runtime-Function-Response-Mode: streaming; a chunked body: a JSON
prelude with statusCode and headers, eight NUL bytes, then the body), which is decoded and checked.

Runs inside `local_stack.py run` (AWS_ENDPOINT_URL points at a private moto, the table and the
secret exist); `make test-arm64` runs it. The samples share one user and one conversation
(01KB2Y8Q3M7R4T6V9W0X1Y2Z3A): the x86_64 tests create it in the store directly, here chat's first
turn creates it (through the arm64 binary), and its id stands for the samples' in the events after.
A non-zero exit and a line per failed check when any answer is not what its row expects.
"""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
EVENTS = ROOT / "events"
LOGS = ROOT / ".local"
SAMPLE_CONVERSATION = "01KB2Y8Q3M7R4T6V9W0X1Y2Z3A"
# qemu-user runs the binaries; -L: where the arm64 loader and glibc are (libc6-dev-arm64-cross).
QEMU = os.environ.get("QEMU", "qemu-aarch64-static")
QEMU_LD_PREFIX = os.environ.get("QEMU_LD_PREFIX", "/usr/aarch64-linux-gnu")
# Under emulation a cold start with TLS setup takes seconds; an answer gets this long.
ANSWER_TIMEOUT_S = 120
ELF_MACHINE_AARCH64 = 183
REPLY = "echo: What is a good name for a sourdough starter?"


def streamed_new_turn(event: dict) -> dict:
    """The chat sample asking for server-sent events, as a new turn (no Idempotency-Key)."""
    for headers in (event["headers"], event["multiValueHeaders"]):
        headers.pop("Idempotency-Key", None)
    event["headers"]["Accept"] = "text/event-stream"
    event["multiValueHeaders"]["Accept"] = ["text/event-stream"]
    return event


# The variants of a sample event: (name, how the event is made from the file, headers the answer
# must carry). The unnamed variant is the file as it is.
AS_IS = ("", None, {})
REPLAYED = ("replayed", None, {"idempotent-replayed": "true"})
STREAMED = ("streamed", streamed_new_turn, {})


def echo_reply(body, seen):
    return body["provider"] == "echo" and body["reply"] == REPLY


def first_answer_byte_for_byte(body, seen):
    return seen["this answer"] == seen["first chat answer"]


def the_turn_in_events(events, seen):
    """start, the deltas (the reply, word by word), done (the JSON answer)."""
    names = [name for name, _ in events]
    deltas = "".join(data["text"] for name, data in events if name == "delta")
    return names[0] == "start" and names[-1] == "done" and deltas == REPLY == events[-1][1]["reply"]


# What each event must get, in the order they are sent; each function is one execution
# environment, so its later rows are warm invocations. status None: not an API Gateway event, the
# invocation must succeed. body: json (Content-Type JSON and a JSON body), empty, sse (Content-Type
# text/event-stream, server-sent events of JSON), result (the invocation's own JSON result). From
# the x86_64 tests: tests/tests/chat.rs the_sample_event_gets_200_from_the_echo_provider;
# history.rs and feedback.rs every_sample_event_gets_the_status_its_name_promises; health.rs
# the_lambda_entry_point_answers_api_gateway_in_its_own_shape and
# the_scheduled_probe_succeeds_when_ready_and_fails_naming_the_check. One row more than those: chat
# streamed, the path the deployed integration streams (tests/tests/stream.rs).
EXPECTED = [
    # function  event file                          variant   status body     check
    ("chat",     "chat-post.json",                   AS_IS,    200, "json",   echo_reply),
    ("chat",     "chat-post.json",                   REPLAYED, 200, "json",   first_answer_byte_for_byte),
    ("history",  "history-list-conversations.json",  AS_IS,    200, "json",
     lambda body, seen: body["conversations"][0]["id"] == seen["conversation"]),
    ("history",  "history-list-messages.json",       AS_IS,    200, "json",
     lambda body, seen: len(body["messages"]) == 2),
    ("feedback", "feedback-post.json",               AS_IS,    201, "json",
     lambda body, seen: isinstance(body, dict)),
    ("feedback", "feedback-get.json",                AS_IS,    200, "json",
     lambda body, seen: body["feedback"][0]["rating"] == 5),
    ("history",  "history-delete-conversation.json", AS_IS,    204, "empty",  None),
    ("history",  "history-erase.json",               AS_IS,    204, "empty",  None),
    ("chat",     "chat-post.json",                   STREAMED, 200, "sse",    the_turn_in_events),
    ("health",   "health-get.json",                  AS_IS,    200, "json",
     lambda body, seen: body["status"] == "ok"),
    ("health",   "health-ready.json",                AS_IS,    200, "json",
     lambda body, seen: body["status"] == "ok"),
    ("health",   "health-schedule.json",             AS_IS,    None, "result",
     lambda body, seen: body["status"] == "ok"),
]


class Failure(Exception):
    pass


class RuntimeApi(BaseHTTPRequestHandler):
    """Lambda's Runtime API for one execution environment (the server's `environment`)."""

    protocol_version = "HTTP/1.1"

    def log_message(self, format, *args):  # noqa: A002 (the base class's name)
        pass

    def read_body(self) -> tuple[bytes, dict]:
        """The request's body, chunked or not, and its trailers (lower-case names)."""
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            body, trailers = bytearray(), {}
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                if size == 0:
                    while (line := self.rfile.readline().strip()):
                        name, _, value = line.decode("latin-1").partition(":")
                        trailers[name.strip().lower()] = value.strip()
                    return bytes(body), trailers
                body += self.rfile.read(size)
                self.rfile.readline()
        return self.rfile.read(int(self.headers.get("Content-Length", 0))), {}

    def answer(self, status: int, body: bytes = b"", headers: dict | None = None) -> None:
        self.send_response(status)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        env = self.server.environment
        if self.path != "/2018-06-01/runtime/invocation/next":
            return self.answer(404)
        env.asked.set()
        while True:  # Lambda holds `next` until there is work; we do until the run ends.
            try:
                request_id, payload = env.events.get(timeout=0.5)
                break
            except queue.Empty:
                if env.stopping.is_set():  # the function is gone: nobody to answer
                    self.close_connection = True
                    return
        deadline_ms = int((time.time() + ANSWER_TIMEOUT_S) * 1000)
        self.answer(200, payload, {
            "Content-Type": "application/json",
            "Lambda-Runtime-Aws-Request-Id": request_id,
            "Lambda-Runtime-Deadline-Ms": str(deadline_ms),
            "Lambda-Runtime-Invoked-Function-Arn":
                f"arn:aws:lambda:us-east-1:000000000000:function:{env.name}",
            "Lambda-Runtime-Trace-Id": "Root=1-00000000-000000000000000000000000;Sampled=0",
        })

    def do_POST(self):
        env = self.server.environment
        body, trailers = self.read_body()
        parts = self.path.split("/")
        headers = {name.lower(): value for name, value in self.headers.items()}
        if self.path == "/2018-06-01/runtime/init/error":
            env.outcomes.put(("init-error", None, headers, body, trailers))
        elif len(parts) == 5 and parts[1:3] == ["2018-06-01", "runtime"] and parts[4] in (
                "response", "error"):
            # /2018-06-01/runtime/invocation/{id}/{response|error}
            env.outcomes.put((parts[4], parts[3], headers, body, trailers))
        elif len(parts) == 6 and parts[3] == "invocation" and parts[5] in ("response", "error"):
            env.outcomes.put((parts[5], parts[4], headers, body, trailers))
        else:
            return self.answer(404)
        self.answer(202, b'{"status":"OK"}', {"Content-Type": "application/json"})


class Environment:
    """One function's execution environment: the Runtime API and the binary under qemu."""

    started_count: dict[str, int] = {}

    def __init__(self, name: str, bootstrap: Path):
        self.name = name
        self.events: queue.Queue = queue.Queue()
        self.outcomes: queue.Queue = queue.Queue()
        self.asked = threading.Event()
        self.stopping = threading.Event()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), RuntimeApi)
        self.server.daemon_threads = True
        self.server.environment = self
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        env = dict(os.environ)
        env.update({
            "AWS_LAMBDA_RUNTIME_API": f"127.0.0.1:{self.server.server_address[1]}",
            "AWS_LAMBDA_FUNCTION_NAME": name,
            "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "512",
            "AWS_LAMBDA_LOG_GROUP_NAME": f"/aws/lambda/{name}",
            "AWS_LAMBDA_LOG_STREAM_NAME": "arm64-events",
            "LLM_PROVIDERS": os.environ.get("LLM_PROVIDERS", "echo"),
        })
        LOGS.mkdir(exist_ok=True)
        Environment.started_count[name] = count = Environment.started_count.get(name, 0) + 1
        self.log_path = LOGS / (f"arm64-{name}.log" if count == 1 else f"arm64-{name}-{count}.log")
        self.log = open(self.log_path, "wb")
        self.started = time.monotonic()
        self.process = subprocess.Popen(
            [QEMU, "-L", QEMU_LD_PREFIX, str(bootstrap)], env=env,
            stdin=subprocess.DEVNULL, stdout=self.log, stderr=subprocess.STDOUT)

    def invoke(self, payload: bytes) -> tuple[str, dict, bytes, dict]:
        request_id = str(uuid.uuid4())
        self.events.put((request_id, payload))
        deadline = time.monotonic() + ANSWER_TIMEOUT_S
        while True:
            try:
                kind, got, headers, body, trailers = self.outcomes.get(timeout=0.2)
            except queue.Empty:
                if self.process.poll() is not None:
                    raise Failure(f"the function exited with {self.process.returncode}"
                                  f" before answering; {self.tail()}")
                if time.monotonic() > deadline:
                    raise Failure(f"no answer within {ANSWER_TIMEOUT_S} s; {self.tail()}")
                continue
            if kind == "init-error":
                raise Failure(f"init error: {body.decode(errors='replace')}; {self.tail()}")
            if got != request_id:
                raise Failure(f"an answer for request {got}, expected {request_id}")
            return kind, headers, body, trailers

    def tail(self, lines: int = 8) -> str:
        self.log.flush()
        text = self.log_path.read_text(errors="replace").splitlines()[-lines:]
        return f"its output ({self.log_path}):\n    " + "\n    ".join(text)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.stopping.set()
        self.server.shutdown()
        self.server.server_close()
        self.log.close()


def is_aarch64(path: Path) -> bool:
    header = path.read_bytes()[:20]
    return header[:4] == b"\x7fELF" and int.from_bytes(header[18:20], "little") == ELF_MACHINE_AARCH64


def decode(function: str, kind: str, headers: dict, body: bytes, trailers: dict):
    """The answer as (status, headers, body bytes) for API Gateway answers, or the plain result."""
    if kind == "error":
        raise Failure(f"the invocation failed: {body.decode(errors='replace')}")
    if "lambda-runtime-function-error-type" in trailers:
        raise Failure(f"the stream ended in an error: {trailers}")
    streamed = headers.get("lambda-runtime-function-response-mode", "").lower() == "streaming"
    if function == "chat" and not streamed:
        raise Failure("chat did not answer in Lambda's streaming mode "
                      f"(Lambda-Runtime-Function-Response-Mode: {headers.get('lambda-runtime-function-response-mode')})")
    if streamed:
        prelude, separator, rest = body.partition(b"\0" * 8)
        if not separator:
            raise Failure(f"a streamed answer without its prelude separator: {body[:200]!r}")
        prelude = json.loads(prelude)
        return prelude.get("statusCode"), {k.lower(): v for k, v in prelude.get("headers", {}).items()}, rest
    answer = json.loads(body)
    if "statusCode" not in answer:
        return None, {}, answer
    text = answer.get("body") or ""
    if answer.get("isBase64Encoded"):
        import base64
        text = base64.b64decode(text).decode()
    headers = {k.lower(): v for k, v in (answer.get("headers") or {}).items()}
    for name, values in (answer.get("multiValueHeaders") or {}).items():
        headers.setdefault(name.lower(), ", ".join(values))
    return answer["statusCode"], headers, text.encode()


def server_sent_events(body: bytes) -> list[tuple[str, dict]]:
    events = []
    for frame in body.decode().split("\n\n"):
        if not frame.strip():
            continue
        fields = dict(line.split(": ", 1) for line in frame.splitlines())
        events.append((fields["event"], json.loads(fields["data"])))
    return events


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    lambda_dir = Path(argv[1])
    if not os.environ.get("AWS_ENDPOINT_URL"):
        print("arm64-events: AWS_ENDPOINT_URL is not set; run me inside `local_stack.py run`",
              file=sys.stderr)
        return 2
    environments: dict[str, Environment] = {}
    seen: dict = {}
    failures = 0
    try:
        for function, event_file, (variant, make, must_carry), status, body_kind, check in EXPECTED:
            label = f"{function} {event_file}" + (f" ({variant})" if variant else "")
            started = time.monotonic()
            try:
                if function in environments and environments[function].process.poll() is not None:
                    # The last invocation killed it: Lambda starts a new execution environment.
                    environments.pop(function).stop()
                if function not in environments:
                    bootstrap = lambda_dir / function / "bootstrap"
                    if not is_aarch64(bootstrap):
                        raise Failure(f"{bootstrap} is not an aarch64 ELF binary")
                    environments[function] = Environment(function, bootstrap)
                environment = environments[function]
                event = json.loads((EVENTS / event_file).read_text())
                if make:
                    event = make(event)
                text = json.dumps(event)
                if "conversation" in seen:
                    text = text.replace(SAMPLE_CONVERSATION, seen["conversation"])
                got_status, headers, body = decode(function, *environment.invoke(text.encode()))
                if got_status != status:
                    raise Failure(f"status {got_status}, expected {status}: {body[:300]!r}")
                for name, value in must_carry.items():
                    if headers.get(name) != value:
                        raise Failure(f"header {name}: {headers.get(name)!r}, expected {value!r}")
                seen["this answer"] = body
                if body_kind == "json":
                    if "json" not in headers.get("content-type", ""):
                        raise Failure(f"content-type {headers.get('content-type')!r}, expected JSON")
                    decoded = json.loads(body)
                elif body_kind == "sse":
                    if headers.get("content-type") != "text/event-stream":
                        raise Failure(f"content-type {headers.get('content-type')!r}, expected text/event-stream")
                    decoded = server_sent_events(body)
                elif body_kind == "empty":
                    if body:
                        raise Failure(f"a body where none was expected: {body[:200]!r}")
                    decoded = None
                else:
                    decoded = body
                try:
                    passed = check is None or check(decoded, seen)
                except (KeyError, IndexError, TypeError, ValueError) as err:
                    raise Failure(f"{type(err).__name__} {err} in {decoded!r:.300}") from err
                if not passed:
                    raise Failure(f"unexpected body: {decoded!r:.300}")
                if function == "chat" and "conversation" not in seen:
                    seen["conversation"] = decoded["conversation_id"]
                    seen["first chat answer"] = body
                print(f"arm64-events: ok   {label}: {status or 'result'}"
                      f" ({time.monotonic() - started:.1f} s)", flush=True)
            except (Failure, json.JSONDecodeError, OSError) as err:
                failures += 1
                print(f"arm64-events: FAIL {label}: {err}", flush=True)
    finally:
        for environment in environments.values():
            environment.stop()
    print(f"arm64-events: {len(EXPECTED) - failures} passed, {failures} failed"
          f" ({', '.join(sorted(environments))} under {QEMU})", flush=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
