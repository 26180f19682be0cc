"""Cheap loopback checks for the sandbox, with the standard library only.

An idempotent `scaleops sandbox up` runs a few dozen of these. Through httpx, redis-py and boto3 they cost
more in imports and TLS set-up (httpx loads the CA bundle for every client, even for plain http) than
in talking to the services, so the plain-HTTP and Redis calls here use `http.client` and a socket.
"""

from __future__ import annotations

import http.client
import json
import socket
from typing import Any
from urllib.parse import urlsplit

LOCAL = "127.0.0.1"


class ProbeError(RuntimeError):
    """A service answered, but not with what a healthy one says (or did not answer)."""


def http_request(method: str, url: str, body: Any = None, timeout: float = 2.0) -> tuple[int, bytes]:
    """(status, body) of one plain-HTTP request; `body`, when given, is sent as JSON."""
    parts = urlsplit(url)
    if parts.scheme != "http" or not parts.hostname:
        raise ValueError(f"not a plain http URL: {url}")
    conn = http.client.HTTPConnection(parts.hostname, parts.port or 80, timeout=timeout)
    try:
        headers = {"Accept": "application/json"}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        conn.request(method, path, body=data, headers=headers)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def http_ok(url: str, timeout: float = 2.0) -> bool:
    """GET `url` answers 200."""
    return http_request("GET", url, timeout=timeout)[0] == 200


def http_json(method: str, url: str, body: Any = None, timeout: float = 5.0) -> Any:
    """The JSON an HTTP call answers with; any status but 2xx raises ProbeError with the start of the body."""
    status, raw = http_request(method, url, body, timeout=timeout)
    if not 200 <= status < 300:
        raise ProbeError(f"{method} {url}: HTTP {status}: {raw[:200].decode(errors='replace')}")
    return json.loads(raw)


# ------------------------------------------------------------------------------------------------ redis
def _read_reply(stream: Any) -> Any:
    line = stream.readline()
    if not line.endswith(b"\r\n"):
        raise ProbeError("redis: connection closed mid-reply")
    kind, rest = line[:1], line[1:-2]
    if kind == b"+":
        return rest.decode()
    if kind == b"-":
        raise ProbeError(f"redis: {rest.decode(errors='replace')}")
    if kind == b":":
        return int(rest)
    if kind == b"$":
        size = int(rest)
        if size < 0:
            return None
        data = stream.read(size + 2)
        if len(data) != size + 2:
            raise ProbeError("redis: connection closed mid-reply")
        return data[:-2].decode(errors="replace")
    if kind == b"*":
        count = int(rest)
        return None if count < 0 else [_read_reply(stream) for _ in range(count)]
    raise ProbeError(f"redis: unexpected reply {line[:40]!r}")


def redis_command(port: int, *args: str, host: str = LOCAL, timeout: float = 2.0) -> Any:
    """One command over RESP on a fresh connection (no AUTH: the sandbox's servers have none)."""
    payload = f"*{len(args)}\r\n".encode()
    for arg in args:
        encoded = arg.encode()
        payload += b"$%d\r\n%s\r\n" % (len(encoded), encoded)
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.sendall(payload)
        with sock.makefile("rb") as stream:
            return _read_reply(stream)


def redis_ping(port: int, host: str = LOCAL) -> bool:
    return redis_command(port, "PING", host=host) == "PONG"


def redis_cluster_info(port: int, host: str = LOCAL) -> dict[str, str]:
    """CLUSTER INFO as {field: value}."""
    text = redis_command(port, "CLUSTER", "INFO", host=host)
    info: dict[str, str] = {}
    for line in str(text or "").splitlines():
        key, sep, value = line.partition(":")
        if sep:
            info[key.strip()] = value.strip()
    return info
