#!/usr/bin/env python3
"""The local AWS stack: moto's server on loopback, with the table and the secret the functions use.

    local_stack.py up        start (or reuse) the server on LOCAL_STACK_PORT, then seed it
    local_stack.py down      stop the server that `up` started
    local_stack.py seed      create the table and the secret if they are missing
    local_stack.py run CMD   start a private server on a free port, seed it, run CMD with
                             AWS_ENDPOINT_URL pointing at it, and stop it whatever CMD does
    local_stack.py serve P   the server itself, in the foreground (what `up` and `run` start)

The table's key schema, indexes and TTL attribute are read from template.yaml, so the local
table cannot drift from the deployed one.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import boto3
import yaml

ROOT = Path(__file__).resolve().parent.parent
STATE_DIR = ROOT / ".local"
PID_FILE = STATE_DIR / "moto.pid"
LOG_FILE = STATE_DIR / "moto.log"
TABLE_RESOURCE = "ChatTable"

DEFAULTS = {
    "AWS_REGION": "us-east-1",
    "AWS_ACCESS_KEY_ID": "local",
    "AWS_SECRET_ACCESS_KEY": "local",
    "AWS_EC2_METADATA_DISABLED": "true",
    "TABLE_NAME": "chat-local",
    "SECRET_ID": "chat-local/provider-keys",
    "LOCAL_STACK_PORT": "4566",
}
# Provider keys the secret takes from the environment when they are set.
PROVIDER_KEYS = {
    "OPENAI_API_KEY": "openai_api_key",
    "GEMINI_API_KEY": "gemini_api_key",
    "ANTHROPIC_API_KEY": "anthropic_api_key",
}


def log(message: str) -> None:
    print(f"local-stack: {message}", file=sys.stderr, flush=True)


class CfnLoader(yaml.SafeLoader):
    """A YAML loader that reads CloudFormation's short-form tags (!Ref, !Sub, ...) as plain data."""


def _cfn_tag(loader: CfnLoader, suffix: str, node: yaml.Node):
    if isinstance(node, yaml.ScalarNode):
        value = loader.construct_scalar(node)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node)
    else:
        value = loader.construct_mapping(node)
    return {suffix: value}


CfnLoader.add_multi_constructor("!", _cfn_tag)


def table_properties() -> dict:
    template = yaml.load((ROOT / "template.yaml").read_text(), Loader=CfnLoader)
    return template["Resources"][TABLE_RESOURCE]["Properties"]


def endpoint(port: int) -> str:
    return f"http://127.0.0.1:{port}"


def answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/moto-api/data.json", timeout=1):
            return True
    except (urllib.error.URLError, OSError):
        return False


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(port: int, log_path: Path) -> subprocess.Popen:
    url = endpoint(port)
    if answers(url):
        raise SystemExit(f"local-stack: port {port} is already serving; set LOCAL_STACK_PORT")
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as out:
        process = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), "serve", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    deadline = time.monotonic() + 60
    while not answers(url):
        if process.poll() is not None:
            raise SystemExit(f"local-stack: moto exited with {process.returncode}; see {log_path}")
        if time.monotonic() > deadline:
            process.kill()
            raise SystemExit(f"local-stack: moto did not answer on {url} within 60 s; see {log_path}")
        time.sleep(0.1)
    log(f"moto is up on {url} (pid {process.pid})")
    return process


def serve(port: int) -> None:
    """Runs moto's server app on loopback, handling one request at a time.

    moto's backends are not thread-safe: under concurrent TransactWriteItems its threaded
    server fails requests with 500 ("dictionary changed size during iteration") while it copies
    the table for rollback. Connections stay concurrent; the app runs under one lock. moto is
    bound by Python's GIL anyway, so this costs it little throughput.

    The HTTP server is waitress, not moto's own (werkzeug's development server), because
    werkzeug closes every connection after one response: each SDK call would open a new TCP
    connection, which real DynamoDB endpoints never make clients do. waitress keeps them alive.
    """
    import waitress
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app

    app = DomainDispatcherApplication(create_backend_app)
    lock = threading.Lock()

    def one_at_a_time(environ, start_response):
        with lock:
            # A caller that gave up while its request queued (an SDK operation timeout) gets no
            # answer, so the request is not run: after a saturating load the backlog drains in
            # seconds instead of replaying minutes of abandoned writes. For the caller this is a
            # timed-out request that did not land, one of the two outcomes it must handle anyway.
            if environ.get("waitress.client_disconnected", lambda: False)():
                start_response("503 Service Unavailable", [("Content-Length", "0")])
                return []
            return list(app(environ, start_response))

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    # Room for the load benchmark's 1,000 users; requests beyond the app's pace queue here.
    waitress.serve(
        one_at_a_time,
        host="127.0.0.1",
        port=port,
        threads=4,
        connection_limit=2000,
        backlog=2048,
        channel_timeout=300,
        # poll(), not select(): select() cannot watch descriptors above 1023 and ends the server.
        asyncore_use_poll=True,
        # Keep reading a connection whose request waits, so that its close is noticed.
        channel_request_lookahead=1,
    )


