"""The account guard (aws-nuke's), prices, the report's sums, outcome and cap, and the command that
checks a policy file alone."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from scaleops.cli.app import app
from scaleops.core.settings import Settings
from tasks.cost.guards import refusal
from tasks.cost.lifecycle import Finding, PolicyResult, PolicyStats
from tasks.cost.prices import load_prices
from tasks.cost.report import CostReport

ROOT = Path(__file__).resolve().parents[3]
ACCOUNT = "123456789012"


def test_unlisted_accounts_are_refused() -> None:
    assert "not in SCALEOPS_COST__ALLOWED_ACCOUNTS" in (refusal(ACCOUNT, [], [], ["prod"]) or "")
    assert refusal(ACCOUNT, ["acme-dev"], [ACCOUNT], ["prod"]) is None


def test_a_blocked_alias_needs_its_own_allowance() -> None:
    why = refusal(ACCOUNT, ["acme-Production"], [ACCOUNT], ["prod"])
    assert why and "blocked term 'prod'" in why and "acme-Production" in why
    assert refusal(ACCOUNT, ["acme-Production"], [ACCOUNT], ["prod"], ["acme-Production"]) is None
    assert refusal(ACCOUNT, ["acme-prod"], [ACCOUNT], []) is None


def test_prices_fall_back_to_the_default_region_and_never_invent() -> None:
    prices = load_prices()
    assert prices.date and "AWS" in prices.source
    assert prices.aws("us-east-1", "ebs:gp3") == 0.08
    assert prices.aws("mars-north-1", "ebs:gp3") == prices.aws(prices.default_region, "ebs:gp3")
    assert prices.aws("us-east-1", "ebs:unknown-type") == 0.0


def result(name: str, *states: str, usd: float = 10.0, capped: int = 0) -> PolicyResult:
    findings = [
        Finding(policy=name, id=f"{name}-{i}", where="r", state=s, monthly_usd=usd)  # type: ignore[arg-type]
        for i, s in enumerate(states)
    ]
    stats = PolicyStats(name=name, resource="aws.ebs-volume", action="delete", acted=states.count("acted"))
    return PolicyResult(stats, findings, capped=capped)


def test_savings_outcome_and_the_cap() -> None:
    report = CostReport(dry_run=False, max_actions=2)
    report.add(result("a", "acted", "acted", "due", "protected", "back-in-use"))
    report.add(result("a", "marked"))  # the same policy in a second region folds into one row
    report.close()
    assert [p.name for p in report.policies] == ["a"] and report.acted == 2
    assert report.monthly_savings_usd.model_dump() == {"found": 40.0, "marked": 20.0, "acted": 20.0}
    assert report.ok and report.outcome() == "marked"
    capped = CostReport(dry_run=False, max_actions=2)
    capped.add(result("a", "acted", "acted", "due", capped=1))
    capped.close()
    assert capped.stopped_by_max_actions and not capped.ok and capped.outcome() == "problems"
    assert "max_actions=2: 1 due action(s) left" in capped.problems[0]
    done = CostReport()
    done.add(result("a", "acted"))
    done.close()
    assert done.outcome() == "cleaned"
    assert "Cost cleanup: ok" in done.markdown(Settings())
    assert done.table()[0]["state"] == "acted"


def test_cost_policies_validate(tmp_path: Path) -> None:
    runner = CliRunner()
    ok = runner.invoke(
        app, ["cost", "policies", "--validate", str(ROOT / "deployments/cost-policies.yml"), "--json"]
    )
    assert ok.exit_code == 0, ok.output
    assert "ebs-unattached" in ok.stdout
    bad = tmp_path / "bad.yml"
    bad.write_text(
        "policies:\n  - name: x\n    resource: aws.ebs-volume\n    action: delete\n    grace: soon\n"
    )
    refused = runner.invoke(app, ["cost", "policies", "--validate", str(bad)])
    assert refused.exit_code == 2
    assert "policy 'x', field grace" in refused.output
    listing = runner.invoke(app, ["cost", "policies", "--json"])
    assert listing.exit_code == 0 and "k8s.namespace" in listing.stdout


@pytest.mark.parametrize("name", ["cost-cleanup"])
def test_the_duty_is_registered_with_its_needs(name: str) -> None:
    from scaleops.core.duties import get_duty

    duty = get_duty(name)
    assert duty.namespace == "cost"
    assert duty.missing(Settings()) and "SCALEOPS_COST__POLICIES" in duty.missing(Settings())[0]
    flow = duty.load()
    assert flow.parameters.properties["dry_run"]["default"] is True
