"""The l2-batch-posting report: its model, its outcome and its markdown artifact."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from scaleops.core.redaction import REDACTOR
from scaleops.core.reporting import DutyReport
from scaleops.core.settings import Settings
from tasks.l2.evm_poster import ChainReport


class L2PostingReport(DutyReport):
    chains: dict[str, ChainReport] = Field(default_factory=dict)

    def outcome(self) -> str:
        if any(c.fee_capped for c in self.chains.values()):
            return "fee-cap"
        return "posted" if self.ok else "failed"

    def resource_id(self, settings: Settings) -> str:
        return "scaleops.l2-batch-posting"

    def resource_labels(self) -> dict[str, str]:
        return {"scaleops.chains": ",".join(self.chains)}

    def markdown(self, settings: Settings) -> str:
        return render_markdown(self)

    def table(self) -> list[dict[str, Any]]:
        return [c.model_dump(exclude={"batch_hashes", "problems"}) for c in self.chains.values()]

    def nothing_to_report(self) -> bool:
        """The every-5-minutes run found no operation pending and did nothing on any chain."""
        quiet = ("ops_posted", "batches", "txs", "failed", "pending", "fee_capped", "reorged", "bumped")
        return self.ok and not any(getattr(c, f) for c in self.chains.values() for f in quiet)

    def record_chain(self, name: str, result: ChainReport) -> None:
        self.chains[name] = result
        for problem in result.problems:
            self.problem(REDACTOR.text(problem))


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
