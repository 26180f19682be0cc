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

from pydantic import Field

from scaleops.duties import duty_flow
from scaleops.redaction import protect
from scaleops.reporting import DutyReport, publish_report, utcnow
from scaleops.retry import io_task
from scaleops.settings import Settings, load_settings
from tasks.l2_posting import ChainReport, PostOptions, post_chain
from tasks.solana_posting import post_solana_chain


class L2PostingReport(DutyReport):
    duty: str = "l2-batch-posting"
    chains: dict[str, ChainReport] = Field(default_factory=dict)


@io_task(task_run_name="l2-post-{chain}")
def post_chain_task(settings: Settings, chain: str, options: PostOptions) -> ChainReport:
    from prefect import get_run_logger

    if settings.chains[chain].kind == "solana":
        return post_solana_chain(settings, chain, options, get_run_logger())
    return post_chain(settings, chain, options, get_run_logger())


def select_chains(settings: Settings, chain: str | None) -> list[str]:
    if chain is not None:
        name = chain.lower()
        if name not in settings.chains:
            known = ", ".join(sorted(settings.chains)) or "none (set SCALEOPS_CHAINS__<NAME>__...)"
            raise ValueError(f"chain: unknown chain {chain!r}; configured: {known}")
        return [name]
    return sorted(settings.chains)


def render_markdown(report: L2PostingReport) -> str:
    lines = [
        f"# L2 batch posting: {'OK' if report.ok else 'PROBLEMS FOUND'}",
        "",
        f"as of `{report.as_of.isoformat()}`",
        "",
        "| chain | kind | ops posted | batches | txs | gas used | L2 fee (wei) | L1 fee (wei) | fee/op "
        "| bumped | reorged | failed | fee-capped | pending | lamports | max tx bytes |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, c in report.chains.items():
        lines.append(
            f"| {name} | {c.kind} | {c.ops_posted} | {c.batches} | {c.txs} | {c.gas_used} | {c.l2_fee_wei} "
            f"| {c.l1_fee_wei} | {c.fee_per_op} | {c.bumped} | {c.reorged} | {c.failed} | {c.fee_capped} "
            f"| {c.pending} | {c.lamports if c.lamports is not None else '-'} "
            f"| {c.max_tx_bytes if c.max_tx_bytes is not None else '-'} |"
        )
    if report.problems:
        lines += ["", "## Problems", *[f"- {p}" for p in report.problems]]
    return "\n".join(lines)


def outcome(report: L2PostingReport) -> str:
    if any(c.fee_capped for c in report.chains.values()):
        return "fee-cap"
    return "posted" if report.ok else "failed"


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
