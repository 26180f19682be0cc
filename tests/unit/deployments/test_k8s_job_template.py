"""The Kubernetes work pool's base job template renders into a valid Job with no plaintext secret."""

from __future__ import annotations

import json
import shlex
from pathlib import Path
from typing import Any

from kubernetes.client import ApiClient, V1Job
from prefect.utilities.templating import apply_values

TEMPLATE = Path(__file__).resolve().parents[3] / "deployments" / "k8s" / "base-job-template.json"
SECRETISH = ("PASSWORD", "SECRET", "TOKEN", "DSN", "PRIVATE", "KEY")


def render(overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """What a Prefect kubernetes worker does: defaults + run values into job_configuration, then env as
    a list of name/value pairs and the command split into args."""
    template = json.loads(TEMPLATE.read_text())
    values = {k: v["default"] for k, v in template["variables"]["properties"].items() if "default" in v}
    values.update(
        {
            "name": "scaleops-backup-verification-abc12",
            "command": "prefect flow-run execute",
            "labels": {"prefect.io/flow-run-id": "0d3c5d2a"},
            "env": {
                "PREFECT_API_URL": "http://prefect-server:4200/api",
                "SCALEOPS_S3__PRIMARY_REGION": "eu-west-1",
            },
            **(overrides or {}),
        }
    )
    config = apply_values(template["job_configuration"], values)
    manifest = config["job_manifest"]
    container = manifest["spec"]["template"]["spec"]["containers"][0]
    container["env"] = [{"name": k, "value": v} for k, v in container["env"].items()]
    container["args"] = shlex.split(container["args"])
    return manifest


def to_job(manifest: dict[str, Any]) -> V1Job:
    return ApiClient()._ApiClient__deserialize(manifest, "V1Job")  # type: ignore[attr-defined]


def test_renders_a_valid_job() -> None:
    manifest = render()
    job = to_job(manifest)
    assert job.kind == "Job" and job.api_version == "batch/v1"
    assert job.metadata.namespace == "scaleops"
    pod = job.spec.template.spec
    assert pod.restart_policy == "Never" and pod.service_account_name == "scaleops-flows"
    assert pod.security_context.run_as_non_root is True
    (container,) = pod.containers
    assert container.image.startswith("ghcr.io/") and container.args == ["prefect", "flow-run", "execute"]
    assert container.resources.limits == {"cpu": "2", "memory": "2Gi"}
    assert container.security_context.read_only_root_filesystem is True
    assert job.spec.backoff_limit == 0 and isinstance(job.spec.ttl_seconds_after_finished, int)


def test_secrets_come_only_from_a_kubernetes_secret() -> None:
    job = to_job(render())
    (container,) = job.spec.template.spec.containers
    assert [source.secret_ref.name for source in container.env_from] == ["scaleops-settings"]
    for var in container.env:
        assert not any(word in var.name.upper() for word in SECRETISH), var.name
    template = json.loads(TEMPLATE.read_text())
    env_default = template["variables"]["properties"]["env"].get("default", {})
    assert not any(any(w in k.upper() for w in SECRETISH) for k in env_default)


def test_image_and_resources_are_variables() -> None:
    job = to_job(render({"image": "registry.example.com/scaleops@sha256:abc", "memory_limit": "8Gi"}))
    (container,) = job.spec.template.spec.containers
    assert container.image == "registry.example.com/scaleops@sha256:abc"
    assert container.resources.limits["memory"] == "8Gi"


def test_the_validation_catches_a_broken_job() -> None:
    import pytest
    from pydantic import ValidationError

    manifest = render()
    del manifest["spec"]["template"]["spec"]["containers"][0]["name"]
    with pytest.raises((ValidationError, ValueError)):
        to_job(manifest)
