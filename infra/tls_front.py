#!/usr/bin/env python3
"""TLS in front of the local stack, and an OpenAI-compatible provider stub behind TLS, so that a
function started under them pays for its handshakes the way a deployed one does (`make bench-first`).

    tls_front.py DIR MOTO_URL [AWS_RTT_MS [PROVIDER_RTT_MS]]

Writes DIR/ca.pem (a certificate authority made for this run) and DIR/bundle.pem (the system's
roots followed by that authority, so a client parses about as many roots as it does on Lambda),
then listens on three loopback ports, each with a certificate for 127.0.0.1 that the authority
signed (RSA 2048, as AWS's endpoints use):

- dynamodb and secretsmanager: forward the decrypted bytes to moto (two ports, as on AWS two hosts);
- openai: answers `POST /v1/chat/completions` in OpenAI's wire format, whole or streamed
  (`"stream": true`: `chat.completion.chunk` events, a usage chunk, `data: [DONE]`), and
  `GET /v1/models`.

AWS_RTT_MS and PROVIDER_RTT_MS (default 0) hold every piece of data, both ways, for half a round
trip before it is passed on, below TLS, so that a new connection's handshake costs its round
trips (AWS's endpoints are in the function's region; a provider may be farther). It prints one JSON line with
the three endpoints, then serves until it is killed.
"""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import json
import ssl
import sys
import time
from pathlib import Path
from urllib.parse import urlparse

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

SYSTEM_ROOTS = [
    Path("/etc/ssl/certs/ca-certificates.crt"),
    Path("/etc/pki/tls/certs/ca-bundle.crt"),
]
REPLY = ["A", " good", " name", " is", " Clint", " Yeastwood", "."]


