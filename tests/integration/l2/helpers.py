"""Helpers shared by the L2 posting tests: a fresh outbox database per test, the sandbox's anvil nodes."""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from scaleops.core.settings import Settings, load_settings
from scaleops.sandbox.anvil import rpc
from scaleops.sandbox.scratch import drop_scratch_database as drop_database
from scaleops.sandbox.scratch import scratch_database
from tasks.l2 import evm
from tasks.l2.evm_poster import post_chain
from tasks.l2.outbox import NewOp, add_operations, ensure_schema
from tasks.l2.poster import ChainReport, PostOptions


def chain_rpc(settings: Settings, chain: str, method: str, params: list[Any] | None = None) -> Any:
    return rpc(settings.chains[chain].rpc_url, method, params or [])


def add_ops(settings: Settings, chain: str, count: int, payload_bytes: int = 40) -> list[str]:
    """Queue `count` anchors with unique keys; return the keys."""
    import psycopg

    prefix = uuid.uuid4().hex[:10]
    ops = [NewOp(f"{prefix}-{i}", "anchor", {"d": f"{i:0{payload_bytes}d}"}) for i in range(count)]
    with psycopg.connect(settings.postgres.dsn.get_secret_value(), autocommit=True) as conn:
        ensure_schema(conn)
        add_operations(conn, chain, ops)
    return [o.key for o in ops]


def post(chain: str = "optimism", **options: Any) -> ChainReport:
    options.setdefault("wait_seconds", 20)
    options.setdefault("poll_seconds", 0.1)
    return post_chain(load_settings(), chain, PostOptions(**options))


def onchain(settings: Settings, chain: str, keys: list[str], from_block: int) -> Counter[str]:
    """How many OperationPosted events each key has on chain since `from_block`."""
    w3 = evm_w3(settings, chain)
    wanted = {"0x" + evm.op_key(k).hex(): k for k in keys}
    seen: Counter[str] = Counter()
    for topic, _batch, _tx in evm.posted_operations(w3, str(settings.chains[chain].contract), from_block):
        if topic in wanted:
            seen[wanted[topic]] += 1
    return seen


def evm_w3(settings: Settings, chain: str) -> Any:
    from scaleops.core.clients import evm_client

    return evm_client(settings, chain)


def query(settings: Settings, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    import psycopg

    with psycopg.connect(settings.postgres.dsn.get_secret_value(), autocommit=True) as conn:
        return list(conn.execute(sql, args).fetchall())


def signer_nonce(settings: Settings, chain: str, block: str = "latest") -> int:
    signer = str(settings.chains[chain].signer_address)
    return int(chain_rpc(settings, chain, "eth_getTransactionCount", [signer, block]), 16)


def head(settings: Settings, chain: str) -> int:
    return int(chain_rpc(settings, chain, "eth_blockNumber"), 16)


def scratch_outbox(sandbox_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A scratch outbox database for one test (the chains are shared; keys are unique per test)."""
    base = sandbox_env["SCALEOPS_POSTGRES__DSN"]
    name, dsn = fresh_database(base)
    monkeypatch.setenv("SCALEOPS_POSTGRES__DSN", dsn)
    yield dsn
    drop_database(base, name)


def assert_exactly_once(chain: str, keys: list[str], start_block: int, start_nonce: int) -> None:
    settings = load_settings()
    seen = onchain(settings, chain, keys, start_block)
    assert set(seen) == set(keys), f"missing on chain: {sorted(set(keys) - set(seen))[:5]}"
    assert set(seen.values()) == {1}, "an operation was recorded twice"
    statuses = dict(query(settings, "select status, count(*) from l2_operations group by status"))
    assert statuses == {"confirmed": len(keys)}
    batches = query(settings, "select nonce from l2_batches where status = 'confirmed' order by nonce")
    nonces = [int(n) for (n,) in batches]
    end_nonce = signer_nonce(settings, chain)
    # no gap and no wasted transaction: every nonce used since the start carried one confirmed batch
    assert nonces == list(range(start_nonce, start_nonce + len(nonces)))
    assert end_nonce == start_nonce + len(nonces)
    assert signer_nonce(settings, chain, "pending") == end_nonce  # nothing left in the pool


@contextmanager
def mining_paused(chain: str) -> Iterator[None]:
    settings = load_settings()
    chain_rpc(settings, chain, "evm_setAutomine", [False])
    try:
        yield
    finally:
        chain_rpc(settings, chain, "evm_setAutomine", [True])
        chain_rpc(settings, chain, "evm_mine")


def fresh_database(base_dsn: str) -> tuple[str, str]:
    """A scratch database for one L2 test on the sandbox's primary: (its name, its DSN)."""
    return scratch_database(base_dsn, "l2test")
