"""The lifecycle every resource shares, as plain functions: classify each found item, mark what newly
matches, unmark what is back in use, and act on what is due, inside the run's and the policy's caps,
re-checking each item right before the action.

States of a finding: `would-mark` (dry run), `marked` (mark set or still in its grace), `due` (grace
over, not acted: a dry run, or past the action cap), `acted`, `protected`, `back-in-use` (was marked,
no longer matches: unmarked), `changed` (changed or vanished between the filter and the action).
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

from pydantic import BaseModel

from tasks.cost.policy import Policy
from tasks.cost.resources import Changed, Item, Resource, mark_value, matches, parse_mark

State = Literal["would-mark", "marked", "due", "acted", "protected", "back-in-use", "changed", "error"]


class Finding(BaseModel):
    policy: str
    id: str
    where: str  # region, or cluster/namespace
    what: str = ""
    age_days: float | None = None
    monthly_usd: float = 0.0
    state: State
    due: str | None = None  # the mark's date
    detail: str = ""


class PolicyStats(BaseModel):
    name: str
    resource: str
    action: str
    found: int = 0
    marked: int = 0
    unmarked: int = 0
    acted: int = 0
    due: int = 0
    skipped_protected: int = 0
    skipped_changed: int = 0
    errors: int = 0


@dataclass
class AuditRow:
    policy: str
    resource: str  # the policy's resource kind
    resource_id: str
    scope: str  # region or cluster/namespace
    what: str
    action: str  # mark, unmark, <the policy's action>, skip-protected, skip-changed, error
    detail: str = ""


@dataclass
class PolicyResult:
    """One policy in one scope: its findings, counts and audit rows."""

    stats: PolicyStats
    findings: list[Finding] = field(default_factory=list)
    audit: list[AuditRow] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    capped: int = 0  # due items left alone because a cap was reached


def is_protected(item: Item, protected_namespaces: Collection[str], resource: str) -> bool:
    if item.protected:
        return True
    namespace = item.id if resource == "k8s.namespace" else item.namespace
    return namespace is not None and namespace in protected_namespaces


def classify(
    policy: Policy, item: Item, as_of: datetime, protected_namespaces: Collection[str], markable: bool = True
) -> State | None:
    """What the lifecycle does with one item now (None: not a finding of this policy)."""
    mark = parse_mark(item.mark)
    own = mark if mark and mark[0] == policy.action else None
    if not matches(policy, item, as_of):
        return "back-in-use" if own else None
    if is_protected(item, protected_namespaces, policy.resource):
        return "protected"
    if not markable:
        return "due"
    if own is None:
        return "would-mark"
    return "due" if own[1] <= as_of.date() else "marked"


def age_days(item: Item, as_of: datetime) -> float | None:
    since = item.state_since or item.created
    return None if since is None else round((as_of - since).total_seconds() / 86400, 1)


def run_policy(
    resource: Resource,
    policy: Policy,
    as_of: datetime,
    *,
    dry_run: bool,
    remaining: int,
    protected_namespaces: Collection[str] = (),
    record: Callable[[list[AuditRow]], None] | None = None,
) -> PolicyResult:
    """Find, classify, mark, unmark and act for one policy in one scope; act at most `remaining` times
    (the smaller of what is left of the run's and the policy's caps).

    `record` writes audit rows as they happen: after the marks, after the unmarks, and after each
    action (so a crash loses at most the row of the action in flight); if it fails, acting stops."""
    stats = PolicyStats(name=policy.name, resource=policy.resource, action=policy.action)
    result = PolicyResult(stats)
    markable = type(resource).markable
    by_state: dict[str, list[tuple[Item, Finding]]] = {}
    metric_filters = [f for f in policy.filters if f.kind == "metric_below"]
    found = resource.find()
    if metric_filters and found:
        resource.load_metrics(found, metric_filters, as_of)
    for item in found:
        state = classify(policy, item, as_of, protected_namespaces, markable)
        if state is None:
            continue
        mark = parse_mark(item.mark)
        finding = Finding(
            policy=policy.name,
            id=item.id,
            where=item.where,
            what=item.what,
            age_days=age_days(item, as_of),
            monthly_usd=round(item.monthly_usd, 2),
            state=state,
            due=mark[1].isoformat() if mark and mark[0] == policy.action else None,
        )
        by_state.setdefault(state, []).append((item, finding))
        result.findings.append(finding)
        if state != "back-in-use":
            stats.found += 1

    def audit(item: Item, action: str, detail: str = "") -> None:
        result.audit.append(
            AuditRow(policy.name, policy.resource, item.id, item.where, item.what, action, detail)
        )

    written = 0

    def flush() -> None:
        nonlocal written
        if record is not None and len(result.audit) > written:
            record(result.audit[written:])
            written = len(result.audit)

    for item, _finding in by_state.get("protected", []):
        stats.skipped_protected += 1
        if not dry_run:
            audit(item, "skip-protected")

    new = by_state.get("would-mark", [])
    if new and not dry_run:
        due = (as_of + policy.grace).date()
        gone = resource.mark([i for i, _ in new], mark_value(policy.action, due))
        for item, finding in new:
            if item.id in gone:
                finding.state, finding.detail = "changed", "changed or vanished before it could be marked"
                stats.skipped_changed += 1
                audit(item, "skip-changed", finding.detail)
                continue
            finding.state, finding.due = "marked", due.isoformat()
            audit(item, "mark", mark_value(policy.action, due))
    stats.marked = sum(1 for _, f in new if f.state in ("marked", "would-mark")) + len(
        by_state.get("marked", [])
    )
    flush()

    back = by_state.get("back-in-use", [])
    if back and not dry_run:
        gone = resource.unmark([i for i, _ in back])
        for item, finding in back:
            if item.id in gone:
                finding.state, finding.detail = "changed", "changed or vanished before it could be unmarked"
                stats.skipped_changed += 1
                audit(item, "skip-changed", finding.detail)
            else:
                audit(item, "unmark", "no longer matches the policy")
    stats.unmarked = sum(1 for _, f in back if f.state == "back-in-use")
    flush()

    due_items = by_state.get("due", [])
    if dry_run or not due_items:
        stats.due = len(due_items)
        return result
    allowed, result.capped = due_items[: max(remaining, 0)], max(len(due_items) - max(remaining, 0), 0)
    stats.due = result.capped
    current = resource.refresh([i for i, _ in allowed]) if allowed else {}
    if metric_filters and current:
        resource.load_metrics(list(current.values()), metric_filters, as_of)
    for item, finding in allowed:
        now = current.get(item.id)
        if now is None or classify(policy, now, as_of, protected_namespaces, markable) != "due":
            finding.state, finding.detail = "changed", "vanished" if now is None else "no longer due"
            stats.skipped_changed += 1
            audit(item, "skip-changed", finding.detail)
            flush()
            continue
        try:
            finding.detail = resource.act(now, policy)
        except Changed as exc:
            finding.state, finding.detail = "changed", str(exc)
            stats.skipped_changed += 1
            audit(item, "skip-changed", str(exc))
        except Exception as exc:  # one resource failing never stops the others
            finding.state, finding.detail = "error", f"{type(exc).__name__}: {exc}"
            stats.errors += 1
            result.errors.append(f"{policy.name}: {item.id} ({item.where}): {finding.detail}")
            audit(item, "error", finding.detail)
        else:
            finding.state = "acted"
            stats.acted += 1
            audit(item, policy.action, finding.detail)
        flush()
    return result
