"""Duty `l2-batch-posting`: drain the PostgreSQL outbox into per-chain batches and post each exactly once.

For every configured EVM chain (or only `chain`): take the posting lock for (chain, signer), reconcile
what a previous run left (rebroadcast signed-but-unseen transactions, pick up receipts, re-post reorged
batches), pack pending operations into batches under MAX_BATCH_OPS / MAX_BATCH_BYTES, quote the fee
(EIP-1559 + the stack's L1 data fee) and refuse a batch above MAX_FEE_PER_BATCH (`scaleops.l2.fee-cap`),
sign with the raw transaction written ahead, broadcast, replace stuck transactions at the same nonce,
and wait for CONFIRMATIONS blocks with a block-hash re-check. The protocol lives in tasks/l2_posting.py.
"""

from __future__ import annotations

from datetime import datetime
from urllib.parse import urlsplit

from scaleops.core.duties import duty_flow
from scaleops.core.redaction import protect
from scaleops.core.reporting import publish_report, utcnow
from scaleops.core.settings import load_settings
from tasks.l2.chains import post_chain_task, select_chains
from tasks.l2.evm_poster import ChainReport, PostOptions
from tasks.l2.report import L2PostingReport, outcome, render_markdown


@duty_flow("l2-batch-posting", "l2")
def l2_batch_posting(
    chain: str | None = None,
    max_batch_ops: int | None = None,
    limit: int = 10_000,
    wait_seconds: float = 120.0,
    stuck_after_seconds: float = 30.0,
    bump_percent: int = 12,
    dry_run: bool = False,
    as_of: datetime | None = None,
) -> L2PostingReport:
    """Post pending outbox operations of every configured chain (or only `chain`), exactly once."""
    settings = load_settings()
    redactor = protect(settings.secrets())
    for cfg in settings.chains.values():  # a key also shows up without its 0x prefix
        if cfg.signer_key is not None:
            redactor.add(cfg.signer_key.get_secret_value().removeprefix("0x"))
        split = urlsplit(cfg.rpc_url)
        if split.path.strip("/") or split.query:  # provider URLs carry API keys in the path or query
            redactor.add(cfg.rpc_url, split.path.strip("/"), split.query)
    if max_batch_ops is not None and max_batch_ops < 1:
        raise ValueError("max_batch_ops: must be at least 1")
    if limit < 1:
        raise ValueError("limit: must be at least 1")
    if bump_percent < 10:
        raise ValueError("bump_percent: must be at least 10 (what nodes demand of a replacement)")
    names = select_chains(settings, chain)
    options = PostOptions(
        limit=limit,
        max_batch_ops=max_batch_ops,
        wait_seconds=wait_seconds,
        stuck_after_seconds=stuck_after_seconds,
        bump_percent=bump_percent,
        dry_run=dry_run,
    )
    report = L2PostingReport(as_of=as_of or utcnow())
    futures = {}
    for name in names:
        futures[name] = post_chain_task.submit(settings, name, options)
    for name, future in futures.items():
        try:
            result: ChainReport = future.result()
        except Exception as exc:  # one chain failing must not hide what the others did
            report.problem(redactor.text(f"{name}: posting failed: {type(exc).__name__}: {exc}"))
            report.chains[name] = ChainReport(chain=name, kind=settings.chains[name].kind)
            continue
        report.chains[name] = result
        for problem in result.problems:
            report.problem(redactor.text(problem))
    report.finish()
    publish_report(
        report,
        namespace="l2",
        outcome=outcome(report),
        resource_id="scaleops.l2-batch-posting",
        markdown=render_markdown(report),
        table=[c.model_dump(exclude={"batch_hashes", "problems"}) for c in report.chains.values()],
        redactor=redactor,
        resource_labels={"scaleops.chains": ",".join(names)},
    )
    return report
