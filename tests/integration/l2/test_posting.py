"""The L2 posting protocol against the sandbox's anvil nodes and PostgreSQL: exactly once through
crashes (SIGKILL at every step), stuck transactions, reorgs, the fee cap and bad input."""

from __future__ import annotations

import os
import subprocess
import sys
import threading

import pytest

from scaleops.core.settings import load_settings
from tasks.l2.poster import CRASH_ENV, CRASH_STEPS
from tests.integration.l2.helpers import (
    add_ops,
    assert_exactly_once,
    chain_rpc,
    head,
    mining_paused,
    onchain,
    post,
    query,
    signer_nonce,
)

pytestmark = pytest.mark.integration


def run_poster_subprocess(env: dict[str, str], **options: object) -> subprocess.CompletedProcess[str]:
    args = ", ".join(f"{k}={v!r}" for k, v in options.items())
    code = (
        "from scaleops.core.settings import load_settings\n"
        "from tasks.l2.evm_poster import post_chain\n"
        "from tasks.l2.poster import PostOptions\n"
        f"post_chain(load_settings(), 'optimism', PostOptions({args}))\n"
    )
    return subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120, check=False
    )


@pytest.mark.parametrize("step", [s for s in CRASH_STEPS if s != "replaced"])
def test_sigkill_at_each_step_then_rerun_posts_exactly_once(outbox_db: str, step: str) -> None:
    settings = load_settings()
    keys = add_ops(settings, "optimism", 11)
    start_block, start_nonce = head(settings, "optimism"), signer_nonce(settings, "optimism", "pending")
    crashed = run_poster_subprocess(
        {**os.environ, CRASH_ENV: step}, max_batch_ops=4, wait_seconds=10.0, poll_seconds=0.1
    )
    assert crashed.returncode == -9, crashed.stderr[-2000:]
    report = post(max_batch_ops=4)
    assert report.problems == []
    assert report.pending == 0
    assert_exactly_once("optimism", keys, start_block, start_nonce)
    assert query(settings, "select count(*) from l2_batches where status = 'confirmed'")[0][0] == 3


def test_stuck_transaction_is_replaced_at_the_same_nonce(outbox_db: str) -> None:
    settings = load_settings()
    keys = add_ops(settings, "optimism", 3)
    start_block, start_nonce = head(settings, "optimism"), signer_nonce(settings, "optimism", "pending")
    with mining_paused("optimism"):
        first = post(stuck_after_seconds=0.4, wait_seconds=1.5, max_bumps=2)
        assert first.ops_posted == 0 and first.pending == 3
        assert first.bumped == 2 and first.txs == 3
        attempts = query(
            settings,
            "select t.nonce, t.max_fee_per_gas, t.max_priority_fee_per_gas, t.tx_hash = b.tx_hash"
            " from l2_batch_txs t join l2_batches b on b.id = t.batch_id order by t.created_at",
        )
        assert len({a[0] for a in attempts}) == 1, "a replacement must reuse the nonce"
        for before, after in zip(attempts, attempts[1:], strict=False):
            assert after[1] * 100 >= before[1] * 110 and after[2] * 100 >= before[2] * 110
        assert attempts[-1][3] is True  # the batch points at its newest transaction
        # the node holds exactly one transaction of ours: the newest replacement
        assert signer_nonce(settings, "optimism", "pending") == start_nonce + 1
    report = post()
    assert report.ops_posted == 3
    mined = query(settings, "select tx_hash from l2_batches where status = 'confirmed'")[0][0]
    newest = query(settings, "select tx_hash from l2_batch_txs order by created_at desc limit 1")[0][0]
    assert mined == newest
    assert_exactly_once("optimism", keys, start_block, start_nonce)


def test_sigkill_right_after_a_replacement_is_signed(outbox_db: str) -> None:
    settings = load_settings()
    keys = add_ops(settings, "optimism", 2)
    start_block, start_nonce = head(settings, "optimism"), signer_nonce(settings, "optimism", "pending")
    with mining_paused("optimism"):
        crashed = run_poster_subprocess(
            {**os.environ, CRASH_ENV: "replaced"}, stuck_after_seconds=0.3, wait_seconds=5.0, poll_seconds=0.1
        )
        assert crashed.returncode == -9, crashed.stderr[-2000:]
        # the replacement was written ahead but never sent: the next run sends the newest bytes
        assert query(settings, "select count(*) from l2_batch_txs")[0][0] == 2
        post(stuck_after_seconds=60, wait_seconds=0.5)
    post()
    assert_exactly_once("optimism", keys, start_block, start_nonce)


