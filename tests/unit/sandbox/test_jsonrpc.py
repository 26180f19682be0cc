"""The HTTP side shared by the sandbox's JSON-RPC stand-ins (Solana, zkSync), on a loopback thread."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from scaleops.sandbox.jsonrpc import MAX_BODY_BYTES, answer, serving_in_thread


def echo_method(request: dict[str, Any]) -> dict[str, Any]:
    if request.get("method") == "boom":
        return answer(request.get("id"), error={"code": -32000, "message": "boom"})
    return answer(request.get("id"), result=request.get("method"))


@pytest.fixture
def url() -> Iterator[str]:
    with serving_in_thread(echo_method) as address:
        yield address


def test_single_batch_and_bad_requests_get_json_rpc_answers(url: str) -> None:
    one = httpx.post(url, json={"jsonrpc": "2.0", "id": 7, "method": "eth_chainId"}).json()
    assert one == {"jsonrpc": "2.0", "id": 7, "result": "eth_chainId"}
    batch = httpx.post(url, json=[{"id": 1, "method": "a"}, {"id": 2, "method": "boom"}, 5]).json()
    assert [b.get("result") for b in batch] == ["a", None, None]
    assert batch[1]["error"]["message"] == "boom" and batch[2]["error"]["code"] == -32600
    broken = httpx.post(url, content=b"{nope", headers={"content-type": "application/json"}).json()
    assert broken["error"]["code"] == -32700 and broken["id"] is None


def test_an_oversized_body_is_refused_before_it_is_read(url: str) -> None:
    import socket
    from urllib.parse import urlsplit

    port = urlsplit(url).port
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        head = f"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: {MAX_BODY_BYTES + 1}\r\n\r\n{{}}"
        sock.sendall(head.encode())
        status_line = sock.recv(200).split(b"\r\n")[0]
    assert b" 413 " in status_line
