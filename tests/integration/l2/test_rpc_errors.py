"""RPC errors and timeouts: retried when a retry can help, never leaking the signer key, and never
leaving the outbox in a state the next run cannot finish exactly once."""

from __future__ import annotations

import socket
import traceback
from collections.abc import Iterator
from typing import Any

import pytest

from scaleops.core.retry import is_transient
from scaleops.core.settings import load_settings
from scaleops.sandbox.jsonrpc import answer, serving_in_thread
from tests.integration.l2.helpers import (
    add_ops,
    assert_exactly_once,
    head,
    post,
    query,
    signer_nonce,
)

pytestmark = pytest.mark.integration


def rate_limited(request: dict[str, Any]) -> dict[str, Any]:
    """Every request answered as a provider over its quota answers it."""
    return answer(request.get("id"), error={"code": -32005, "message": "rate limit"})


@pytest.fixture
def rate_limited_rpc() -> Iterator[str]:
    with serving_in_thread(rate_limited) as address:
        yield address


@pytest.fixture
def silent_rpc() -> Iterator[str]:
    """Accepts connections and never answers: a hung node."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    sock.close()


def check_failure(exc: BaseException, key: str) -> None:
    assert is_transient(exc), f"{type(exc).__name__} should be retried"
    text = "".join(traceback.format_exception(exc))
    assert key not in text and key.removeprefix("0x") not in text


@pytest.mark.parametrize("node", ["rate_limited_rpc", "silent_rpc"])
def test_rpc_failure_is_transient_secret_free_and_recoverable(
    outbox_db: str,
    node: str,
    request: pytest.FixtureRequest,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    settings = load_settings()
    key = settings.chains["optimism"].signer_key.get_secret_value()  # type: ignore[union-attr]
    keys = add_ops(settings, "optimism", 3)
    start_block, start_nonce = head(settings, "optimism"), signer_nonce(settings, "optimism", "pending")
    monkeypatch.setenv("SCALEOPS_CHAINS__OPTIMISM__RPC_URL", request.getfixturevalue(node))
    monkeypatch.setenv("SCALEOPS_CHAINS__OPTIMISM__RPC_TIMEOUT_SECONDS", "0.5")
    # no FROM_BLOCK check at the start (it asks the node for its head): the first call to the node is
    # then the quote, after the batch is claimed, the state this test leaves for the next run
    monkeypatch.setenv("SCALEOPS_CHAINS__OPTIMISM__FROM_BLOCK", "0")
    with pytest.raises(Exception) as caught:
        post(wait_seconds=1)
    check_failure(caught.value, key)
    assert query(load_settings(), "select status from l2_batches") == [("batched",)]  # claimed, unsigned
    monkeypatch.undo()
    monkeypatch.setenv("SCALEOPS_POSTGRES__DSN", outbox_db)
    report = post()
    assert report.ops_posted == 3
    assert_exactly_once("optimism", keys, start_block, start_nonce)


def test_dead_node_is_transient(outbox_db: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from scaleops.sandbox.procs import free_port

    settings = load_settings()
    add_ops(settings, "optimism", 1)
    monkeypatch.setenv("SCALEOPS_CHAINS__OPTIMISM__RPC_URL", f"http://127.0.0.1:{free_port()}")
    with pytest.raises(Exception) as caught:
        post(wait_seconds=1)
    check_failure(caught.value, settings.chains["optimism"].signer_key.get_secret_value())  # type: ignore[union-attr]


def test_a_dry_run_reports_what_is_pending_without_asking_the_node(
    outbox_db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from scaleops.sandbox.procs import free_port

    settings = load_settings()
    assert settings.chains["optimism"].from_block > 0  # the check it skips would ask for the head
    add_ops(settings, "optimism", 2)
    monkeypatch.setenv("SCALEOPS_CHAINS__OPTIMISM__RPC_URL", f"http://127.0.0.1:{free_port()}")
    report = post(dry_run=True)
    assert (report.pending, report.txs, report.problems) == (2, 0, [])
    assert query(load_settings(), "select count(*) from l2_batches") == [(0,)]
