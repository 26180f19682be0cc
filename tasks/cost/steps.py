"""The duty's steps: load the policies, decide which AWS regions and Kubernetes clusters may be
touched, run the policies of each scope (one task per region or cluster, batched inside), and write
the audit rows. Thin tasks over the plain functions of the other modules."""

from __future__ import annotations

from collections.abc import Collection
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from scaleops.core.clients import cost_aws_options
from scaleops.core.retry import call_with_retry, io_task
from scaleops.core.settings import Settings
from tasks.cost.aws import AwsResource, AwsScope, Listings
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


def make_resource(
    policy: Policy,
    scope: AwsScope | KubeScope,
    prices: PriceTable,
    kube_client: Any = None,
    listings: Listings | None = None,
) -> Any:
    kind = RESOURCES[policy.resource]
    if issubclass(kind, AwsResource) and isinstance(scope, AwsScope):
        return kind(scope, prices, listings)
    if issubclass(kind, KubeResource) and isinstance(scope, KubeScope):
        return kind(scope, prices, kube_client)
    raise TypeError(f"{policy.resource} cannot run in scope {scope}")


DRY_RUN_WORKERS = 4  # policies of one scope evaluated at once in a dry run


@dataclass
class ScopeResult:
    """What one policy came to in one scope: its result, or the error that stopped it."""

    policy: Policy
    result: PolicyResult | None = None
    error: str | None = None


def dry_run_scope(
    policies: list[Policy],
    scope: AwsScope | KubeScope,
    as_of: datetime,
    prices: PriceTable,
    protected_namespaces: Collection[str] = (),
    kube_client: Any = None,
) -> list[ScopeResult]:
    """Every policy in one scope, changing nothing: the policies list side by side (their time is API
    calls) and share the scope's whole listings; a transient error retries that policy alone, any other
    fails that policy alone."""
    listings = Listings()

    def evaluate(policy: Policy) -> ScopeResult:
        resource = make_resource(policy, scope, prices, kube_client, listings)

        def once() -> PolicyResult:
            return run_policy(
                resource, policy, as_of, dry_run=True, remaining=0, protected_namespaces=protected_namespaces
            )

        try:
            return ScopeResult(policy, call_with_retry(once))
        except Exception as exc:  # one policy failing never hides the scope's others
            return ScopeResult(policy, error=f"{type(exc).__name__}: {exc}")

    with ThreadPoolExecutor(max_workers=max(1, min(DRY_RUN_WORKERS, len(policies)))) as pool:
        return list(pool.map(evaluate, policies))


@io_task(task_run_name="cost-{scope_name}", retries=0)  # transient errors are retried per policy inside
def apply_policies(
    settings: Settings,
    policies: list[Policy],
    scope: AwsScope | KubeScope,
    scope_name: str,
    as_of: datetime,
    dry_run: bool,
    max_actions: int,
    acted: dict[str, int],
    run_id: str | None = None,
) -> list[ScopeResult]:
    """Every policy in one region or cluster, in one task (a task per policy and scope cost Prefect
    ~50 ms each and bought nothing: the listing is batched inside each policy either way). Each policy
    finds, marks, unmarks and acts, at most its share of the caps (`acted`: actions so far in the run,
    by policy), each change's audit row written as it happens (a dry run changes and writes nothing).
    A transient error retries that policy alone (its actions already done count against the caps); any
    other error fails that policy alone, never the scope's others."""
    prices = load_prices(settings.cost.prices)
    kube_client = scope.api_client() if isinstance(scope, KubeScope) else None

    if dry_run:
        return dry_run_scope(policies, scope, as_of, prices, settings.cost.protected_namespaces, kube_client)
    from scaleops.core.clients import postgres_connect
    from tasks.cost.audit import write_rows

    results: list[ScopeResult] = []
    with postgres_connect(settings) as conn:
        for policy in policies:
            done: list[int] = [0]  # actions of this policy in this scope, across retries

            def record(rows: list[AuditRow], policy: Policy = policy, done: list[int] = done) -> None:
                write_rows(conn, rows, as_of, run_id)
                conn.commit()
                done[0] += sum(1 for r in rows if r.action == policy.action)

            def once(policy: Policy = policy, done: list[int] = done, record: Any = record) -> PolicyResult:
                cap = max_actions if policy.max_actions is None else min(policy.max_actions, max_actions)
                run_total = sum(acted.values()) + done[0]
                remaining = min(max_actions - run_total, cap - acted.get(policy.name, 0) - done[0])
                return run_policy(
                    make_resource(policy, scope, prices, kube_client),
                    policy,
                    as_of,
                    dry_run=False,
                    remaining=max(remaining, 0),
                    protected_namespaces=settings.cost.protected_namespaces,
                    record=record,
                )

            try:
                result = call_with_retry(once)
            except Exception as exc:  # one policy failing never hides the scope's others
                conn.rollback()
                results.append(ScopeResult(policy, error=f"{type(exc).__name__}: {exc}"))
                continue
            acted[policy.name] = acted.get(policy.name, 0) + max(done[0], result.stats.acted)
            results.append(ScopeResult(policy, result))
    return results


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
    """Each region and cluster in one task running its provider's policies, sharing the run's caps."""
    acted: dict[str, int] = {}
    for provider in dict.fromkeys(p.provider for p in policies):
        mine = [p for p in policies if p.provider == provider]
        for scope in scopes.get(provider, []):
            name = scope.region if isinstance(scope, AwsScope) else scope.name
            try:
                outcomes = apply_policies(
                    settings, mine, scope, name, as_of, dry_run, max_actions, dict(acted), run_id
                )
            except Exception as exc:  # one region or cluster failing never hides the others
                outcomes = [ScopeResult(p, error=f"{type(exc).__name__}: {exc}") for p in mine]
            for outcome in outcomes:
                policy = outcome.policy
                if outcome.result is None:
                    report.stats(policy.name, policy.resource, policy.action).errors += 1
                    report.problem(f"{policy.name} in {name}: {outcome.error}")
                    continue
                report.add(outcome.result)
                acted[policy.name] = acted.get(policy.name, 0) + outcome.result.stats.acted
