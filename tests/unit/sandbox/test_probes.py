"""The sandbox's standard-library checks (plain HTTP, JSON-RPC, Redis RESP), its memo of derived values
and its concurrent probing, against loopback servers started here: no sandbox needed."""

from __future__ import annotations

import io
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from scaleops.core.settings import Settings
from scaleops.sandbox.anvil import rpc
from scaleops.sandbox.jsonrpc import answer, serving_in_thread
from scaleops.sandbox.manager import PROBE_THREADS, Sandbox
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
from scaleops.sandbox.services import SandboxError, Service


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


# ------------------------------------------------------------------------------------------------ manager
def test_memo_computes_once_per_source_and_writes_only_under_the_lock(tmp_path: Path) -> None:
    calls: list[str] = []

    def compute(source: str) -> str:
        calls.append(source)
        return source.upper()

    sandbox = Sandbox(Settings(), tmp_path / "sb")
    assert sandbox.memo("k", "abc", compute) == "ABC"  # outside `up`/`down`: kept in memory only
    assert sandbox.memo("k", "abc", compute) == "ABC"
    assert calls == ["abc"]
    assert not sandbox.state_file.exists()
    with sandbox.lock():
        assert sandbox.memo("k", "abc", compute) == "ABC"  # the lock re-reads the state: computed again
        assert sandbox.memo("k", "xyz", compute) == "XYZ"  # a changed source is never served stale
    assert calls == ["abc", "abc", "xyz"]
    again = Sandbox(Settings(), tmp_path / "sb")
    assert again.memo("k", "xyz", compute) == "XYZ"
    assert calls == ["abc", "abc", "xyz"]  # another process finds it on disk
    assert "xyz" not in sandbox.state_file.read_text()  # the source is kept as a digest only


def test_checks_run_at_the_same_time(tmp_path: Path) -> None:
    """Each check waits for all the others: run one after another they would break the barrier."""
    sandbox = Sandbox(Settings(), tmp_path / "sb")
    services: list[Service] = [sandbox.service(name) for name in sandbox.names[:PROBE_THREADS]]
    barrier = threading.Barrier(len(services), timeout=10)

    def check(svc: Service) -> str:
        barrier.wait()
        return svc.name.upper()

    assert sandbox._each(services, check) == {svc.name: svc.name.upper() for svc in services}
