"""Kubernetes resources through the real `kubernetes` client against the in-process API stand-in
(scaleops/sandbox/kube_api.py): what each resource finds and how it judges "finished", "unreferenced",
"expired"; marks as annotations; deletes with a resourceVersion precondition."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from scaleops.sandbox.kube_api import Cluster, serving, write_kubeconfig
from tasks.cost.kube import Job, KubeScope, Namespace, Pod, Pv, Pvc, gib, janitor_expiry
from tasks.cost.lifecycle import run_policy
from tasks.cost.policy import load_policies
from tasks.cost.prices import load_prices
from tasks.cost.resources import MARK_KEY

ROOT = Path(__file__).resolve().parents[3]
POLICIES = {p.name: p for p in load_policies(ROOT / "deployments/cost-policies.yml")}
NOW = datetime(2026, 6, 1, 12, tzinfo=UTC)


def stamp(days_ago: float) -> str:
    return (NOW - timedelta(days=days_ago)).strftime("%Y-%m-%dT%H:%M:%SZ")


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[tuple[Cluster, KubeScope]]:
    with serving() as (url, fake):
        yield fake, KubeScope(str(write_kubeconfig(tmp_path / "kubeconfig", url, "test")), "test")


def job(name: str, ns: str, state: str | None, days_ago: float) -> dict:
    status: dict = (
        {"active": 1}
        if state is None
        else {
            "completionTime": stamp(days_ago),
            "conditions": [{"type": state, "status": "True", "lastTransitionTime": stamp(days_ago)}],
        }
    )
    return {
        "metadata": {"name": name, "namespace": ns, "creationTimestamp": stamp(days_ago + 1)},
        "status": status,
    }


def test_quantities_and_janitor_annotations() -> None:
    assert gib("10Gi") == 10 and gib("512Mi") == 0.5 and gib("1G") == pytest.approx(0.931, abs=1e-3)
    assert gib("junk") == 0 and gib(None) == 0
    created = {"creationTimestamp": stamp(3)}
    assert janitor_expiry({**created, "annotations": {"janitor/ttl": "2d"}}) == NOW - timedelta(days=1)
    assert janitor_expiry({**created, "annotations": {"janitor/ttl": "unlimited"}}) is None
    both = {**created, "annotations": {"janitor/ttl": "7d", "janitor/expires": "2026-06-01"}}
    assert janitor_expiry(both) == datetime(2026, 6, 1, tzinfo=UTC)
    assert janitor_expiry({**created, "annotations": {"janitor/expires": "soon"}}) is None


def test_finished_jobs_are_marked_then_deleted_with_their_pods(cluster: tuple[Cluster, KubeScope]) -> None:
    fake, scope = cluster
    fake.create("batch", "jobs", job("done", "ci", "Complete", 3))
    fake.create("batch", "jobs", job("failed", "ci", "Failed", 2))
    fake.create("batch", "jobs", job("fresh", "ci", "Complete", 0.5))
    fake.create("batch", "jobs", job("running", "ci", None, 5))
    fake.create("batch", "jobs", job("system", "kube-system", "Complete", 9))
    fake.create(
        "", "pods", {"metadata": {"name": "done-abc", "namespace": "ci", "labels": {"job-name": "done"}}}
    )
    resource = Job(scope, load_prices())
    policy = POLICIES["k8s-finished-jobs"]
    marked = run_policy(
        resource, policy, NOW, dry_run=False, remaining=10, protected_namespaces=["kube-system"]
    )
    assert {f.id: f.state for f in marked.findings} == {
        "ci/done": "marked",
        "ci/failed": "marked",
        "kube-system/system": "protected",
    }
    assert fake.get("batch", "jobs", "ci", "done")["metadata"]["annotations"][MARK_KEY] == "delete@2026-06-02"
    assert {f.where for f in marked.findings} == {"test/ci", "test/kube-system"}
    acted = run_policy(
        resource,
        policy,
        NOW + timedelta(days=1),
        dry_run=False,
        remaining=10,
        protected_namespaces=["kube-system"],
    )
    assert {f.id for f in acted.findings if f.state == "acted"} == {"ci/done", "ci/failed"}
    assert {j["metadata"]["name"] for j in fake.list("batch", "jobs", None, "", "")} == {
        "fresh",
        "running",
        "system",
    }
    assert fake.list("", "pods", "ci", "", "") == []


def test_a_job_changed_after_the_list_is_skipped(cluster: tuple[Cluster, KubeScope]) -> None:
    fake, scope = cluster
    fake.create("batch", "jobs", job("done", "ci", "Complete", 3))
    resource = Job(scope, load_prices())
    policy = POLICIES["k8s-finished-jobs"]
    run_policy(resource, policy, NOW, dry_run=False, remaining=10)
    (item,) = resource.find()
    fake.patch("batch", "jobs", "ci", "done", {"metadata": {"labels": {"touched": "yes"}}}, "merge")
    from tasks.cost.resources import Changed

    with pytest.raises(Changed, match="409"):
        resource.act(item, policy)  # the old resourceVersion is the delete's precondition
    fake.delete("batch", "jobs", "ci", "done", {})
    with pytest.raises(Changed, match="404"):
        resource.act(item, policy)


def test_pods_pvcs_pvs_and_namespaces(cluster: tuple[Cluster, KubeScope]) -> None:
    fake, scope = cluster
    prices = load_prices()
    finished = {"containerStatuses": [{"state": {"terminated": {"finishedAt": stamp(2)}}}]}
    fake.create(
        "",
        "pods",
        {"metadata": {"name": "old", "namespace": "ci"}, "status": {"phase": "Succeeded", **finished}},
    )
    fake.create(
        "",
        "pods",
        {
            "metadata": {"name": "web", "namespace": "app"},
            "status": {"phase": "Running"},
            "spec": {"volumes": [{"name": "d", "persistentVolumeClaim": {"claimName": "mounted"}}]},
        },
    )
    for name in ("mounted", "orphan", "templated", "data-db-0"):
        fake.create(
            "",
            "persistentvolumeclaims",
            {
                "metadata": {"name": name, "namespace": "app", "creationTimestamp": stamp(30)},
                "status": {"capacity": {"storage": "100Gi"}},
            },
        )
    template = {"spec": {"volumes": [{"name": "t", "persistentVolumeClaim": {"claimName": "templated"}}]}}
    fake.create(
        "apps",
        "deployments",
        {"metadata": {"name": "api", "namespace": "app"}, "spec": {"replicas": 0, "template": template}},
    )
    fake.create(
        "apps",
        "statefulsets",
        {
            "metadata": {"name": "db", "namespace": "app"},
            "spec": {"volumeClaimTemplates": [{"metadata": {"name": "data"}}]},
        },
    )
    fake.create(
        "",
        "persistentvolumes",
        {
            "metadata": {"name": "pv-1", "creationTimestamp": stamp(3)},
            "spec": {"capacity": {"storage": "20Gi"}},
            "status": {"phase": "Released"},
        },
    )
    fake.create(
        "",
        "persistentvolumes",
        {"metadata": {"name": "pv-2", "creationTimestamp": stamp(3)}, "status": {"phase": "Bound"}},
    )
    fake.create(
        "",
        "namespaces",
        {
            "metadata": {
                "name": "preview-1",
                "creationTimestamp": stamp(3),
                "annotations": {"janitor/ttl": "1d"},
            }
        },
    )
    fake.create(
        "",
        "namespaces",
        {
            "metadata": {
                "name": "preview-2",
                "creationTimestamp": stamp(3),
                "annotations": {"janitor/ttl": "7d"},
            }
        },
    )
    fake.create(
        "",
        "namespaces",
        {"metadata": {"name": "kube-system", "annotations": {"janitor/expires": "2020-01-01"}}},
    )

    def found(resource: object, policy: str) -> dict[str, str]:
        result = run_policy(
            resource,
            POLICIES[policy],
            NOW,
            dry_run=True,
            remaining=0,  # type: ignore[arg-type]
            protected_namespaces=["kube-system"],
        )
        return {f.id: f.state for f in result.findings}

    writes = fake.writes
    assert found(Pod(scope, prices), "k8s-finished-pods") == {"ci/old": "would-mark"}
    assert found(Pvc(scope, prices), "k8s-unused-pvcs") == {"app/orphan": "would-mark"}
    assert found(Pv(scope, prices), "k8s-released-pvs") == {"pv-1": "would-mark"}
    assert found(Namespace(scope, prices), "k8s-expired-namespaces") == {
        "preview-1": "would-mark",
        "kube-system": "protected",
    }
    assert fake.writes == writes  # dry runs write nothing
    (orphan,) = [i for i in Pvc(scope, prices).find() if i.id == "app/orphan"]
    assert orphan.monthly_usd == pytest.approx(100 * prices.pv_gib_month())
