"""The arweave-archival report: its model, and its markdown and table artifacts."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from scaleops.core.reporting import DutyReport
from scaleops.core.settings import Settings

WINSTON_PER_AR = 10**12
MAX_ROWS_IN_MARKDOWN = 25


class BundleRecord(BaseModel):
    tx_id: str
    items: int
    bytes: int
    winston: int
    mode: str
    chunks: int = Field(default=0, description="chunks uploaded by POST /chunk (0: the data went inline)")


class Finding(BaseModel):
    key: str
    sha256: str
    reason: str


class IpfsSummary(BaseModel):
    pinned: int = 0
    verified: int = 0
    missing: list[Finding] = Field(default_factory=list)


class ArchiveReport(DutyReport):
    dry_run: bool = False
    items_queued: int = Field(default=0, description="items waiting in the ledger at the start of archiving")
    items_signed: int = 0
    items_posted: int = 0
    items_confirmed: int = 0
    items_verified: int = 0
    deduplicated: int = Field(default=0, description="source keys whose bytes were already in the ledger")
    collected: dict[str, int] = Field(default_factory=dict, description="source -> new items")
    bundles: list[BundleRecord] = Field(default_factory=list)
    winston_paid: int = 0
    ar_paid: float = 0.0
    budget_capped: bool = False
    pending: list[Finding] = Field(default_factory=list, description="posted, not yet confirmed")
    reposted: list[Finding] = Field(default_factory=list, description="dropped by the gateway, re-queued")
    found_by_tag: list[Finding] = Field(
        default_factory=list,
        description="queued, but on the gateway already (GraphQL Content-SHA256, our wallet): not paid again",
    )
    corrupt: list[Finding] = Field(default_factory=list)
    missing: list[Finding] = Field(default_factory=list)
    repaired: list[Finding] = Field(default_factory=list)
    ipfs: IpfsSummary = Field(default_factory=IpfsSummary)
    cost_per_gib_ar: float | None = None

    def pay(self, bundle: BundleRecord) -> None:
        self.bundles.append(bundle)
        self.winston_paid += bundle.winston
        self.ar_paid = self.winston_paid / WINSTON_PER_AR
        size = sum(b.bytes for b in self.bundles)
        if size:
            self.cost_per_gib_ar = self.ar_paid * (1 << 30) / size

    def outcome(self) -> str:
        if self.budget_capped:
            return "budget-cap"
        return "archived" if self.ok else "problems"

    def resource_id(self, settings: Settings) -> str:
        gateway = (settings.archive.gateway_url or "unset").split("://", 1)[-1]
        return f"scaleops.archive.{gateway}"

    def markdown(self, settings: Settings) -> str:
        return render_markdown(self, settings)

    def table(self) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = []
        for label, findings in (
            ("corrupt", self.corrupt),
            ("missing", self.missing),
            ("ipfs_missing", self.ipfs.missing),
            ("pending", self.pending),
            ("reposted", self.reposted),
            ("found_by_tag", self.found_by_tag),
            ("repaired", self.repaired),
        ):
            rows += [
                {"finding": label, "key": f.key, "sha256": f.sha256, "reason": f.reason} for f in findings
            ]
        return rows[:500]


def render_markdown(report: ArchiveReport, settings: Settings) -> str:
    status = "everything archived is safe" if report.ok else "PROBLEMS FOUND"
    if report.budget_capped:
        status = "stopped at the budget cap"
    lines = [f"# Arweave archival: {status}", ""]
    lines.append(
        f"as of `{report.as_of.isoformat()}` · gateway `{settings.archive.gateway_url}` · mode "
        f"`{settings.archive.mode}`{' · dry run: nothing signed or posted' if report.dry_run else ''}"
    )
    lines += [
        "",
        f"queued {report.items_queued} · signed {report.items_signed} · posted {report.items_posted} · "
        f"confirmed {report.items_confirmed} · verified {report.items_verified} · deduplicated "
        f"{report.deduplicated} · paid {report.winston_paid} winston ({report.ar_paid:.6f} AR) in "
        f"{len(report.bundles)} bundle(s)"
        + (f" · found already archived by tag {len(report.found_by_tag)}" if report.found_by_tag else ""),
        f"IPFS: pinned {report.ipfs.pinned}, verified {report.ipfs.verified}, "
        f"missing {len(report.ipfs.missing)}",
    ]
    if report.problems:
        lines += ["", "## What is wrong", "", *[f"- {p}" for p in report.problems]]
    not_safe = [
        ("corrupt (bytes or signature differ: re-archive with repair=true)", report.corrupt),
        ("missing on Arweave (the gateway serves nothing)", report.missing),
        ("missing on IPFS (not pinned or garbage-collected)", report.ipfs.missing),
        ("pending (posted, waiting for confirmations: the next run checks again)", report.pending),
        ("re-posted (the gateway dropped the transaction)", report.reposted),
    ]
    if any(found for _, found in not_safe):
        lines += ["", "## Not yet safe, and why", ""]
        for label, found in not_safe:
            if not found:
                continue
            lines += [f"### {label}", "", "| key | sha256 | reason |", "|---|---|---|"]
            for f in found[:MAX_ROWS_IN_MARKDOWN]:
                lines.append(f"| `{f.key}` | `{f.sha256[:16]}…` | {f.reason} |")
            if len(found) > MAX_ROWS_IN_MARKDOWN:
                lines.append(f"| ... {len(found) - MAX_ROWS_IN_MARKDOWN} more (see the JSON report) | | |")
            lines.append("")
    if report.bundles:
        lines += [
            "",
            "## Bundles posted",
            "",
            "| tx | items | size (MiB) | price (winston) | price (AR) | mode |",
            "|---|---|---|---|---|---|",
        ]
        for b in report.bundles[:MAX_ROWS_IN_MARKDOWN]:
            lines.append(
                f"| `{b.tx_id}` | {b.items} | {b.bytes / 1024**2:.2f} | {b.winston:,} "
                f"| {b.winston / WINSTON_PER_AR:.6f} | {b.mode} |"
            )
    if report.repaired:
        lines += ["", "## Repaired", "", *[f"- `{f.key}`: {f.reason}" for f in report.repaired]]
    return "\n".join(lines)
