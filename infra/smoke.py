#!/usr/bin/env python3
"""What a deployed API promises, checked from outside after `sam deploy`, and what it measured.

    make smoke API_URL=https://<api>.execute-api.<region>.amazonaws.com/<stage> TOKEN=<id token> [ORIGIN=<web origin>]
    smoke.py --url URL (--token TOKEN | --dev-user NAME) [--origin ORIGIN]

In order: liveness (GET /health) and readiness (GET /health/ready, each dependency's latency); a
call without credentials refused with 401 and a problem document; a CORS preflight from ORIGIN
(the web client's origin; skipped without one); a JSON turn (its answer, its RateLimit-* budget
headers, the allowed origin); the same turn replayed by its Idempotency-Key; a streamed turn in the
same conversation (time to its headers, to its `start` event, to its first delta, the gaps between
deltas, its `done`); the conversation's four messages read back; and the conversation deleted (it
is deleted at the end whatever failed before). The two turns count against the caller's budget and,
with a real provider, cost their tokens.

`make test` runs it against the local API server (`--dev-user`, the echo provider), so that it
keeps working. Exit 0 when every check passed, 1 after a line per failed check; what it measured
is printed either way. Standard library only.
"""

from __future__ import annotations

import argparse
import http.client
import json
import statistics
import sys
import time
import uuid
from urllib.parse import urlsplit

QUESTION = "Smoke test: answer with one short sentence."
TIMEOUT_S = 60


class Api:
    """HTTP/1.1 requests to the API, with the caller's credentials unless told otherwise."""

    def __init__(self, url: str, credentials: dict[str, str]):
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise SystemExit(f"--url must be an http(s) URL, not {url!r}")
        self.https = parts.scheme == "https"
        self.netloc = parts.netloc
        self.base = parts.path.rstrip("/")
        self.credentials = credentials

    def connection(self) -> http.client.HTTPConnection:
        kind = http.client.HTTPSConnection if self.https else http.client.HTTPConnection
        return kind(self.netloc, timeout=TIMEOUT_S)

    def open(self, method: str, path: str, body=None, headers=None, signed=True):
        """Sends a request; returns (connection, response, seconds until the headers arrived)."""
        headers = dict(headers or {})
        if signed:
            headers.update(self.credentials)
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        connection = self.connection()
        started = time.perf_counter()
        connection.request(method, self.base + path, body=data, headers=headers)
        response = connection.getresponse()
        return connection, response, time.perf_counter() - started, started

    def call(self, method: str, path: str, body=None, headers=None, signed=True):
        """A whole answer: (status, headers, parsed JSON or None, seconds)."""
        connection, response, _, started = self.open(method, path, body, headers, signed)
        raw = response.read()
        elapsed = time.perf_counter() - started
        connection.close()
        try:
            parsed = json.loads(raw) if raw else None
        except ValueError:
            parsed = None
        return response.status, response.headers, parsed, elapsed


