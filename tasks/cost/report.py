"""The cost-cleanup report: per-policy counts, every finding with its state and monthly cost, the
savings, and the table a person reads before approving the sweep."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from scaleops.core.reporting import DutyReport
from scaleops.core.settings import Settings
from tasks.cost.lifecycle import Finding, PolicyResult, PolicyStats

MAX_ROWS_IN_MARKDOWN = 200
PENDING = ("would-mark", "marked", "due")


class Savings(BaseModel):
    found: float = 0.0  # every matching, unprotected finding
    marked: float = 0.0  # marked (or would be) and waiting out the grace, or due
    acted: float = 0.0  # removed by this run


class CostReport(DutyReport):
    dry_run: bool = True
    policies: list[PolicyStats] = Field(default_factory=list)
    findings: list[Finding] = Field(default_factory=list)
    monthly_savings_usd: Savings = Field(default_factory=Savings)
    stopped_by_max_actions: bool = False
    max_actions: int = 0
    accounts: dict[str, list[str]] = Field(default_factory=dict, description="AWS account -> aliases")
    prices: dict[str, str] = Field(default_factory=dict, description="date and source of the price table")

    def stats(self, name: str, resource: str, action: str) -> PolicyStats:
        for s in self.policies:
            if s.name == name:
                return s
        self.policies.append(PolicyStats(name=name, resource=resource, action=action))
        return self.policies[-1]

    def add(self, result: PolicyResult) -> None:
        """Fold one policy's result in one scope into the report."""
        total = self.stats(result.stats.name, result.stats.resource, result.stats.action)
        for field in ("found", "marked", "unmarked", "acted", "due", "skipped_protected", "skipped_changed"):
            setattr(total, field, getattr(total, field) + getattr(result.stats, field))
        total.errors += result.stats.errors
        self.findings += result.findings
        for message in result.errors:
            self.problem(message)
        if result.capped:
            self.stopped_by_max_actions = True

    @property
    def acted(self) -> int:
        return sum(s.acted for s in self.policies)

    def acted_by(self, policy: str) -> int:
        return sum(s.acted for s in self.policies if s.name == policy)

    def close(self) -> None:
        """Sum the savings; a run stopped by the cap says so (an error: exit 1)."""
        found = [f for f in self.findings if f.state not in ("protected", "back-in-use")]
        self.monthly_savings_usd = Savings(
            found=round(sum(f.monthly_usd for f in found), 2),
            marked=round(sum(f.monthly_usd for f in found if f.state in PENDING), 2),
            acted=round(sum(f.monthly_usd for f in found if f.state == "acted"), 2),
        )
        if self.stopped_by_max_actions:
            left = sum(1 for f in self.findings if f.state == "due")
            self.problem(
                f"stopped at max_actions={self.max_actions}: {left} due action(s) left for the next run "
                "(raise SCALEOPS_COST__MAX_ACTIONS or the policy's max_actions if this is expected)"
            )

    def outcome(self) -> str:
        if not self.ok:
            return "problems"
        if any(f.state in PENDING for f in self.findings):
            return "marked"
        return "cleaned"

    def resource_id(self, settings: Settings) -> str:
        return "scaleops.cost." + (settings.cost.policies.stem if settings.cost.policies else "policies")

    def markdown(self, settings: Settings) -> str:
        return render_markdown(self)

    def table(self) -> list[dict[str, Any]]:
        return [
            {
                "policy": f.policy,
                "id": f.id,
                "where": f.where,
                "what": f.what,
                "age_days": f.age_days,
                "monthly_usd": f.monthly_usd,  # USD a month
                "state": f"{f.state} (due {f.due})" if f.due else f.state,
                "detail": f.detail,
            }
            for f in self.findings[:1000]
        ]


def render_markdown(report: CostReport) -> str:
    mode = "DRY RUN: nothing was changed" if report.dry_run else "applied"
    status = "ok" if report.ok else "PROBLEMS FOUND"
    s = report.monthly_savings_usd
    lines = [
        f"# Cost cleanup: {status} ({mode})",
        "",
        f"as of `{report.as_of.isoformat()}` · monthly USD found **{s.found:.2f}**, marked or due "
        f"**{s.marked:.2f}**, removed **{s.acted:.2f}** · max actions {report.max_actions}"
        + (" (**reached**)" if report.stopped_by_max_actions else ""),
    ]
    if report.prices:
        lines.append(f"prices of {report.prices.get('date', '?')}: {report.prices.get('source', '')}")
    if report.problems or report.warnings:
        lines += ["", "## What is wrong", ""]
        lines += [f"- error: {p}" for p in report.problems] + [f"- warning: {w}" for w in report.warnings]
    lines += [
        "",
        "## Policies",
        "",
        "| policy | resource | action | found | marked | due | acted | errors |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for p in report.policies:
        lines.append(
            f"| {p.name} | {p.resource} | {p.action} | {p.found} | {p.marked} | {p.due} | {p.acted} "
            f"| {p.errors} |"
        )
    lines += [
        "",
        "| policy | unmarked (back in use) | skipped: protected | skipped: changed since listed |",
        "|---|---|---|---|",
    ]
    for p in report.policies:
        lines.append(f"| {p.name} | {p.unmarked} | {p.skipped_protected} | {p.skipped_changed} |")
    if report.findings:
        lines += [
            "",
            "## Findings (read before approving the sweep)",
            "",
            "| policy | id | where | what | age (days) | USD/month | state | due |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for f in report.findings[:MAX_ROWS_IN_MARKDOWN]:
            age = "" if f.age_days is None else f"{f.age_days:g}"
            lines.append(
                f"| {f.policy} | `{f.id}` | {f.where} | {f.what} | {age} | {f.monthly_usd:.2f} | {f.state} | "
                f"{f.due or ''} |"
            )
        if len(report.findings) > MAX_ROWS_IN_MARKDOWN:
            lines.append(
                f"| ... {len(report.findings) - MAX_ROWS_IN_MARKDOWN} more (see the table artifact) |"
            )
    return "\n".join(lines)
