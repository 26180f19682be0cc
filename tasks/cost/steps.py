"""The duty's steps: load the policies, decide which AWS regions and Kubernetes clusters may be
touched, run each policy in each scope (one task per policy and scope, batched inside), and write
the audit rows. Thin tasks over the plain functions of the other modules."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

from scaleops.core.clients import cost_aws_options
from scaleops.core.retry import io_task
from scaleops.core.settings import Settings
from tasks.cost.aws import AwsResource, AwsScope
from tasks.cost.catalog import RESOURCES
from tasks.cost.guards import account_identity, refusal
from tasks.cost.kube import KubeResource, KubeScope
from tasks.cost.lifecycle import AuditRow, PolicyResult, run_policy
from tasks.cost.policy import Policy, load_policies
from tasks.cost.prices import PriceTable, load_prices

if TYPE_CHECKING:
    from tasks.cost.report import CostReport


def read_policies(settings: Settings, names: list[str] | None) -> list[Policy]:
    """The policy file, validated whole before any API call (PolicyError names policy and field)."""
    from tasks.cost.policy import PolicyError

    if settings.cost.policies is None:
        raise PolicyError(
            ["SCALEOPS_COST__POLICIES is not set (the project ships deployments/cost-policies.yml)"]
        )
    policies = load_policies(settings.cost.policies)
    if names:
        unknown = sorted(set(names) - {p.name for p in policies})
        if unknown:
            raise PolicyError(
                [f"unknown policy {', '.join(unknown)} (the file has {', '.join(p.name for p in policies)})"]
            )
        policies = [p for p in policies if p.name in names]
    return policies


def aws_scope(settings: Settings, region: str) -> AwsScope:
    return AwsScope(region, **cost_aws_options(settings))


@io_task(task_run_name="cost-aws-guard")
def aws_account_guard(settings: Settings) -> tuple[str, list[str], str | None]:
    """(account, aliases, why refused or None) of the AWS credentials the duty uses."""
    cost = settings.cost
    account, aliases = account_identity(aws_scope(settings, cost.regions[0]))
    why = refusal(account, aliases, cost.allowed_accounts, cost.blocked_alias_terms, cost.allowed_aliases)
    return account, aliases, why


def aws_scopes(settings: Settings, policies: list[Policy], report: CostReport) -> list[AwsScope]:
    """Every configured region, once the account passes the guard; none (and an error) otherwise."""
    if not any(p.provider == "aws" for p in policies):
        return []
    if not settings.cost.regions:
        report.problem("AWS policies are configured but SCALEOPS_COST__REGIONS is empty: no AWS policy ran")
        return []
    account, aliases, why = aws_account_guard(settings)
    report.accounts[account] = aliases
    if why:
        report.problem(why)
        return []
    return [aws_scope(settings, r) for r in settings.cost.regions]


def kube_scopes(settings: Settings, policies: list[Policy], report: CostReport) -> list[KubeScope]:
    if not any(p.provider == "k8s" for p in policies):
        return []
    kubeconfig = str(settings.cost.kubeconfig) if settings.cost.kubeconfig else None
    contexts: list[str | None] = list(settings.cost.contexts)
    if not contexts:  # the kubeconfig's current context, by its name (the report's cluster)
        from kubernetes import config

        try:
            _all, current = config.list_kube_config_contexts(config_file=kubeconfig)
        except Exception as exc:  # no kubeconfig at all: the Kubernetes policies cannot run
            report.problem(f"no usable kubeconfig ({type(exc).__name__}: {exc}): no Kubernetes policy ran")
            return []
        contexts = [current["name"]]
    return [KubeScope(kubeconfig, c) for c in contexts]


def make_resource(policy: Policy, scope: AwsScope | KubeScope, prices: PriceTable) -> Any:
    kind = RESOURCES[policy.resource]
    if issubclass(kind, AwsResource) and isinstance(scope, AwsScope):
        return kind(scope, prices)
    if issubclass(kind, KubeResource) and isinstance(scope, KubeScope):
        return kind(scope, prices)
    raise TypeError(f"{policy.resource} cannot run in scope {scope}")


@io_task(task_run_name="cost-{policy.name}-{scope_name}")
def apply_policy(
    settings: Settings,
    policy: Policy,
    scope: AwsScope | KubeScope,
    scope_name: str,
    as_of: datetime,
    dry_run: bool,
    remaining: int,
    run_id: str | None = None,
) -> PolicyResult:
    """One policy in one region or cluster: find, mark, unmark, act (at most `remaining` times),
    each change's audit row written as it happens (a dry run changes and writes nothing)."""
    prices = load_prices(settings.cost.prices)
    resource = make_resource(policy, scope, prices)
    options: dict[str, Any] = {
        "dry_run": dry_run,
        "remaining": remaining,
        "protected_namespaces": settings.cost.protected_namespaces,
    }
    if dry_run:
        return run_policy(resource, policy, as_of, **options)
    from scaleops.core.clients import postgres_connect
    from tasks.cost.audit import write_rows

    with postgres_connect(settings) as conn:

        def record(rows: list[AuditRow]) -> None:
            write_rows(conn, rows, as_of, run_id)
            conn.commit()

        return run_policy(resource, policy, as_of, record=record, **options)


def prepare_audit(settings: Settings) -> None:
    """Before a run changes anything: the audit table exists and PostgreSQL answers (or the run stops)."""
    from scaleops.core.clients import postgres_connect
    from tasks.cost.audit import ensure_schema

    with postgres_connect(settings) as conn:
        ensure_schema(conn)


def run_all(
    settings: Settings,
    policies: list[Policy],
    scopes: dict[str, list[Any]],
    as_of: datetime,
    dry_run: bool,
    max_actions: int,
    report: CostReport,
    run_id: str | None,
) -> None:
    """Each policy in each of its provider's scopes, sharing the run's action cap."""
    for policy in policies:
        for scope in scopes.get(policy.provider, []):
            cap = max_actions if policy.max_actions is None else min(policy.max_actions, max_actions)
            remaining = min(max_actions - report.acted, cap - report.acted_by(policy.name))
            name = scope.region if isinstance(scope, AwsScope) else scope.name
            try:
                result = apply_policy(
                    settings, policy, scope, name, as_of, dry_run, max(remaining, 0), run_id
                )
            except Exception as exc:  # one region or cluster failing never hides the others
                report.stats(policy.name, policy.resource, policy.action).errors += 1
                report.problem(f"{policy.name} in {name}: {type(exc).__name__}: {exc}")
                continue
            report.add(result)