class Smoke:
    def __init__(self, api: Api, origin: str | None):
        self.api = api
        self.origin = origin
        self.failures: list[str] = []
        self.conversation: str | None = None

    def check(self, ok: bool, what: str) -> bool:
        if not ok:
            self.failures.append(what)
            print(f"  FAILED: {what}")
        return ok

    def report(self, name: str, text: str) -> None:
        print(f"{name:<14} {text}")

    def health(self) -> None:
        status, _, body, elapsed = self.api.call("GET", "/health", signed=False)
        self.report("health", f"{status} in {elapsed * 1000:.0f} ms")
        self.check(status == 200 and (body or {}).get("status") == "ok",
                   f"GET /health answered {status} {body}")
        status, _, body, elapsed = self.api.call("GET", "/health/ready", signed=False)
        checks = ", ".join(
            f"{check.get('name')} {'ok' if check.get('ok') else 'FAILED'} {check.get('latency_ms')} ms"
            for check in (body or {}).get("checks", [])
        )
        self.report("readiness", f"{status} in {elapsed * 1000:.0f} ms: {checks}")
        self.check(status == 200 and (body or {}).get("status") == "ok",
                   f"GET /health/ready answered {status}: failed {(body or {}).get('failed')}")

    def refused(self) -> None:
        status, headers, body, elapsed = self.api.call(
            "POST", "/chat", {"message": QUESTION}, signed=False)
        self.report("no identity", f"{status} in {elapsed * 1000:.0f} ms")
        self.check(status == 401, f"POST /chat without credentials answered {status}, not 401")
        self.check((headers.get("Content-Type") or "").startswith("application/problem+json"),
                   f"the 401 is {headers.get('Content-Type')!r}, not a problem document")
        self.check(isinstance(body, dict) and body.get("status") == 401,
                   f"the 401's body is {body!r}")

    def preflight(self) -> None:
        if not self.origin:
            self.report("preflight", "skipped (no --origin)")
            return
        status, headers, _, elapsed = self.api.call("OPTIONS", "/chat", headers={
            "Origin": self.origin,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization,content-type,idempotency-key",
        }, signed=False)
        allowed = headers.get("Access-Control-Allow-Origin")
        methods = (headers.get("Access-Control-Allow-Methods") or "").upper()
        asked = (headers.get("Access-Control-Allow-Headers") or "").lower()
        self.report("preflight", f"{status} in {elapsed * 1000:.0f} ms, origin {allowed}, "
                    f"methods {methods}, headers {asked}")
        self.check(200 <= status < 300, f"the preflight answered {status}")
        self.check(allowed == self.origin, f"the preflight allows {allowed!r}, not {self.origin!r}")
        self.check("POST" in methods.split(","), "the preflight does not allow POST")
        for name in ("authorization", "content-type", "idempotency-key"):
            self.check(name in asked.split(","), f"the preflight does not allow {name}")

    def json_turn(self) -> None:
        key = str(uuid.uuid4())
        status, headers, body, elapsed = self.api.call(
            "POST", "/chat", {"message": QUESTION},
            headers={"Accept": "application/json", "Idempotency-Key": key})
        body = body if isinstance(body, dict) else {}
        budget = {name: headers.get(name) for name in
                  ("RateLimit-Limit", "RateLimit-Remaining", "RateLimit-Reset")}
        self.report("JSON turn", f"{status} in {elapsed * 1000:.0f} ms from {body.get('provider')} "
                    f"{body.get('model')}, usage {body.get('usage')}, budget {budget}")
        if not self.check(status == 200, f"the JSON turn answered {status}: {body}"):
            return
        self.conversation = body.get("conversation_id")
        self.check(bool(self.conversation) and bool(body.get("message_id")),
                   "the JSON turn names no conversation or message")
        self.check(bool((body.get("reply") or "").strip()), "the JSON turn's reply is empty")
        self.check(all(budget.values()), f"the JSON turn lacks budget headers: {budget}")
        if self.origin:
            allowed = headers.get("Access-Control-Allow-Origin")
            self.check(allowed == self.origin, f"the answer allows origin {allowed!r}")
        status, headers, replay, elapsed = self.api.call(
            "POST", "/chat", {"message": QUESTION},
            headers={"Accept": "application/json", "Idempotency-Key": key})
        replay = replay if isinstance(replay, dict) else {}
        self.report("replayed", f"{status} in {elapsed * 1000:.0f} ms, "
                    f"idempotent-replayed: {headers.get('idempotent-replayed')}")
        self.check(status == 200 and headers.get("idempotent-replayed") == "true"
                   and replay.get("message_id") == body.get("message_id"),
                   f"the replay answered {status} {replay} without the stored answer")

    def streamed_turn(self) -> None:
        if not self.conversation:
            self.check(False, "no conversation to stream a turn in")
            return
        connection, response, to_headers, started = self.api.open(
            "POST", "/chat", {"message": QUESTION, "conversation_id": self.conversation},
            headers={"Accept": "text/event-stream"})
        events: list[tuple[float, str, str]] = []
        name, data = None, []
        while True:
            line = response.readline()
            if not line:
                break
            line = line.decode("utf-8", "replace").rstrip("\r\n")
            if line.startswith("event:"):
                name = line[6:].strip()
            elif line.startswith("data:"):
                data.append(line[5:].strip())
            elif line == "" and name:
                events.append((time.perf_counter() - started, name, "\n".join(data)))
                name, data = None, []
        connection.close()
        kinds = [kind for _, kind, _ in events]
        deltas = [at for at, kind, _ in events if kind == "delta"]
        start = next((at for at, kind, _ in events if kind == "start"), None)
        gaps = [b - a for a, b in zip(deltas, deltas[1:])]
        gap_text = (f"gaps p50 {statistics.median(gaps) * 1000:.1f} ms, max {max(gaps) * 1000:.1f} ms"
                    if gaps else "no gaps")
        first = f"{deltas[0] * 1000:.0f} ms" if deltas else "none"
        self.report("streamed turn", f"{response.status}; headers {to_headers * 1000:.0f} ms, "
                    f"start {start * 1000 if start is not None else float('nan'):.0f} ms, "
                    f"first delta {first}, {len(deltas)} deltas, {gap_text}, "
                    f"ended {events[-1][0] * 1000 if events else float('nan'):.0f} ms with "
                    f"{kinds[-1] if kinds else 'nothing'}")
        self.check(response.status == 200, f"the streamed turn answered {response.status}")
        self.check((response.headers.get("Content-Type") or "").startswith("text/event-stream"),
                   f"the streamed turn is {response.headers.get('Content-Type')!r}")
        self.check(kinds[:1] == ["start"] and kinds[-1:] == ["done"] and deltas != [],
                   f"the stream's events were {kinds}, not start, deltas, done")
        if kinds[-1:] == ["done"]:
            done = json.loads(events[-1][2])
            self.check(done.get("conversation_id") == self.conversation,
                       "the streamed turn's done names another conversation")

    def read_back(self) -> None:
        if not self.conversation:
            return
        status, _, body, elapsed = self.api.call(
            "GET", f"/conversations/{self.conversation}/messages")
        roles = [message.get("role") for message in (body or {}).get("messages", [])]
        self.report("read back", f"{status} in {elapsed * 1000:.0f} ms: {roles}")
        self.check(status == 200 and roles == ["user", "assistant", "user", "assistant"],
                   f"the conversation holds {roles}, not the two turns")

    def clean_up(self) -> None:
        if not self.conversation:
            return
        path = f"/conversations/{self.conversation}"
        status, _, _, elapsed = self.api.call("DELETE", path)
        gone, _, _, _ = self.api.call("GET", path + "/messages")
        self.report("deleted", f"{status} in {elapsed * 1000:.0f} ms; read again: {gone}")
        self.check(status == 204 and gone == 404,
                   f"deleting the conversation answered {status}, reading it after {gone}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", required=True, help="the API's base URL, stage included")
    who = parser.add_mutually_exclusive_group(required=True)
    who.add_argument("--token", help="a Cognito ID token (sent as Authorization: Bearer)")
    who.add_argument("--dev-user", help="the local server's X-Dev-User")
    parser.add_argument("--origin", help="the web client's origin, for the CORS checks")
    args = parser.parse_args()
    credentials = ({"Authorization": f"Bearer {args.token}"} if args.token
                   else {"X-Dev-User": args.dev_user})
    smoke = Smoke(Api(args.url, credentials), args.origin)
    try:
        for step in (smoke.health, smoke.refused, smoke.preflight, smoke.json_turn,
                     smoke.streamed_turn, smoke.read_back):
            try:
                step()
            except (OSError, http.client.HTTPException, ValueError) as err:
                smoke.check(False, f"{step.__name__}: {type(err).__name__}: {err}")
    finally:
        try:
            smoke.clean_up()
        except (OSError, http.client.HTTPException) as err:
            smoke.check(False, f"clean-up: {type(err).__name__}: {err}")
    if smoke.failures:
        print(f"{len(smoke.failures)} checks failed")
        return 1
    print("every check passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
