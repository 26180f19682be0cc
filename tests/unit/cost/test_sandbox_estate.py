"""The sandbox's seeded estate has something for every default policy (AWS in moto's in-process
mock, Kubernetes in the API stand-in), protected resources among them, and seeding twice adds nothing."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from scaleops.sandbox.cost_estate import ESTATE_REGION, seed_aws
from scaleops.sandbox.kube_api import Cluster, seed_demo, serving, write_kubeconfig
from tasks.cost.aws import AwsScope
from tasks.cost.catalog import RESOURCES
from tasks.cost.kube import KubeScope
from tasks.cost.lifecycle import run_policy
from tasks.cost.policy import load_policies
from tasks.cost.prices import load_prices

ROOT = Path(__file__).resolve().parents[3]
POLICIES = load_policies(ROOT / "deployments/cost-policies.yml")
LATER = datetime.now(UTC) + timedelta(days=100)  # moto stamps "now"


def found(resource: Any, provider: str) -> dict[str, set[str]]:
    states: dict[str, set[str]] = {}
    for policy in (p for p in POLICIES if p.provider == provider):
        result = run_policy(
            resource(policy),
            policy,
            LATER,
            dry_run=True,
            remaining=0,
            protected_namespaces=["kube-system", "kube-public", "default"],
        )
        states[policy.name] = {f.state for f in result.findings}
    return states


def test_every_aws_policy_finds_something(monkeypatch: pytest.MonkeyPatch) -> None:
    import boto3
    from moto import mock_aws

    monkeypatch.setenv("MOTO_EC2_LOAD_DEFAULT_AMIS", "false")
    for key in ("AWS_ENDPOINT_URL", "AWS_PROFILE"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    with mock_aws():
        client = lambda service: boto3.client(service, region_name=ESTATE_REGION)  # noqa: E731
        assert seed_aws(client) > 0 and seed_aws(client) == 0
        prices = load_prices()
        states = found(lambda p: RESOURCES[p.resource](AwsScope(ESTATE_REGION), prices), "aws")
    assert all(states.values()), states
    assert "protected" in states["ebs-unattached"]


def test_every_kubernetes_policy_finds_something(tmp_path: Path) -> None:
    cluster = Cluster()
    seed_demo(cluster, datetime.now(UTC))
    with serving(cluster) as (url, _):
        scope = KubeScope(str(write_kubeconfig(tmp_path / "kubeconfig", url, "sandbox")), "sandbox")
        prices = load_prices()
        states = found(lambda p: RESOURCES[p.resource](scope, prices), "k8s")
    assert all(states.values()), states
    assert "protected" in states["k8s-finished-jobs"]
