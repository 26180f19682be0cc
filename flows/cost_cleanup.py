"""Duty `cost-cleanup`: find unused AWS and Kubernetes resources by policy, mark them, wait out a
grace period, and only then remove them, with protections, a cap, an audit log and savings.

Steps: read and validate the policy file (before any API call), pass the AWS account guard, then for
each policy in each region or cluster: find -> filter -> mark (`scaleops/cleanup: <action>@<date>`)
-> after the grace, re-check and act; unmark what is back in use. Dry run by default. `as_of` is the
clock every age and grace is measured against.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from scaleops.core.duties import duty
from scaleops.core.reporting import as_datetime
from scaleops.core.settings import Settings
from tasks.cost.prices import load_prices
from tasks.cost.report import CostReport
from tasks.cost.steps import aws_scopes, kube_scopes, prepare_audit, read_policies, run_all


def needs(settings: Settings) -> list[str]:
    if settings.cost.policies is None:
        return ["no policy file (SCALEOPS_COST__POLICIES; the project ships deployments/cost-policies.yml)"]
    return []


def _run_id() -> str | None:
    from prefect.runtime import flow_run

    return str(flow_run.id) if flow_run.id else None


@duty(
    "cost-cleanup",
    namespace="cost",
    report=CostReport,
    summary="find unused AWS and Kubernetes resources by policy, mark them, and remove them after a grace "
    "period (dry run by default; protections, a cap, an audit log, savings)",
    needs=needs,
)
def cost_cleanup(
    settings: Settings,
    as_of: datetime | date | None = None,
    dry_run: bool = True,
    policies: list[str] | None = None,
    max_actions: int | None = None,
) -> CostReport:
    """Run the policies (all, or only `policies`) as of `as_of` (default now).

    Args:
        as_of: the clock every age and grace is measured against (default now); a backfill over past
            dates reports what the policies would have found then.
        dry_run: report what would be marked and what is due, and change nothing (the default).
        policies: run only these policies of the policy file (default: all of them).
        max_actions: at most this many actions in the run (default SCALEOPS_COST__MAX_ACTIONS).
    """
    clock = as_datetime(as_of)
    chosen = read_policies(settings, policies)
    prices = load_prices(settings.cost.prices)
    cap = settings.cost.max_actions if max_actions is None else max(max_actions, 0)
    report = CostReport(
        as_of=clock, dry_run=dry_run, max_actions=cap, prices={"date": prices.date, "source": prices.source}
    )
    scopes: dict[str, list[Any]] = {
        "aws": aws_scopes(settings, chosen, report),
        "k8s": kube_scopes(settings, chosen, report),
    }
    if not dry_run:
        prepare_audit(settings)
    run_all(settings, chosen, scopes, clock, dry_run, cap, report, _run_id())
    report.close()
    return report
