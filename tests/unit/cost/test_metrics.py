"""`metric_below`: parsed and refused like every filter, and judged from CloudWatch's daily statistic
over the window ending at as_of (moto's CloudWatch in process), in one batched call."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tasks.cost.aws import AwsScope, Ec2Instance
from tasks.cost.lifecycle import run_policy
from tasks.cost.policy import PolicyError, parse_policies
from tasks.cost.prices import load_prices

REGION = "eu-west-1"


def policy(**metric: Any) -> dict[str, Any]:
    spec = {"metric": "CPUUtilization", "threshold": 5, "days": "7d", **metric}
    return {
        "policies": [
            {
                "name": "idle",
                "resource": "aws.ec2-instance",
                "action": "terminate",
                "filters": [{"state": "running"}, {"metric_below": spec}],
            }
        ]
    }


@pytest.mark.parametrize(
    ("metric", "message"),
    [
        ({"threshold": "low"}, "threshold must be a number"),
        ({"days": "6h"}, "days must be at least 1d"),
        ({"stat": "Median"}, "stat must be one of"),
        ({"missing": "maybe"}, "missing must be skip"),
        ({"colour": 1}, "unknown key(s) colour"),
    ],
)
def test_malformed_metric_filters_are_refused(metric: dict[str, Any], message: str) -> None:
    with pytest.raises(PolicyError, match="policy 'idle', field filters\\[1\\]: metric_below"):
        parse_policies(policy(**metric))
    with pytest.raises(PolicyError) as caught:
        parse_policies(policy(**metric))
    assert message in caught.value.problems[0]


def test_metric_below_on_kubernetes_is_unknown() -> None:
    data = {
        "policies": [
            {
                "name": "x",
                "resource": "k8s.job",
                "action": "delete",
                "filters": [{"metric_below": {"metric": "m", "threshold": 1}}],
            }
        ]
    }
    with pytest.raises(PolicyError, match="unknown filter 'metric_below' for k8s.job"):
        parse_policies(data)


def test_idle_instances_by_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    import boto3
    from moto import mock_aws

    monkeypatch.setenv("MOTO_EC2_LOAD_DEFAULT_AMIS", "false")
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    now = datetime.now(UTC).replace(microsecond=0)
    with mock_aws():
        ec2 = boto3.client("ec2", region_name=REGION)
        busy, idle, silent = (
            i["InstanceId"]
            for i in ec2.run_instances(ImageId="ami-12c6146b", MinCount=3, MaxCount=3)["Instances"]
        )
        cloudwatch = boto3.client("cloudwatch", region_name=REGION)
        for instance, cpu in ((busy, [3.0, 60.0]), (idle, [1.0, 2.5])):
            cloudwatch.put_metric_data(
                Namespace="AWS/EC2",
                MetricData=[
                    {
                        "MetricName": "CPUUtilization",
                        "Dimensions": [{"Name": "InstanceId", "Value": instance}],
                        "Value": v,
                        "Timestamp": now - timedelta(hours=n + 1),
                    }
                    for n, v in enumerate(cpu)
                ],
            )
        resource = Ec2Instance(AwsScope(REGION), load_prices())
        (skip,) = parse_policies(policy())
        found = run_policy(resource, skip, now + timedelta(hours=1), dry_run=True, remaining=0)
        assert {f.id for f in found.findings} == {idle}  # no datapoints: no data, no action
        (match,) = parse_policies(policy(missing="match"))
        found = run_policy(resource, match, now + timedelta(hours=1), dry_run=True, remaining=0)
        assert {f.id for f in found.findings} == {idle, silent}
