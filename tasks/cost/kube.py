"""Kubernetes resources, with the `kubernetes` client against the clusters of a kubeconfig (one scope
per context): a cluster-wide list call per kind, the mark as an annotation patch carrying the
resourceVersion (a changed object answers 409, never a silent overwrite), deletion with background
propagation and a resourceVersion precondition.

| resource | matches when | action |
|---|---|---|
| k8s.job | finished (`state: [Complete, Failed]`) for `state_age` | delete (its pods with it) |
| k8s.pod | phase `Succeeded`/`Failed` for `state_age` | delete |
| k8s.pvc | no pod mounts it and no workload template references it (`unreferenced`) | delete |
| k8s.pv | `state: Released` | delete |
| k8s.namespace | its kube-janitor `janitor/ttl` or `janitor/expires` annotation passed (`expired`) | delete |
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, ClassVar

from scaleops.core.clients import kube_api_client
from tasks.cost.prices import PriceTable
from tasks.cost.resources import (
    AGE,
    EXPIRED,
    MARK_KEY,
    STATE,
    STATE_AGE,
    TAG,
    UNREFERENCED,
    Changed,
    Item,
    Resource,
)

if TYPE_CHECKING:
    from tasks.cost.policy import Policy

_QUANTITY = re.compile(r"^(\d+(?:\.\d+)?)([KMGTPE]i?)?$")
_BINARY = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}
_DECIMAL = {"K": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "P": 10**15, "E": 10**18}
_TTL = re.compile(r"^(\d+)([smhdw])$")
_TTL_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
WORKLOADS = ("deployment", "stateful_set", "daemon_set", "replica_set")  # apps/v1 list methods


@dataclass(frozen=True)
class KubeScope:
    """One cluster: a context of a kubeconfig (None: the file's current context)."""

    kubeconfig: str | None
    context: str | None = None

    @property
    def name(self) -> str:
        return self.context or "default"

    def api_client(self) -> Any:
        return kube_api_client(self.kubeconfig, self.context)


def gib(quantity: str | None) -> float:
    """A Kubernetes quantity ('10Gi', '500M') in GiB; unparsable: 0."""
    match = _QUANTITY.match((quantity or "").strip())
    if not match:
        return 0.0
    number, unit = float(match.group(1)), match.group(2) or ""
    return number * _BINARY.get(unit, _DECIMAL.get(unit, 1)) / 2**30


def ts(value: str | None) -> datetime | None:
    if not value:
        return None
    parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def janitor_expiry(meta: dict[str, Any]) -> datetime | None:
    """kube-janitor's annotations: `janitor/expires` (a date or date-time) or `janitor/ttl` (e.g. 7d,
    24h, 'unlimited') counted from creation; the earlier wins."""
    notes = meta.get("annotations") or {}
    found: list[datetime] = []
    expires = notes.get("janitor/expires")
    if expires:
        try:
            when = datetime.fromisoformat(expires.replace("Z", "+00:00"))
            found.append(when if when.tzinfo else when.replace(tzinfo=UTC))
        except ValueError:
            pass
    ttl = _TTL.match((notes.get("janitor/ttl") or "").strip())
    created = ts(meta.get("creationTimestamp"))
    if ttl and created:
        found.append(created + timedelta(seconds=int(ttl.group(1)) * _TTL_UNIT[ttl.group(2)]))
    return min(found) if found else None


class KubeResource(Resource):
    provider: ClassVar[str] = "k8s"
    api_group: ClassVar[str] = "core"  # core | batch | apps
    kind_path: ClassVar[str]  # the list method's suffix, e.g. "job"
    namespaced: ClassVar[bool] = True

    def __init__(self, scope: KubeScope, prices: PriceTable, client: Any | None = None):
        self.kube = scope
        self.scope = scope.name
        self.prices = prices
        self._client = client

    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = self.kube.api_client()
        return self._client

    def api(self, group: str | None = None) -> Any:
        from kubernetes import client

        cls = {"core": client.CoreV1Api, "batch": client.BatchV1Api, "apps": client.AppsV1Api}
        return cls[group or self.api_group](self.client)

    def list_raw(self, kind: str, group: str | None = None) -> list[dict[str, Any]]:
        api = self.api(group)
        if kind in ("namespace", "persistent_volume"):
            response = getattr(api, f"list_{kind}")(_preload_content=False)
        else:
            response = getattr(api, f"list_{kind}_for_all_namespaces")(_preload_content=False)
        return list(json.loads(response.data).get("items") or [])

    def base_item(self, obj: dict[str, Any]) -> Item:
        meta = obj.get("metadata") or {}
        namespace = meta.get("namespace") if self.namespaced else None
        return Item(
            id=f"{namespace}/{meta['name']}" if namespace else meta["name"],
            where=f"{self.scope}/{namespace}" if namespace else self.scope,
            created=ts(meta.get("creationTimestamp")),
            labels=dict(meta.get("labels") or {}),
            annotations=dict(meta.get("annotations") or {}),
            namespace=namespace,
            version=str(meta.get("resourceVersion", "")),
        )

    def to_item(self, obj: dict[str, Any]) -> Item:
        return self.base_item(obj)

    def find(self) -> list[Item]:
        return [self.to_item(obj) for obj in self.list_raw(self.kind_path)]

    def _name_args(self, item: Item) -> list[str]:
        if self.namespaced:
            namespace, _, name = item.id.partition("/")
            return [name, namespace]
        return [item.id]

    def _call(self, verb: str, item: Item, **kwargs: Any) -> Any:
        from kubernetes.client.exceptions import ApiException

        scope = "namespaced_" if self.namespaced else ""
        method = getattr(self.api(), f"{verb}_{scope}{self.kind_path}")
        try:
            return method(*self._name_args(item), **kwargs)
        except ApiException as exc:
            if exc.status in (404, 409):
                raise Changed(f"HTTP {exc.status} {exc.reason}: {item.id}") from None
            raise

    def _annotate(self, item: Item, value: str | None) -> None:
        body = {"metadata": {"annotations": {MARK_KEY: value}, "resourceVersion": item.version}}
        self._call("patch", item, body=body)

    def mark(self, items: list[Item], value: str | None) -> set[str]:
        skipped = set()
        for item in items:
            try:
                self._annotate(item, value)
            except Changed:  # changed since the list (409) or gone (404): the next run sees it as it is
                skipped.add(item.id)
        return skipped

    def unmark(self, items: list[Item]) -> set[str]:
        return self.mark(items, None)

    def refresh(self, items: Iterable[Item]) -> dict[str, Item]:
        found: dict[str, Item] = {}
        for item in items:
            try:
                response = self._call("read", item, _preload_content=False)
            except Changed:
                continue
            found[item.id] = self.to_item(json.loads(response.data))
        return found

    def act(self, item: Item, policy: Policy) -> str:
        body = {"propagationPolicy": "Background", "preconditions": {"resourceVersion": item.version}}
        self._call("delete", item, body=body)
        return "deleted"


def _finished(obj: dict[str, Any]) -> tuple[str, datetime | None]:
    status = obj.get("status") or {}
    for condition in status.get("conditions") or []:
        if condition.get("type") in ("Complete", "Failed") and condition.get("status") == "True":
            when = ts(status.get("completionTime")) or ts(condition.get("lastTransitionTime"))
            return condition["type"], when
    return ("Active" if status.get("active") else "Pending"), None


class Job(KubeResource):
    name = "k8s.job"
    actions = ("delete",)
    filters: ClassVar[dict[str, str]] = {**AGE, **STATE, **STATE_AGE, **TAG}
    api_group = "batch"
    kind_path = "job"

    def to_item(self, obj: dict[str, Any]) -> Item:
        item = self.base_item(obj)
        item.state, item.state_since = _finished(obj)
        item.what = f"job {item.state}"
        return item


class Pod(KubeResource):
    name = "k8s.pod"
    actions = ("delete",)
    filters: ClassVar[dict[str, str]] = {**AGE, **STATE, **STATE_AGE, **TAG}
    kind_path = "pod"

    def to_item(self, obj: dict[str, Any]) -> Item:
        item = self.base_item(obj)
        status = obj.get("status") or {}
        item.state = status.get("phase")
        finished = [
            ts(((c.get("state") or {}).get("terminated") or {}).get("finishedAt"))
            for c in status.get("containerStatuses") or []
        ]
        ends = [f for f in finished if f is not None]
        item.state_since = max(ends) if ends else ts(status.get("startTime"))
        item.what = f"pod {item.state}"
        return item


def _claims_of(template: dict[str, Any]) -> set[str]:
    spec = (template or {}).get("spec") or {}
    return {
        str(v["persistentVolumeClaim"].get("claimName"))
        for v in spec.get("volumes") or []
        if v.get("persistentVolumeClaim")
    }


class Pvc(KubeResource):
    name = "k8s.pvc"
    actions = ("delete",)
    filters: ClassVar[dict[str, str]] = {**AGE, **STATE, **TAG, **UNREFERENCED}
    kind_path = "persistent_volume_claim"

    def references(self) -> tuple[set[tuple[str, str]], list[tuple[str, str]]]:
        """(namespace, claim) pairs that a pod or a workload template uses, and (namespace, prefix)
        of StatefulSet claim templates (their claims are `<template>-<set>-<ordinal>`)."""
        used: set[tuple[str, str]] = set()
        prefixes: list[tuple[str, str]] = []
        for pod in self.list_raw("pod"):
            namespace = pod["metadata"].get("namespace", "")
            used |= {(namespace, c) for c in _claims_of(pod)}
        for kind in WORKLOADS:
            for obj in self.list_raw(kind, "apps"):
                namespace = obj["metadata"].get("namespace", "")
                spec = obj.get("spec") or {}
                used |= {(namespace, c) for c in _claims_of(spec.get("template") or {})}
                for claim in spec.get("volumeClaimTemplates") or []:
                    prefixes.append((namespace, f"{claim['metadata']['name']}-{obj['metadata']['name']}-"))
        for job in self.list_raw("job", "batch"):
            namespace = job["metadata"].get("namespace", "")
            used |= {(namespace, c) for c in _claims_of((job.get("spec") or {}).get("template") or {})}
        for cron in self.list_raw("cron_job", "batch"):
            namespace = cron["metadata"].get("namespace", "")
            template = ((cron.get("spec") or {}).get("jobTemplate") or {}).get("spec", {}).get("template", {})
            used |= {(namespace, c) for c in _claims_of(template)}
        return used, prefixes

    def find(self) -> list[Item]:
        used, prefixes = self.references()
        items = []
        for obj in self.list_raw(self.kind_path):
            item = self.base_item(obj)
            namespace, name = item.namespace or "", obj["metadata"]["name"]
            item.referenced = (namespace, name) in used or any(
                ns == namespace and name.startswith(p) for ns, p in prefixes
            )
            status = obj.get("status") or {}
            item.state = status.get("phase")
            size = gib((status.get("capacity") or {}).get("storage")) or gib(
                (((obj.get("spec") or {}).get("resources") or {}).get("requests") or {}).get("storage")
            )
            item.monthly_usd = size * self.prices.pv_gib_month()
            item.what = f"claim {size:g} GiB"
            items.append(item)
        return items

    def refresh(self, items: Iterable[Item]) -> dict[str, Item]:
        wanted = {i.id for i in items}  # "unreferenced" needs every pod and template again
        return {i.id: i for i in self.find() if i.id in wanted}


class Pv(KubeResource):
    name = "k8s.pv"
    actions = ("delete",)
    filters: ClassVar[dict[str, str]] = {**AGE, **STATE, **TAG}
    kind_path = "persistent_volume"
    namespaced = False

    def to_item(self, obj: dict[str, Any]) -> Item:
        item = self.base_item(obj)
        item.state = (obj.get("status") or {}).get("phase")
        size = gib(((obj.get("spec") or {}).get("capacity") or {}).get("storage"))
        item.monthly_usd = size * self.prices.pv_gib_month()
        item.what = f"volume {size:g} GiB {item.state}"
        return item


class Namespace(KubeResource):
    name = "k8s.namespace"
    actions = ("delete",)
    filters: ClassVar[dict[str, str]] = {**AGE, **TAG, **EXPIRED}
    kind_path = "namespace"
    namespaced = False

    def to_item(self, obj: dict[str, Any]) -> Item:
        item = self.base_item(obj)
        item.expires = janitor_expiry(obj.get("metadata") or {})
        item.state = (obj.get("status") or {}).get("phase")
        item.what = f"namespace, expires {item.expires.isoformat() if item.expires else 'never'}"
        return item


KUBE_RESOURCES: tuple[type[KubeResource], ...] = (Job, Pod, Pvc, Pv, Namespace)
