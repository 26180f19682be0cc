"""Every manifest in deployments/k8s validates against the Kubernetes schemas offline (kubernetes-validate)
and loads through the kubernetes client models; the kustomization lists every file; the pieces that must
agree (Service and pods, probes and the bridge's routes, RBAC and service accounts, the job template and
the namespace) do."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from kubernetes.client import ApiClient

ROOT = Path(__file__).resolve().parents[3]
K8S = ROOT / "deployments" / "k8s"
KUBERNETES_VERSION = "1.33.0"  # the oldest minor we support; schemas ship with kubernetes-validate
KUSTOMIZATION = yaml.safe_load((K8S / "kustomization.yaml").read_text())
MANIFEST_FILES = sorted(p.name for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml")
DOCS: list[tuple[str, dict[str, Any]]] = [
    (name, doc) for name in MANIFEST_FILES for doc in yaml.safe_load_all((K8S / name).read_text()) if doc
]
# one-off Jobs (created per upgrade, not applied with the rest)
JOBS: list[dict[str, Any]] = [yaml.safe_load(p.read_text()) for p in sorted((K8S / "jobs").glob("*.yaml"))]
NAMESPACE = KUSTOMIZATION["namespace"]
TEMPLATE = json.loads((K8S / "base-job-template.json").read_text())
TEMPLATE_SECRET = TEMPLATE["variables"]["properties"]["secret_name"]["default"]


def objects(kind: str) -> dict[str, dict[str, Any]]:
    return {doc["metadata"]["name"]: doc for _, doc in DOCS if doc["kind"] == kind}


def pod_spec(deployment: str) -> dict[str, Any]:
    spec: dict[str, Any] = objects("Deployment")[deployment]["spec"]["template"]["spec"]
    return spec


def env(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container.get("env", [])}


def test_kustomization_lists_every_file() -> None:
    assert sorted(KUSTOMIZATION["resources"]) == MANIFEST_FILES
    generated = [f for gen in KUSTOMIZATION.get("configMapGenerator", []) for f in gen["files"]]
    assert generated == ["base-job-template.json"]
    listed = set(KUSTOMIZATION["resources"]) | set(generated)
    listed |= {"kustomization.yaml", "README.md", "prefect_k8s.py"}  # not applied to the cluster
    assert {p.name for p in K8S.iterdir() if p.is_file()} == listed


@pytest.mark.parametrize(
    "doc",
    [d for _, d in DOCS] + JOBS,
    ids=lambda d: f"{d['kind']}/{d['metadata'].get('name') or d['metadata']['generateName']}",
)
def test_manifest_validates_against_the_schemas(doc: dict[str, Any]) -> None:
    kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
    model = ApiClient()._ApiClient__deserialize(doc, f"V1{doc['kind']}")  # type: ignore[attr-defined]
    assert model.kind == doc["kind"]
    assert doc["metadata"].get("namespace", NAMESPACE) == NAMESPACE or doc["kind"] == "Namespace"


def test_the_validation_catches_a_broken_manifest() -> None:
    broken = json.loads(json.dumps(objects("Deployment")["scaleops-alert-bridge"]))
    broken["spec"]["replicas"] = "two"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSION, strict=True)
    broken = json.loads(json.dumps(objects("Deployment")["scaleops-alert-bridge"]))
    broken["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSION, strict=True)


def pod_specs() -> dict[str, dict[str, Any]]:
    pods = {name: pod_spec(name) for name in objects("Deployment")}
    pods.update({job["metadata"]["generateName"]: job["spec"]["template"]["spec"] for job in JOBS})
    return pods


@pytest.mark.parametrize("name", sorted(pod_specs()))
def test_workloads_are_locked_down_and_sized(name: str) -> None:
    pod = pod_specs()[name]
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] >= 1000
    assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    assert pod["serviceAccountName"] in objects("ServiceAccount")
    for container in pod["containers"]:
        assert {"cpu", "memory"} <= set(container["resources"]["requests"])
        assert {"cpu", "memory"} <= set(container["resources"]["limits"])
        ctx = container["securityContext"]
        assert ctx["allowPrivilegeEscalation"] is False and ctx["readOnlyRootFilesystem"] is True
        assert ctx["capabilities"]["drop"] == ["ALL"]
        assert ":" in container["image"] and not container["image"].endswith(":latest")
        scratch = [m for m in container["volumeMounts"] if m["mountPath"] == "/tmp"]  # noqa: S108
        assert scratch, "a writable /tmp beside the read-only root filesystem"


def test_the_alert_bridge_is_reachable_as_alertmanager_expects() -> None:
    bridge = objects("Deployment")["scaleops-alert-bridge"]
    assert bridge["spec"]["replicas"] == 2
    labels = bridge["spec"]["template"]["metadata"]["labels"]
    (container,) = bridge["spec"]["template"]["spec"]["containers"]
    assert container["args"] == ["scaleops", "alerts", "serve"]
    variables = env(container)
    assert variables["SCALEOPS_ALERTS__HOST"] == "0.0.0.0"  # the default 127.0.0.1 is unreachable in a pod
    assert variables["SCALEOPS_ALERTS__TOKEN"]["secretKeyRef"]["name"] == "scaleops-alert-bridge"
    assert not any(s in k for k in variables if isinstance(variables[k], str) for s in ("TOKEN", "KEY"))
    (port,) = container["ports"]
    assert port["containerPort"] == int(variables["SCALEOPS_ALERTS__PORT"]) == 9095
    for probe in ("readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"] == {"path": "/healthz", "port": port["name"]}

    service = objects("Service")["scaleops-alert-bridge"]
    assert service["spec"]["selector"].items() <= labels.items()
    (service_port,) = service["spec"]["ports"]
    assert service_port["port"] == 9095 and service_port["targetPort"] == port["name"]
    routed = (ROOT / "deployments/alertmanager/alertmanager.yml").read_text()
    assert f"http://scaleops-alert-bridge.{NAMESPACE}.svc:9095/alertmanager" in routed


def test_the_bridge_serves_the_probe_path() -> None:
    from starlette.testclient import TestClient

    from scaleops.ops.alert_bridge import EventSink, create_app

    with TestClient(create_app(EventSink("http://127.0.0.1:9/api"), token="t")) as client:
        assert client.get("/healthz").status_code == 200


def test_only_the_bridge_accepts_connections() -> None:
    policies = objects("NetworkPolicy")
    deny = policies["scaleops-default-deny-ingress"]["spec"]
    assert deny["podSelector"] == {} and deny["policyTypes"] == ["Ingress"] and "ingress" not in deny
    allow = policies["scaleops-alert-bridge-ingress"]["spec"]
    bridge_labels = objects("Deployment")["scaleops-alert-bridge"]["spec"]["template"]["metadata"]["labels"]
    assert allow["podSelector"]["matchLabels"].items() <= bridge_labels.items()
    assert [p["port"] for rule in allow["ingress"] for p in rule["ports"]] == [9095]


def test_the_worker_may_create_jobs_in_its_namespace_only() -> None:
    pod = pod_spec("scaleops-worker")
    account = pod["serviceAccountName"]
    (binding,) = [b for b in objects("RoleBinding").values() if b["roleRef"]["kind"] == "Role"]
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": account, "namespace": NAMESPACE}]
    role = objects("Role")[binding["roleRef"]["name"]]
    jobs = [r for r in role["rules"] if "jobs" in r["resources"]]
    assert jobs and jobs[0]["apiGroups"] == ["batch"] and "create" in jobs[0]["verbs"]
    assert not objects("ClusterRole") and not objects("ClusterRoleBinding")
    # with a namespaced Role the worker must not watch cluster-wide nor read kube-system
    variables = env(pod["containers"][0])
    assert variables["PREFECT_INTEGRATIONS_KUBERNETES_OBSERVER_NAMESPACES"] == NAMESPACE
    assert variables["PREFECT_KUBERNETES_CLUSTER_UID"]


def test_the_worker_reads_the_generated_job_template() -> None:
    pod = pod_spec("scaleops-worker")
    (container,) = pod["containers"]
    args = container["args"]
    assert args[args.index("--type") + 1] == "kubernetes"
    path = Path(args[args.index("--base-job-template") + 1])
    (mount,) = [m for m in container["volumeMounts"] if m["mountPath"] == str(path.parent)]
    (volume,) = [v for v in pod["volumes"] if v["name"] == mount["name"]]
    (generator,) = KUSTOMIZATION["configMapGenerator"]
    assert volume["configMap"]["name"] == generator["name"] and path.name in generator["files"]
    assert float(env(container)["PREFECT_WORKER_QUERY_SECONDS"]) <= 10


def test_the_job_template_runs_in_this_namespace_as_its_service_account() -> None:
    defaults = {k: v.get("default") for k, v in TEMPLATE["variables"]["properties"].items()}
    assert defaults["namespace"] == NAMESPACE
    assert defaults["service_account_name"] in objects("ServiceAccount")
    images = {image["name"] for image in KUSTOMIZATION["images"]}
    assert defaults["image"].rsplit(":", 1)[0] in images
    assert (
        objects("Deployment")["scaleops-alert-bridge"]["spec"]["template"]["spec"]["containers"][0][
            "image"
        ].rsplit(":", 1)[0]
        in images
    )


def test_the_migration_job_runs_scaleops_db_migrate_with_the_flows_settings() -> None:
    (job,) = JOBS
    assert job["metadata"]["namespace"] == NAMESPACE and job["spec"]["backoffLimit"] <= 1
    (container,) = job["spec"]["template"]["spec"]["containers"]
    assert container["args"] == ["scaleops", "db", "migrate"]
    assert container["envFrom"] == [{"secretRef": {"name": TEMPLATE_SECRET}}]
    assert container["image"].rsplit(":", 1)[0] in {image["name"] for image in KUSTOMIZATION["images"]}


def test_the_rendered_flow_run_job_validates() -> None:
    from tests.unit.deployments.test_k8s_job_template import render

    kubernetes_validate.validate(render(), KUBERNETES_VERSION, strict=True)
