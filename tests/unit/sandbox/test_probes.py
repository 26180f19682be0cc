"""The sandbox's standard-library checks (plain HTTP, JSON-RPC, Redis RESP) against loopback servers
started here: no sandbox needed."""

from __future__ import annotations

import io
import socket
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from scaleops.sandbox.anvil import rpc
from scaleops.sandbox.jsonrpc import answer, serving_in_thread
from scaleops.sandbox.probes import (
    ProbeError,
    _read_reply,
    http_json,
    http_ok,
    http_request,
    redis_cluster_info,
    redis_command,
    redis_ping,
)
from scaleops.sandbox.services import SandboxError


# ------------------------------------------------------------------------------------------------ http
def echo(request: dict[str, Any]) -> dict[str, Any]:
    if request.get("method") == "boom":
        return answer(request.get("id"), error={"code": -32000, "message": "boom"})
    return answer(request.get("id"), result=request.get("params"))


@pytest.fixture
def url() -> Iterator[str]:
    with serving_in_thread(echo) as address:
        yield address


def test_json_rpc_over_plain_http(url: str) -> None:
    assert rpc(url, "eth_call", [1, "two"]) == [1, "two"]
    with pytest.raises(SandboxError, match="boom: boom"):
        rpc(url, "boom")


def test_http_status_and_errors(url: str) -> None:
    status, body = http_request("GET", url)  # the JSON-RPC handler has no GET
    assert status == 501 and body
    assert not http_ok(url)
    with pytest.raises(ProbeError, match="HTTP 501"):
        http_json("GET", url)
    assert http_json("POST", url, {"jsonrpc": "2.0", "id": 3, "params": {"a": 1}})["result"] == {"a": 1}
    with pytest.raises(ValueError, match="plain http"):
        http_request("GET", "https://127.0.0.1:1/")


def test_a_port_nobody_listens_on_raises() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound, never listening: connections are refused
        with pytest.raises(OSError):
            http_request("GET", f"http://127.0.0.1:{port}/", timeout=1)
        with pytest.raises(OSError):
            redis_ping(port)


# ------------------------------------------------------------------------------------------------ redis
@pytest.mark.parametrize(
    ("raw", "parsed"),
    [
        (b"+PONG\r\n", "PONG"),
        (b":42\r\n", 42),
        (b"$5\r\nhello\r\n", "hello"),
        (b"$0\r\n\r\n", ""),
        (b"$-1\r\n", None),
        (b"*2\r\n$1\r\na\r\n:1\r\n", ["a", 1]),
        (b"*-1\r\n", None),
    ],
)
def test_resp_replies(raw: bytes, parsed: Any) -> None:
    assert _read_reply(io.BytesIO(raw)) == parsed


@pytest.mark.parametrize("raw", [b"", b"+PON", b"$5\r\nhel", b"?what\r\n"])
def test_broken_resp_replies_raise(raw: bytes) -> None:
    with pytest.raises(ProbeError):
        _read_reply(io.BytesIO(raw))


def test_a_redis_error_reply_raises() -> None:
    with pytest.raises(ProbeError, match="ERR This instance has cluster support disabled"):
        _read_reply(io.BytesIO(b"-ERR This instance has cluster support disabled\r\n"))


@pytest.fixture
def fake_redis() -> Iterator[tuple[int, list[bytes]]]:
    """Answers PING and CLUSTER INFO like redis-server; records what it was sent."""
    server = socket.create_server(("127.0.0.1", 0))
    seen: list[bytes] = []

    def serve() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            with conn:
                request = conn.recv(65536)
                seen.append(request)
                if b"PING" in request:
                    conn.sendall(b"+PONG\r\n")
                else:
                    info = b"cluster_state:ok\r\ncluster_known_nodes:3\r\n"
                    conn.sendall(b"$%d\r\n%s\r\n" % (len(info), info))

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield server.getsockname()[1], seen
    finally:
        server.close()


def test_redis_commands_over_a_socket(fake_redis: tuple[int, list[bytes]]) -> None:
    port, seen = fake_redis
    assert redis_ping(port)
    assert seen[-1] == b"*1\r\n$4\r\nPING\r\n"
    assert redis_cluster_info(port) == {"cluster_state": "ok", "cluster_known_nodes": "3"}
    assert seen[-1] == b"*2\r\n$7\r\nCLUSTER\r\n$4\r\nINFO\r\n"
    assert redis_command(port, "PING") == "PONG"
