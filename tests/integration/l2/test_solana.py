"""Solana posting against the sandbox's LiteSVM-backed RPC: packing under 1232 bytes, every operation
landed exactly once, blockhash expiry handled by checking signature statuses before re-signing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections import Counter

import pytest

from scaleops.core.settings import Settings, load_settings
from scaleops.sandbox.anvil import rpc
from tasks.l2.outbox import NewOp, add_operations, ensure_schema
from tasks.l2.poster import CRASH_ENV, PostOptions
from tasks.l2.solana import PACKET_DATA_SIZE
from tasks.l2.solana_poster import post_solana_chain
from tests.integration.l2.helpers import query

pytestmark = pytest.mark.integration


def queue(settings: Settings, memos: int, transfers: int) -> tuple[list[str], dict[str, int]]:
    import psycopg
    from solders.keypair import Keypair

    prefix = uuid.uuid4().hex[:8]
    ops = [NewOp(f"{prefix}-m{i}", "memo", {"sha256": uuid.uuid4().hex}) for i in range(memos)]
    recipients = {str(Keypair().pubkey()): 1_000_000 + i for i in range(transfers)}  # fresh accounts
    ops += [
        NewOp(f"{prefix}-t{i}", "transfer", {"to": to, "lamports": lamports})
        for i, (to, lamports) in enumerate(recipients.items())
    ]
    with psycopg.connect(settings.postgres.dsn.get_secret_value(), autocommit=True) as conn:
        ensure_schema(conn)
        add_operations(conn, "solana", ops)
    return [o.key for o in ops[:memos]], recipients


def call(settings: Settings, method: str, params: list[object] | None = None) -> object:
    return rpc(settings.chains["solana"].rpc_url, method, params or [])


def landed_memo_keys(settings: Settings) -> Counter[str]:
    """Keys found in the Memo program logs of every transaction the outbox says it signed."""
    seen: Counter[str] = Counter()
    for (signature,) in query(settings, "select tx_hash from l2_batch_txs"):
        tx = call(settings, "getTransaction", [signature])
        if not tx:
            continue
        for line in tx["meta"]["logMessages"]:  # type: ignore[index]
            if line.startswith("Program log: {"):  # the Memo program logs the memo's text
                seen[json.loads(line.removeprefix("Program log: "))["key"]] += 1
    return seen


def post(**options: object) -> object:
    options.setdefault("wait_seconds", 10.0)
    options.setdefault("poll_seconds", 0.05)
    return post_solana_chain(load_settings(), "solana", PostOptions(**options))  # type: ignore[arg-type]


def test_ops_packed_under_the_packet_limit_and_posted_once(outbox_db: str) -> None:
    settings = load_settings()
    memo_keys, recipients = queue(settings, memos=40, transfers=25)
    report = post()
    assert report.problems == [] and report.ops_posted == 65 and report.pending == 0  # type: ignore[attr-defined]
    sizes = [len(bytes(r[0])) for r in query(settings, "select raw_tx from l2_batch_txs")]
    assert max(sizes) <= PACKET_DATA_SIZE and report.max_tx_bytes == max(sizes)  # type: ignore[attr-defined]
    assert report.batches < 65 // 10  # type: ignore[attr-defined]
    assert landed_memo_keys(settings) == Counter(dict.fromkeys(memo_keys, 1))
    for to, lamports in recipients.items():
        assert call(settings, "getBalance", [to])["value"] == lamports  # type: ignore[index]
    assert report.lamports and report.fee_per_op == report.lamports // 65  # type: ignore[attr-defined]
    budget = query(settings, "select gas_limit, max_fee_per_gas from l2_batches where status = 'confirmed'")
    assert all(0 < limit < 200_000 and price >= 1 for limit, price in budget)  # limit from simulation


def run_crashing(step: str) -> None:
    code = (
        "from scaleops.core.settings import load_settings\n"
        "from tasks.l2.poster import PostOptions\n"
        "from tasks.l2.solana_poster import post_solana_chain\n"
        "post_solana_chain(load_settings(), 'solana', PostOptions(wait_seconds=5))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, CRASH_ENV: step},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == -9, done.stderr[-2000:]


def test_expired_unsent_transaction_is_re_signed_once(outbox_db: str) -> None:
    settings = load_settings()
    memo_keys, _ = queue(settings, memos=5, transfers=0)
    run_crashing("signed")  # signed and stored, never sent
    call(settings, "litesvm_advanceBlocks", [200])  # its blockhash expires
    report = post()
    assert report.resigned == 1 and report.ops_posted == 5  # type: ignore[attr-defined]
    assert landed_memo_keys(settings) == Counter(dict.fromkeys(memo_keys, 1))


def test_sent_transaction_is_found_by_signature_not_re_signed(outbox_db: str) -> None:
    settings = load_settings()
    memo_keys, _ = queue(settings, memos=5, transfers=0)
    run_crashing("sent")  # sent, landed, the outbox never heard back
    call(settings, "litesvm_advanceBlocks", [200])  # and its blockhash has expired since
    report = post()
    assert report.resigned == 0 and report.ops_posted == 5 and report.txs == 0  # type: ignore[attr-defined]
    assert landed_memo_keys(settings) == Counter(dict.fromkeys(memo_keys, 1))


def test_bad_solana_payloads_fail_alone(outbox_db: str) -> None:
    import psycopg

    settings = load_settings()
    good, _ = queue(settings, memos=2, transfers=0)
    bad = [
        NewOp(f"bad-{uuid.uuid4().hex[:6]}", "transfer", {"to": "nope", "lamports": 1}),
        NewOp(f"bad-{uuid.uuid4().hex[:6]}", "anchor", {"x": 1}),
        NewOp(f"bad-{uuid.uuid4().hex[:6]}", "memo", {"blob": "x" * 1300}),
    ]
    with psycopg.connect(outbox_db, autocommit=True) as conn:
        add_operations(conn, "solana", bad)
    report = post()
    assert report.failed == 3 and report.ops_posted == 2  # type: ignore[attr-defined]
    errors = dict(query(settings, "select key, error from l2_operations where status = 'failed'"))
    assert "transfer payload" in errors[bad[0].key]
    assert "not posted on Solana" in errors[bad[1].key]
    assert "does not fit" in errors[bad[2].key]
