"""Benchmark: 1,000 outbox operations posted in batches vs one transaction per operation, on the
sandbox's OP-stack anvil, through the same exactly-once poster (write-ahead, receipts, confirmations).

One transaction per operation is what a plain relayer does (OpenZeppelin Relayer style: nonce management
and replacement, no batching); batching is what op-batcher / the Arbitrum batch poster do for their rollups.
Prints gas per operation, L1 data bytes per operation (signed bytes, and FastLZ-compressed bytes as
Fjord prices them), fee per operation, and operations per second from outbox to confirmed.

    .venv/bin/python -m bench l2_batch_posting            # needs `scaleops sandbox up`
    .venv/bin/python -m bench.l2_batch_posting --ops 1000 --batch-ops 200
"""

from __future__ import annotations

import argparse
import os
import time
import uuid
from typing import Any

from scaleops.sandbox.manager import Sandbox, apply_env
from scaleops.settings import Settings, load_settings
from tasks.l2_posting import PostOptions, post_chain
from tasks.l2fees import flz_compress_len
from tasks.outbox import NewOp, add_operations, ensure_schema


def scratch_db(base: str) -> tuple[str, str]:
    import psycopg
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    name = f"l2bench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute(f"create database {name}")
    params = conninfo_to_dict(base)
    params["dbname"] = name
    return name, make_conninfo(**params)


def drop_db(base: str, name: str) -> None:
    import psycopg

    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute(f"drop database if exists {name} with (force)")


def run_mode(base_dsn: str, chain: str, ops: int, batch_ops: int) -> dict[str, Any]:
    import psycopg

    name, dsn = scratch_db(base_dsn)
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
        drop_db(base_dsn, name)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="bench.l2_batch_posting")
    parser.add_argument("--ops", type=int, default=1000)
    parser.add_argument("--batch-ops", type=int, default=200)
    parser.add_argument("--chain", default="optimism")
    args = parser.parse_args(argv)
    sandbox = Sandbox(Settings())
    sandbox.up(["postgres", "anvil_optimism", "anvil_arbitrum"])
    apply_env(sandbox.env())
    base = os.environ["SCALEOPS_POSTGRES__DSN"]
    import eth_account  # noqa: F401 - imported before the clock starts (seconds of import, not of posting)
    import web3  # noqa: F401

    print(f"{args.ops} operations on {args.chain} (sandbox anvil), outbox -> confirmed", flush=True)
    batched = run_mode(base, args.chain, args.ops, args.batch_ops)
    single = run_mode(base, args.chain, args.ops, 1)
    rows = [
        ("transactions", "txs", "{:.0f}"),
        ("gas / op", "gas_per_op", "{:,.0f}"),
        ("L1 data bytes / op (signed tx)", "l1_bytes_per_op", "{:,.1f}"),
        ("L1 data bytes / op (FastLZ, Fjord)", "l1_fastlz_bytes_per_op", "{:,.1f}"),
        ("L2 fee / op (wei)", "l2_fee_per_op", "{:,.0f}"),
        ("L1 fee / op (wei, oracle)", "l1_fee_per_op", "{:,.0f}"),
        ("total fee / op (wei)", "fee_per_op", "{:,.0f}"),
        ("ops/s outbox -> confirmed", "ops_per_s", "{:,.0f}"),
        ("outbox add ops/s", "add_ops_per_s", "{:,.0f}"),
    ]
    print(f"| metric | batched ({args.batch_ops}/tx) | one tx per op | ratio |")
    print("|---|---|---|---|")
    for label, key, fmt in rows:
        a, b = batched[key], single[key]
        higher_is_better = key in ("ops_per_s", "add_ops_per_s")
        ratio = (a / b if higher_is_better else b / a) if a and b else float("nan")
        print(f"| {label} | {fmt.format(a)} | {fmt.format(b)} | {ratio:.1f}x |")
    return 0


if __name__ == "__main__":
    import sys

    raise SystemExit(main(sys.argv[1:]))
