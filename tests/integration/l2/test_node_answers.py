"""What the EVM poster does when the node says no, on the sandbox's anvil: a signed transaction the node
refuses outright (the signer cannot pay) frees its nonce and puts the operations back to pending, and a
nonce taken by another transaction of the same key (the key used elsewhere) does the same once the
chain has moved past it. Either way the next run posts every operation exactly once."""

from __future__ import annotations

import pytest

from scaleops.core.settings import load_settings
from tasks.l2 import evm
from tests.integration.l2.helpers import (
    add_ops,
    assert_exactly_once,
    chain_rpc,
    evm_w3,
    head,
    mining_paused,
    onchain,
    post,
    query,
    signer_nonce,
)

pytestmark = pytest.mark.integration
CHAIN = "optimism"


def statuses() -> dict[str, int]:
    rows = query(load_settings(), "select status, count(*) from l2_operations group by 1")
    return {str(s): int(n) for s, n in rows}


def test_a_transaction_the_node_refuses_frees_its_nonce_and_requeues(outbox_db: str) -> None:
    settings = load_settings()
    signer = str(settings.chains[CHAIN].signer_address)
    keys = add_ops(settings, CHAIN, 3)
    start_block, start_nonce = head(settings, CHAIN), signer_nonce(settings, CHAIN, "pending")
    balance = chain_rpc(settings, CHAIN, "eth_getBalance", [signer, "latest"])
    chain_rpc(settings, CHAIN, "anvil_setBalance", [signer, hex(10**9)])  # 1 gwei: pays for no batch
    try:
        refused = post()
    finally:
        chain_rpc(settings, CHAIN, "anvil_setBalance", [signer, balance])
    assert refused.ops_posted == 0 and refused.pending == 3 and refused.txs == 1
    assert any("rejected by the node" in p and "pending again" in p for p in refused.problems), (
        refused.problems
    )
    [(status, error, nonce)] = query(settings, "select status, error, nonce from l2_batches")
    assert status == "failed" and "rejected by the node" in error and "insufficient funds" in error.lower()
    assert nonce == start_nonce
    assert statuses() == {"pending": 3}
    assert query(settings, "select count(*) from l2_operations where batch_id is not null") == [(0,)]
    assert signer_nonce(settings, CHAIN, "pending") == start_nonce  # nothing of ours in the pool

    again = post()
    assert again.problems == [] and again.ops_posted == 3
    # the refused nonce is used by the next batch: no gap, nothing posted twice
    assert_exactly_once(CHAIN, keys, start_block, start_nonce)


def foreign_transaction(nonce: int, fee_multiplier: int) -> bytes:
    """A self-transfer signed with the poster's key at `nonce`, as another program holding the key would
    send it: far higher fees, so the node prefers it to the poster's transaction at that nonce."""
    settings = load_settings()
    cfg = settings.chains[CHAIN]
    w3 = evm_w3(settings, CHAIN)
    base_fees, _rewards = evm.fee_history(w3)
    tip = 10**6 * fee_multiplier
    fields = evm.tx_fields(
        cfg.chain_id,
        nonce,
        str(cfg.signer_address),
        b"",
        21_000,
        2 * base_fees[-1] * fee_multiplier + tip,
        tip,
    )
    raw, _hash = evm.sign(fields, cfg.signer_key.get_secret_value())  # type: ignore[union-attr]
    return raw


def test_a_nonce_taken_by_another_transaction_requeues_the_batch(outbox_db: str) -> None:
    settings = load_settings()
    keys = add_ops(settings, CHAIN, 3)
    start_block, start_nonce = head(settings, CHAIN), signer_nonce(settings, CHAIN, "pending")
    with mining_paused(CHAIN):
        sent = post(wait_seconds=0.3, stuck_after_seconds=600)
        assert sent.pending == 3 and query(settings, "select status, nonce from l2_batches") == [
            ("broadcast", start_nonce)
        ]
        # the key is used elsewhere: a transaction at the batch's nonce replaces it in the pool
        assert evm.send_raw(evm_w3(settings, CHAIN), foreign_transaction(start_nonce, 50)) == "sent"
    assert signer_nonce(settings, CHAIN) == start_nonce + 1  # the foreign transaction took the nonce

    taken = post(wait_seconds=15)  # the poster waits NONCE_TAKEN_GRACE_SECONDS before it gives up
    assert taken.ops_posted == 0 and taken.pending == 3
    assert any("was used by another transaction" in p for p in taken.problems), taken.problems
    [(status, error)] = query(settings, "select status, error from l2_batches")
    assert status == "failed" and f"nonce {start_nonce}" in error
    assert statuses() == {"pending": 3}
    assert onchain(settings, CHAIN, keys, start_block) == {}

    again = post()
    assert again.problems == [] and again.ops_posted == 3
    seen = onchain(settings, CHAIN, keys, start_block)
    assert set(seen) == set(keys) and set(seen.values()) == {1}
    assert query(settings, "select nonce from l2_batches where status = 'confirmed'") == [(start_nonce + 1,)]
    assert statuses() == {"confirmed": 3}
