"""A batch whose gas limit is above the block gas limit (issue 18.6). The node refuses such a transaction
every time: before the poster compared the two, the operations went back to pending and the same batch
was signed, refused and requeued by every run, for ever. Now the batch is halved until it fits, the
operations cut off go into the next batches of the same run, and each is posted exactly once.

The zkSync-style node here is a private one (its own anvil behind the zks_estimateFee proxy, in a
scratch sandbox directory) whose block gas limit the test lowers: the shared node stays as it is."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from scaleops.core.clients import evm_client
from scaleops.core.settings import Settings, load_settings
from scaleops.sandbox.anvil import rpc
from scaleops.sandbox.manager import Sandbox
from tasks.l2 import evm
from tests.integration.l2.helpers import add_ops, assert_exactly_once, head, post, query, signer_nonce

pytestmark = pytest.mark.integration
CHAIN = "zksync"
OPS = 200


@pytest.fixture
def private_zksync(
    outbox_db: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[dict[str, str]]:
    """A zkSync-style node of this test's own, and settings pointing the `zksync` chain at it."""
    sandbox = Sandbox(Settings(), tmp_path / ".sandbox")
    try:
        sandbox.up(["anvil_zksync"])
        env = {k: v for k, v in sandbox.env().items() if k.startswith("SCALEOPS_CHAINS__ZKSYNC__")}
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        yield env
    finally:
        sandbox.down(purge=True)


def estimate(settings: Settings, ops: int) -> int:
    """The gas limit zks_estimateFee gives a batch of `ops` operations like the test's (not posted)."""
    cfg = settings.chains[CHAIN]
    calldata = evm.post_batch_calldata(
        1, 1, list(range(1, ops + 1)), [f"k{i}" for i in range(ops)], [b"x" * 60] * ops
    )
    quote = evm.quote_fees(
        evm_client(settings, CHAIN),
        "zksync",
        str(cfg.signer_address),
        str(cfg.contract),
        calldata,
        cfg.chain_id,
        0,
        10**6,
    )
    return quote.gas_limit


def test_a_batch_over_the_block_gas_limit_is_split_and_each_op_posted_once(
    private_zksync: dict[str, str],
) -> None:
    settings = load_settings()
    url = private_zksync["SCALEOPS_CHAINS__ZKSYNC__RPC_URL"]
    whole = estimate(settings, OPS)
    # a block holds under half the batch: the whole batch cannot even be estimated (its execution alone
    # passes the block), half of it can but its gas limit (execution + 20% + pubdata) passes the block,
    # a quarter fits
    block_limit = whole * 45 // 100
    rpc(url, "evm_setBlockGasLimit", [hex(block_limit)])
    rpc(url, "evm_mine")
    assert evm.block_gas_limit(evm_client(settings, CHAIN)) == block_limit

    keys = add_ops(settings, CHAIN, OPS)
    start_block, start_nonce = head(settings, CHAIN), signer_nonce(settings, CHAIN, "pending")
    report = post(CHAIN)

    assert report.problems == [], report.problems
    assert report.ops_posted == OPS and report.pending == 0
    assert report.split >= 2  # halved at least twice before the first batch fitted
    assert report.batches >= 3
    gas_limits = [
        int(g) for (g,) in query(settings, "select gas_limit from l2_batches where status = 'confirmed'")
    ]
    assert len(gas_limits) == report.batches and max(gas_limits) <= block_limit
    assert query(settings, "select count(*) from l2_batches where status <> 'confirmed'") == [(0,)]
    assert_exactly_once(CHAIN, keys, start_block, start_nonce)
