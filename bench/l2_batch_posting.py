"""Benchmark: 1,000 outbox operations posted in batches vs one transaction per operation, on the
sandbox's OP-stack anvil, through the same exactly-once poster (write-ahead, receipts, confirmations).

One transaction per operation is what a plain relayer does (OpenZeppelin Relayer style: nonce management
and replacement, no batching); batching is what op-batcher / the Arbitrum batch poster do for their rollups.
Prints gas per operation, L1 data bytes per operation (signed bytes, and FastLZ-compressed bytes as
Fjord prices them), fee per operation, and operations per second from outbox to confirmed.

    .venv/bin/python -m bench l2_batch_posting            # needs `scaleops sandbox up`
    .venv/bin/python -m bench.l2_batch_posting --ops 1000 --batch-ops 200 --solana-ops 0
"""

from __future__ import annotations

import argparse
import os
import time
import uuid
from typing import Any

from scaleops.core.settings import Settings, load_settings
from scaleops.sandbox.manager import Sandbox, apply_env
from scaleops.sandbox.scratch import drop_scratch_database, scratch_database
from tasks.l2.evm_poster import post_chain
from tasks.l2.fees import flz_compress_len
from tasks.l2.outbox import NewOp, add_operations, ensure_schema
from tasks.l2.poster import PostOptions


def run_mode(base_dsn: str, chain: str, ops: int, batch_ops: int | None) -> dict[str, Any]:
    import psycopg

    name, dsn = scratch_database(base_dsn, "l2bench")
    os.environ["SCALEOPS_POSTGRES__DSN"] = dsn
    try:
        settings = load_settings()
        prefix = uuid.uuid4().hex[:8]
        new = [NewOp(f"bench-{prefix}-{i}", "anchor", {"sha256": uuid.uuid4().hex * 2}) for i in range(ops)]
        with psycopg.connect(dsn, autocommit=True) as conn:
            ensure_schema(conn)
            started = time.perf_counter()
            add_operations(conn, chain, new)
            add_seconds = time.perf_counter() - started
        started = time.perf_counter()
        report = post_chain(
            settings, chain, PostOptions(max_batch_ops=batch_ops, wait_seconds=600, poll_seconds=0.05)
        )
        post_seconds = time.perf_counter() - started
        with psycopg.connect(dsn, autocommit=True) as conn:
            raws = [
                bytes(r[0]) for r in conn.execute("select raw_tx from l2_batches where status = 'confirmed'")
            ]
        assert report.ops_posted == ops, report.problems
        signed = sum(len(r) for r in raws)
        compressed = sum(flz_compress_len(r) for r in raws)
        return {
            "txs": len(raws),
            "gas_per_op": report.gas_used / ops,
            "l1_bytes_per_op": signed / ops,
            "l1_fastlz_bytes_per_op": compressed / ops,
            "l2_fee_per_op": report.l2_fee_wei / ops,
            "l1_fee_per_op": report.l1_fee_wei / ops,
            "fee_per_op": report.fee_per_op,
            "ops_per_s": ops / post_seconds,
            "post_seconds": post_seconds,
            "add_ops_per_s": ops / add_seconds,
        }
    finally:
        os.environ["SCALEOPS_POSTGRES__DSN"] = base_dsn
        drop_scratch_database(base_dsn, name)


def run_solana_mode(base_dsn: str, ops: int, batch_ops: int) -> dict[str, Any]:
    import psycopg

    from tasks.l2.solana_poster import post_solana_chain

    name, dsn = scratch_database(base_dsn, "l2bench")
    os.environ["SCALEOPS_POSTGRES__DSN"] = dsn
    try:
        settings = load_settings()
        prefix = uuid.uuid4().hex[:8]
        new = [NewOp(f"bench-{prefix}-{i}", "memo", {"sha256": uuid.uuid4().hex * 2}) for i in range(ops)]
        with psycopg.connect(dsn, autocommit=True) as conn:
            ensure_schema(conn)
            add_operations(conn, "solana", new)
        started = time.perf_counter()
        report = post_solana_chain(
            settings, "solana", PostOptions(max_batch_ops=batch_ops, wait_seconds=600, poll_seconds=0.05)
        )
        seconds = time.perf_counter() - started
        assert report.ops_posted == ops, report.problems
        return {
            "txs": report.batches,
            "ops_per_tx": ops / report.batches,
            "lamports_per_op": (report.lamports or 0) / ops,
            "max_tx_bytes": report.max_tx_bytes,
            "ops_per_s": ops / seconds,
        }
    finally:
        os.environ["SCALEOPS_POSTGRES__DSN"] = base_dsn
        drop_scratch_database(base_dsn, name)