def stop_server(pid: int, process: subprocess.Popen | None = None) -> None:
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    if process is not None:  # our own child: reap it, or it lingers as a zombie
        try:
            process.wait(timeout=10)
            return
        except subprocess.TimeoutExpired:
            os.killpg(pid, signal.SIGKILL)
            process.wait()
            return
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    os.killpg(pid, signal.SIGKILL)


def seed(url: str, env: dict) -> None:
    """Creates the table and the secret when they are missing; safe to run again."""
    session = boto3.session.Session(
        aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
        region_name=env["AWS_REGION"],
    )
    dynamodb = session.client("dynamodb", endpoint_url=url)
    table = env["TABLE_NAME"]
    props = table_properties()
    existing = dynamodb.list_tables()["TableNames"]
    if table not in existing:
        args = {
            "TableName": table,
            "AttributeDefinitions": props["AttributeDefinitions"],
            "KeySchema": props["KeySchema"],
            "BillingMode": props["BillingMode"],
        }
        if props.get("GlobalSecondaryIndexes"):
            args["GlobalSecondaryIndexes"] = props["GlobalSecondaryIndexes"]
        dynamodb.create_table(**args)
        dynamodb.get_waiter("table_exists").wait(TableName=table)
        ttl = props.get("TimeToLiveSpecification")
        if ttl:
            dynamodb.update_time_to_live(TableName=table, TimeToLiveSpecification=ttl)
        log(f"created table {table}")

    secrets = session.client("secretsmanager", endpoint_url=url)
    keys = {name: os.environ[var] for var, name in PROVIDER_KEYS.items() if os.environ.get(var)}
    secret_id = env["SECRET_ID"]
    try:
        secrets.describe_secret(SecretId=secret_id)
        if keys:
            secrets.put_secret_value(SecretId=secret_id, SecretString=json.dumps(keys))
            log(f"updated secret {secret_id} with keys: {', '.join(sorted(keys))}")
    except secrets.exceptions.ResourceNotFoundException:
        secrets.create_secret(Name=secret_id, SecretString=json.dumps(keys))
        log(f"created secret {secret_id} (keys: {', '.join(sorted(keys)) or 'none'})")


def environment() -> dict:
    env = dict(os.environ)
    for name, value in DEFAULTS.items():
        env.setdefault(name, value)
    return env


def main(argv: list[str]) -> int:
    env = environment()
    command = argv[1] if len(argv) > 1 else ""
    if command == "up":
        url = endpoint(int(env["LOCAL_STACK_PORT"]))
        if not answers(url):
            process = start_server(int(env["LOCAL_STACK_PORT"]), LOG_FILE)
            PID_FILE.write_text(str(process.pid))
        seed(url, env)
        return 0
    if command == "down":
        if PID_FILE.exists():
            stop_server(int(PID_FILE.read_text()))
            PID_FILE.unlink()
            log("moto stopped")
        return 0
    if command == "serve" and len(argv) > 2:
        serve(int(argv[2]))
        return 0
    if command == "seed":
        seed(endpoint(int(env["LOCAL_STACK_PORT"])), env)
        return 0
    if command == "run" and len(argv) > 2:
        child = argv[3:] if argv[2] == "--" else argv[2:]
        port = free_port()
        log_path = STATE_DIR / f"moto-{port}.log"
        process = start_server(port, log_path)
        status = 1
        # Stop the server however we are stopped.
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
        try:
            url = endpoint(port)
            seed(url, env)
            env["AWS_ENDPOINT_URL"] = url
            env["LOCAL_STACK_PORT"] = str(port)
            status = subprocess.call(child, env=env)
            return status
        except KeyboardInterrupt:
            return 130
        finally:
            stop_server(process.pid, process)
            if status == 0:
                log_path.unlink(missing_ok=True)
            log(f"moto on port {port} stopped" + ("" if status == 0 else f"; its log: {log_path}"))
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
