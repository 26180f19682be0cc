"""Duty `l2-batch-posting`: drain the PostgreSQL outbox into per-chain batches and post each exactly once.

For every configured chain (or only `chain`): take the posting lock for (chain, signer), reconcile
what a previous run left (rebroadcast signed-but-unseen transactions, pick up receipts, re-post reorged
batches), pack pending operations into batches under MAX_BATCH_OPS / MAX_BATCH_BYTES, quote the fee
(EIP-1559 + the stack's L1 data fee) and refuse a batch above MAX_FEE_PER_BATCH (`scaleops.l2.fee-cap`),
sign with the raw transaction written ahead, broadcast, replace stuck transactions at the same nonce,
and wait for CONFIRMATIONS blocks with a block-hash re-check. The protocol lives in tasks/l2/.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import Field

from scaleops.core.duties import duty
from scaleops.core.endpoints import unreachable
from scaleops.core.redaction import REDACTOR
from scaleops.core.reporting import utcnow
from scaleops.core.settings import Settings
from tasks.l2.chains import post_chain_task, select_chains
from tasks.l2.evm_poster import ChainReport, PostOptions
from tasks.l2.report import L2PostingReport


def needs(settings: Settings) -> list[str]:
    if not settings.chains:
        return ["no chains configured (SCALEOPS_CHAINS__<NAME>__RPC_URL, __CHAIN_ID, __SIGNER_KEY, ...)"]
    return [
        f"chain {n}: no signer key (SCALEOPS_CHAINS__{n.upper()}__SIGNER_KEY)"
        for n, c in settings.chains.items()
        if c.signer_key is None
    ]


@duty(
    "l2-batch-posting",
    namespace="l2",
    report=L2PostingReport,
    summary="post the PostgreSQL outbox to L2 chains in batches, exactly once, at the lowest fee",
    needs=needs,
)
def l2_batch_posting(
    settings: Settings,
    chain: str | None = None,
    max_batch_ops: Annotated[int, Field(ge=1)] | None = None,
    limit: Annotated[int, Field(ge=1)] = 10_000,
    wait_seconds: float = 120.0,
    stuck_after_seconds: float = 30.0,
    bump_percent: Annotated[
        int, Field(ge=10, description="nodes demand at least 10% for a replacement")
    ] = 12,
    dry_run: bool = False,
    as_of: datetime | None = None,
) -> L2PostingReport:
    """Post pending outbox operations of every configured chain (or only `chain`), exactly once.

    Args:
        chain: post only this chain (default: every configured chain).
        max_batch_ops: at most this many operations per batch (default: the chain's MAX_BATCH_OPS).
        limit: at most this many operations per chain and run.
        wait_seconds: how long to wait for confirmations before leaving batches to the next run.
        stuck_after_seconds: replace a transaction unseen for this long at the same nonce.
        bump_percent: fee increase of a replacement (nodes demand at least 10%).
        dry_run: report what is pending, post nothing.
        as_of: the run's clock (default now).
    """
    options = PostOptions(
        limit=limit,
        max_batch_ops=max_batch_ops,
        wait_seconds=wait_seconds,
        stuck_after_seconds=stuck_after_seconds,
        bump_percent=bump_percent,
        dry_run=dry_run,
    )
    report = L2PostingReport(as_of=as_of or utcnow())
    futures = {
        name: post_chain_task.submit(settings, name, options) for name in select_chains(settings, chain)
    }
    for name, future in futures.items():
        try:
            report.record_chain(name, future.result())
        except Exception as exc:  # one chain failing must not hide what the others did
            why = unreachable(exc, settings) or f"posting failed: {type(exc).__name__}: {exc}"
            report.step_failed(REDACTOR.text(f"{name}: {why}"))
            report.chains[name] = ChainReport(chain=name, kind=settings.chains[name].kind)
    return report