def test_reorg_reposts_the_batch_once(outbox_db: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SCALEOPS_CHAINS__OPTIMISM__CONFIRMATIONS", "3")
    settings = load_settings()
    keys = add_ops(settings, "optimism", 5)
    start_block, start_nonce = head(settings, "optimism"), signer_nonce(settings, "optimism", "pending")
    snapshot = chain_rpc(settings, "optimism", "evm_snapshot")
    first = post(wait_seconds=0.5)
    assert first.ops_posted == 0  # mined, not yet 3 confirmations deep
    assert query(settings, "select status from l2_batches")[0][0] == "mined"
    assert chain_rpc(settings, "optimism", "evm_revert", [snapshot]) is True  # the block is gone
    chain_rpc(settings, "optimism", "evm_mine")  # the chain moves on without it
    assert onchain(settings, "optimism", keys, start_block) == {}

    stop = threading.Event()

    def mine() -> None:
        while not stop.wait(0.3):
            chain_rpc(settings, "optimism", "evm_mine")

    miner = threading.Thread(target=mine, daemon=True)
    miner.start()
    try:
        report = post(wait_seconds=20)
    finally:
        stop.set()
        miner.join()
    assert report.reorged == 1
    assert report.ops_posted == 5
    assert query(settings, "select reorgs, confirmations >= 3 from l2_batches") == [(1, True)]
    assert_exactly_once("optimism", keys, start_block, start_nonce)


def test_fee_cap_leaves_the_batch_unsent(outbox_db: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SCALEOPS_CHAINS__ARBITRUM__MAX_FEE_PER_BATCH", "1000")
    settings = load_settings()
    add_ops(settings, "arbitrum", 4)
    start_nonce = signer_nonce(settings, "arbitrum", "pending")
    report = post("arbitrum")
    assert report.fee_capped == 4 and report.txs == 0 and report.pending == 4
    assert "MAX_FEE_PER_BATCH" in report.problems[0]
    assert signer_nonce(settings, "arbitrum", "pending") == start_nonce
    statuses = dict(query(settings, "select status, count(*) from l2_operations group by status"))
    assert statuses == {"pending": 4}


def test_payload_too_big_fails_that_operation_only(outbox_db: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SCALEOPS_CHAINS__ARBITRUM__MAX_BATCH_BYTES", "1024")
    settings = load_settings()
    small = add_ops(settings, "arbitrum", 3)
    big = add_ops(settings, "arbitrum", 1, payload_bytes=2000)
    start_block = head(settings, "arbitrum")
    report = post("arbitrum")
    assert report.failed == 1 and report.ops_posted == 3
    assert "payload does not fit" in report.problems[0]
    error = query(settings, "select status, error from l2_operations where key = %s", big[0])[0]
    assert error[0] == "failed" and "MAX_BATCH_BYTES" in error[1]
    assert set(onchain(settings, "arbitrum", small + big, start_block)) == set(small)


def test_a_second_run_for_the_same_chain_waits_its_turn(outbox_db: str) -> None:
    import psycopg

    settings = load_settings()
    add_ops(settings, "optimism", 2)
    signer = str(settings.chains["optimism"].signer_address)
    with psycopg.connect(outbox_db, autocommit=True) as holder:
        holder.execute(
            "select pg_advisory_lock(hashtextextended(%s, 0))", (f"scaleops.l2:optimism:{signer.lower()}",)
        )
        report = post()
    assert report.txs == 0 and report.pending == 2
    assert "another run holds the posting lock" in report.problems[0]


def test_zksync_posts_with_the_gas_limit_of_zks_estimate_fee(outbox_db: str) -> None:
    """The zkSync fee path against the sandbox's zkSync-style node (anvil behind a zks_estimateFee proxy):
    the batch's gas limit is Era's (execution + pubdata + overhead), not eth_estimateGas + 20%."""
    from scaleops.sandbox import zksync_rpc

    settings = load_settings()
    assert settings.chains["zksync"].kind == "zksync"
    keys = add_ops(settings, "zksync", 5)
    start_block, start_nonce = head(settings, "zksync"), signer_nonce(settings, "zksync", "pending")
    report = post("zksync")
    assert report.problems == [] and report.ops_posted == 5 and report.l1_fee_wei == 0
    [(gas_limit, used, block)] = query(settings, "select gas_limit, gas_used, block_number from l2_batches")
    # quoted on the block before: Era's limit = execution + 20% + pubdata x gas per byte + overhead, and
    # the batch published at least a fresh bitmap word, the sender's nonce and the fee payment
    before = chain_rpc(settings, "zksync", "eth_getBlockByNumber", [hex(block - 1), False])
    _, per_byte = zksync_rpc.derive_base_fee_and_gas_per_pubdata(
        zksync_rpc.L1_PUBDATA_PRICE_WEI, int(before["baseFeePerGas"], 16)
    )
    least_pubdata = zksync_rpc.INITIAL_WRITE_BYTES + 3 * zksync_rpc.ACCOUNT_WRITE_BYTES
    assert gas_limit >= used * 12 // 10 + least_pubdata * per_byte + zksync_rpc.TX_OVERHEAD_GAS
    assert_exactly_once("zksync", keys, start_block, start_nonce)
