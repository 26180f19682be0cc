"""The base every cleanable resource declares itself with, like Cloud Custodian's resource managers:

    find -> filter -> mark (a tag or annotation `scaleops/cleanup: <action>@<due date>`) -> grace -> act

A resource class says which filters and actions it knows and whether it can carry a mark; it finds
every candidate of one scope (an AWS region, a Kubernetes cluster) in a few batched list calls and
turns each into an `Item` (the provider's id, ages, state, tags or labels, its "in use" verdict, its
monthly cost). The filters and the lifecycle are the same plain functions for all of them
(`matches` here, `tasks.cost.lifecycle`).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    from tasks.cost.policy import Filter, Policy

MARK_KEY = "scaleops/cleanup"  # tag (AWS) or annotation (Kubernetes): "<action>@<YYYY-MM-DD due>"
PROTECT_KEY = "scaleops/protect"  # tag or label "true": never touched
FilterSpec = str  # what a filter means for the resource (shown by `scaleops cost policies`)

# The filters a resource may declare (policy files name them; `label` is another name for `tag`).
AGE: dict[str, FilterSpec] = {"age": "created at least this long before as_of (a duration)"}
STATE: dict[str, FilterSpec] = {"state": "in this state (or one of a list)"}
STATE_AGE: dict[str, FilterSpec] = {"state_age": "in its current state for at least this long"}
TAG: dict[str, FilterSpec] = {"tag": "a tag (AWS) or label (Kubernetes) is present, absent, or has a value"}
UNATTACHED: dict[str, FilterSpec] = {"unattached": "attached or associated to nothing"}
UNREFERENCED: dict[str, FilterSpec] = {"unreferenced": "nothing uses or references it (see the resource)"}
EXPIRED: dict[str, FilterSpec] = {"expired": "its janitor/ttl or janitor/expires annotation has passed"}
METRIC: dict[str, FilterSpec] = {
    "metric_below": "a CloudWatch metric's daily statistic stayed below a threshold over N days"
}


class Changed(Exception):
    """The resource changed or vanished between the filter and the action: skipped, never an error."""


@dataclass
class Item:
    """One resource as found: everything the filters, the lifecycle and the report need."""

    id: str  # provider id: vol-..., eipalloc-..., i-...; Kubernetes: namespace/name or name
    where: str  # region, or cluster/namespace (cluster for cluster-scoped objects)
    created: datetime | None = None
    state: str | None = None
    state_since: datetime | None = None
    labels: dict[str, str] = field(default_factory=dict)  # AWS tags, Kubernetes labels
    annotations: dict[str, str] = field(default_factory=dict)  # AWS tags again, Kubernetes annotations
    attached: bool | None = None  # for `unattached`
    referenced: bool | None = None  # for `unreferenced`
    expires: datetime | None = None  # for `expired` (kube-janitor's janitor/ttl, janitor/expires)
    namespace: str | None = None
    monthly_usd: float = 0.0
    what: str = ""  # a short description for the audit log and the report: "gp3 100 GiB"
    version: str = ""  # Kubernetes resourceVersion: the action's precondition
    metrics: dict[str, float | None] = field(default_factory=dict)  # metric_key(filter) -> value

    @property
    def protected(self) -> bool:
        return self.labels.get(PROTECT_KEY, "").lower() == "true"

    @property
    def mark(self) -> str | None:
        return self.annotations.get(MARK_KEY)


def mark_value(action: str, due: date) -> str:
    return f"{action}@{due.isoformat()}"


def parse_mark(value: str | None) -> tuple[str, date] | None:
    """`delete@2026-12-09` -> ('delete', date); anything else (foreign or garbled) -> None."""
    if not value or "@" not in value:
        return None
    action, _, day = value.partition("@")
    try:
        return action, date.fromisoformat(day)
    except ValueError:
        return None


def check_filter(f: Filter, item: Item, as_of: datetime) -> bool:
    """Does one filter hold for the item at `as_of` (the run's clock: every age is measured to it)?"""
    if f.kind == "age":
        return item.created is not None and f.duration is not None and as_of - item.created >= f.duration
    if f.kind == "state_age":
        since = item.state_since
        return since is not None and f.duration is not None and as_of - since >= f.duration
    if f.kind == "state":
        return item.state is not None and item.state.lower() in {s.lower() for s in f.states}
    if f.kind == "tag":
        assert f.key is not None
        if f.absent:
            return f.key not in item.labels
        if f.value is not None:
            return item.labels.get(f.key) == f.value
        return f.key in item.labels
    if f.kind == "unattached":
        return item.attached is False
    if f.kind == "unreferenced":
        return item.referenced is False
    if f.kind == "metric_below":
        value = item.metrics.get(metric_key(f))
        if value is None:
            return f.missing == "match"
        return f.threshold is not None and value < f.threshold
    if f.kind == "expired":
        return item.expires is not None and item.expires <= as_of
    raise ValueError(f"unknown filter {f.kind!r}")


def metric_key(f: Filter) -> str:
    return f"{f.key}:{f.stat}:{f.duration}"


def matches(policy: Policy, item: Item, as_of: datetime) -> bool:
    return all(check_filter(f, item, as_of) for f in policy.filters)


class Resource:
    """One kind of cleanable resource in one scope (an AWS region or a Kubernetes cluster)."""

    name: ClassVar[str]  # the policy's `resource`: aws.ebs-volume, k8s.job, ...
    provider: ClassVar[str]  # aws | k8s
    actions: ClassVar[tuple[str, ...]]
    filters: ClassVar[dict[str, FilterSpec]]
    markable: ClassVar[bool] = True  # can carry a tag/annotation (S3 multipart uploads cannot)
    price_key: ClassVar[str] = ""

    scope: str

    def find(self) -> list[Item]:
        """Every candidate in this scope, in batched list calls."""
        raise NotImplementedError

    def refresh(self, items: Iterable[Item]) -> dict[str, Item]:
        """The current state of these items (those that still exist), right before acting."""
        wanted = {i.id for i in items}
        return {i.id: i for i in self.find() if i.id in wanted}

    def load_metrics(self, items: list[Item], filters: list[Filter], as_of: datetime) -> None:
        """Fill `item.metrics` for the policy's metric filters, in batched calls (resources that
        declare `metric_below` implement it)."""
        raise NotImplementedError(f"{self.name} has no metrics")

    def mark(self, items: list[Item], value: str) -> set[str]:
        """Set the mark on these items in batches; return the ids that vanished or changed first."""
        raise NotImplementedError

    def unmark(self, items: list[Item]) -> set[str]:
        """Remove the mark; return the ids that vanished or changed first."""
        raise NotImplementedError

    def act(self, item: Item, policy: Policy) -> str:
        """Do the policy's action on one item; return what was done. Raise Changed when it moved on."""
        raise NotImplementedError


def describe(items: Iterable[Item]) -> dict[str, Any]:
    """Items as plain data (tests compare a full describe before and after a dry run)."""
    return {i.id: (i.state, dict(i.labels), dict(i.annotations), i.attached, i.referenced) for i in items}