def make_certificates(directory: Path) -> ssl.SSLContext:
    """The authority (written to DIR) and a server context with a certificate it signed."""
    now = datetime.datetime.now(datetime.timezone.utc)
    start, end = now - datetime.timedelta(hours=1), now + datetime.timedelta(days=2)
    ca_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "chat bench test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, key_cert_sign=True, crl_sign=True,
                content_commitment=False, key_encipherment=False, data_encipherment=False,
                key_agreement=False, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .sign(ca_key, hashes.SHA256())
    )
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    leaf = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    directory.mkdir(parents=True, exist_ok=True)
    ca_pem = ca.public_bytes(serialization.Encoding.PEM)
    (directory / "ca.pem").write_bytes(ca_pem)
    system = next((path for path in SYSTEM_ROOTS if path.exists()), None)
    (directory / "bundle.pem").write_bytes((system.read_bytes() if system else b"") + ca_pem)
    (directory / "server.pem").write_bytes(
        leaf.public_bytes(serialization.Encoding.PEM)
        + key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(directory / "server.pem")
    return context


async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, delay: float) -> None:
    """Copies reader to writer, each piece `delay` seconds after it arrived (a link's latency:
    pieces in flight do not wait for one another)."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue = asyncio.Queue()

    async def receive():
        try:
            while data := await reader.read(65536):
                queue.put_nowait((loop.time() + delay, data))
        except ConnectionError:
            pass
        finally:
            queue.put_nowait((loop.time() + delay, b""))

    receiving = asyncio.create_task(receive())
    try:
        while True:
            due, data = await queue.get()
            if (wait := due - loop.time()) > 0:
                await asyncio.sleep(wait)
            if not data:
                break
            writer.write(data)
            await writer.drain()
    except ConnectionError:
        pass
    finally:
        receiving.cancel()
        writer.close()


async def relay(port: int, delay: float = 0, context: ssl.SSLContext | None = None) -> int:
    """A loopback listener (TLS with `context`) that passes the bytes on to `port`, each way
    `delay` seconds after they arrived. Returns its port."""

    async def connection(reader, writer):
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            writer.close()
            return
        await asyncio.gather(
            pipe(reader, upstream_writer, delay), pipe(upstream_reader, writer, delay)
        )

    server = await asyncio.start_server(connection, "127.0.0.1", 0, ssl=context)
    return server.sockets[0].getsockname()[1]


def chunk(delta: dict, finish: str | None = None) -> bytes:
    event = {
        "id": "chatcmpl-bench", "object": "chat.completion.chunk", "created": int(time.time()),
        "model": "gpt-4o-mini",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }
    return b"data: " + json.dumps(event).encode() + b"\n\n"


def http_chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


USAGE = {"prompt_tokens": 12, "completion_tokens": len(REPLY), "total_tokens": 12 + len(REPLY)}


async def openai_stub(context: ssl.SSLContext) -> int:
    async def connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                method, path, _ = lines[0].split(" ", 2)
                headers = {
                    name.strip().lower(): value.strip()
                    for name, _, value in (line.partition(":") for line in lines[1:] if line)
                }
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                if method == "GET" and path == "/v1/models":
                    answer = json.dumps({"object": "list", "data": [
                        {"id": "gpt-4o-mini", "object": "model", "owned_by": "bench"}]}).encode()
                    writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                                 b"content-length: %d\r\n\r\n%s" % (len(answer), answer))
                elif method == "POST" and path == "/v1/chat/completions":
                    request = json.loads(body or b"{}")
                    if request.get("stream"):
                        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
                                     b"transfer-encoding: chunked\r\n\r\n")
                        writer.write(http_chunk(chunk({"role": "assistant", "content": ""})))
                        for piece in REPLY:
                            writer.write(http_chunk(chunk({"content": piece})))
                        writer.write(http_chunk(chunk({}, "stop")))
                        usage = {"id": "chatcmpl-bench", "object": "chat.completion.chunk",
                                 "created": int(time.time()), "model": "gpt-4o-mini",
                                 "choices": [], "usage": USAGE}
                        writer.write(http_chunk(b"data: " + json.dumps(usage).encode() + b"\n\n"))
                        writer.write(http_chunk(b"data: [DONE]\n\n") + b"0\r\n\r\n")
                    else:
                        answer = json.dumps({
                            "id": "chatcmpl-bench", "object": "chat.completion",
                            "created": int(time.time()), "model": "gpt-4o-mini",
                            "choices": [{"index": 0, "finish_reason": "stop", "message": {
                                "role": "assistant", "content": "".join(REPLY)}}],
                            "usage": USAGE,
                        }).encode()
                        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                                     b"content-length: %d\r\n\r\n%s" % (len(answer), answer))
                else:
                    error = json.dumps({"error": {"message": f"no route {method} {path}",
                                                  "type": "invalid_request_error"}}).encode()
                    writer.write(b"HTTP/1.1 404 Not Found\r\ncontent-type: application/json\r\n"
                                 b"content-length: %d\r\n\r\n%s" % (len(error), error))
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, ValueError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(connection, "127.0.0.1", 0, ssl=context)
    return server.sockets[0].getsockname()[1]


async def main(directory: Path, moto_url: str, aws_rtt_ms: float, provider_rtt_ms: float) -> None:
    context = make_certificates(directory)
    moto_port = urlparse(moto_url).port or 80
    # Latency below TLS (a relay in front of the TLS listener), so the handshake pays it too.
    dynamodb = await relay(await relay(moto_port, context=context), aws_rtt_ms / 2000)
    secrets = await relay(await relay(moto_port, context=context), aws_rtt_ms / 2000)
    openai = await relay(await openai_stub(context), provider_rtt_ms / 2000)
    print(json.dumps({
        "dynamodb": f"https://127.0.0.1:{dynamodb}",
        "secretsmanager": f"https://127.0.0.1:{secrets}",
        "openai": f"https://127.0.0.1:{openai}/v1",
    }), flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    if len(sys.argv) < 3:
        raise SystemExit(__doc__)
    rtts = [float(value) for value in sys.argv[3:5]] + [0.0, 0.0]
    try:
        asyncio.run(main(Path(sys.argv[1]), sys.argv[2], rtts[0], rtts[1]))
    except KeyboardInterrupt:
        pass
