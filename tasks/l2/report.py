"""The l2-batch-posting report: its model, its outcome and its markdown artifact."""

from __future__ import annotations

from pydantic import Field

from scaleops.core.reporting import DutyReport
from tasks.l2.evm_poster import ChainReport


class L2PostingReport(DutyReport):
    duty: str = "l2-batch-posting"
    chains: dict[str, ChainReport] = Field(default_factory=dict)


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
