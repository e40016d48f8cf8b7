#!/usr/bin/env python3
"""The local AWS stack: moto's server on loopback, with the table and the secret the functions use.

    local_stack.py up        start (or reuse) the server on LOCAL_STACK_PORT, then seed it
    local_stack.py down      stop the server that `up` started
    local_stack.py seed      create the table and the secret if they are missing
    local_stack.py run CMD   start a private server on a free port, seed it, run CMD with
                             AWS_ENDPOINT_URL pointing at it, and stop it whatever CMD does

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
PROVIDER_KEYS = {"OPENAI_API_KEY": "openai_api_key", "GEMINI_API_KEY": "gemini_api_key"}


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
    moto = Path(sys.executable).with_name("moto_server")
    with open(log_path, "ab") as out:
        process = subprocess.Popen(
            [str(moto), "-H", "127.0.0.1", "-p", str(port)],
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
    if command == "seed":
        seed(endpoint(int(env["LOCAL_STACK_PORT"])), env)
        return 0
    if command == "run" and len(argv) > 2:
        child = argv[3:] if argv[2] == "--" else argv[2:]
        port = free_port()
        process = start_server(port, STATE_DIR / f"moto-{port}.log")
        # Stop the server however we are stopped.
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
        try:
            url = endpoint(port)
            seed(url, env)
            env["AWS_ENDPOINT_URL"] = url
            env["LOCAL_STACK_PORT"] = str(port)
            return subprocess.call(child, env=env)
        except KeyboardInterrupt:
            return 130
        finally:
            stop_server(process.pid, process)
            log(f"moto on port {port} stopped")
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