def print_table(title: str, left: str, a: dict[str, Any], b: dict[str, Any], rows: list[Any]) -> None:
    print(title)
    print(f"| metric | {left} | one tx per op | ratio |")
    print("|---|---|---|---|")
    for label, key, fmt, higher_is_better in rows:
        x, y = a[key], b[key]
        ratio = (x / y if higher_is_better else y / x) if x and y else float("nan")
        print(f"| {label} | {fmt.format(x)} | {fmt.format(y)} | {ratio:.1f}x |")


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="bench.l2_batch_posting")
    parser.add_argument("--ops", type=int, default=1000)
    parser.add_argument(
        "--batch-ops", type=int, default=None, help="ops per batch (default: the chain's MAX_BATCH_OPS)"
    )
    parser.add_argument("--chain", default="optimism")
    parser.add_argument("--solana-ops", type=int, default=500)
    args = parser.parse_args(argv)
    sandbox = Sandbox(Settings())
    sandbox.up(["postgres", "anvil_optimism", "anvil_arbitrum", "solana"])
    apply_env(sandbox.env())
    base = os.environ["SCALEOPS_POSTGRES__DSN"]
    import eth_account  # noqa: F401 - imported before the clock starts (seconds of import, not of posting)
    import web3  # noqa: F401

    print(f"{args.ops} operations on {args.chain} (sandbox anvil), outbox -> confirmed", flush=True)
    batched = run_mode(base, args.chain, args.ops, args.batch_ops)
    single = run_mode(base, args.chain, args.ops, 1)
    rows = [
        ("transactions", "txs", "{:.0f}", False),
        ("gas / op", "gas_per_op", "{:,.0f}", False),
        ("L1 data bytes / op (signed tx)", "l1_bytes_per_op", "{:,.1f}", False),
        ("L1 data bytes / op (FastLZ, Fjord)", "l1_fastlz_bytes_per_op", "{:,.1f}", False),
        ("L2 fee / op (wei)", "l2_fee_per_op", "{:,.0f}", False),
        ("L1 fee / op (wei, oracle)", "l1_fee_per_op", "{:,.0f}", False),
        ("total fee / op (wei)", "fee_per_op", "{:,.0f}", False),
        ("ops/s outbox -> confirmed", "ops_per_s", "{:,.0f}", True),
        ("outbox add ops/s", "add_ops_per_s", "{:,.0f}", True),
    ]
    per_batch = args.batch_ops or load_settings().chains[args.chain].max_batch_ops
    print_table(f"EVM ({args.chain})", f"batched (<= {per_batch}/tx)", batched, single, rows)
    if args.solana_ops:
        print(f"\n{args.solana_ops} memo operations on Solana (LiteSVM RPC), outbox -> confirmed", flush=True)
        packed = run_solana_mode(base, args.solana_ops, 64)
        alone = run_solana_mode(base, args.solana_ops, 1)
        solana_rows = [
            ("transactions", "txs", "{:.0f}", False),
            ("ops / transaction", "ops_per_tx", "{:.1f}", True),
            ("largest transaction (bytes, limit 1232)", "max_tx_bytes", "{:.0f}", False),
            ("fee / op (lamports)", "lamports_per_op", "{:,.1f}", False),
            ("ops/s outbox -> confirmed", "ops_per_s", "{:,.0f}", True),
        ]
        print_table("Solana", "packed", packed, alone, solana_rows)
    return 0


if __name__ == "__main__":
    import sys

    raise SystemExit(main(sys.argv[1:]))
