"""cost-cleanup against the sandbox's moto server (EC2, ELBv2, S3, STS, IAM) and the Kubernetes API
stand-in, with `as_of` injected (moto stamps everything "now"): found, marked, not acted inside the
grace, acted after it, unmarked when back in use; protections; the account guard; the action cap; a
resource deleted between filter and action; a malformed policy file; the audit rows; a dry run that
changes nothing (a full describe before and after)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml

from flows.cost_cleanup import cost_cleanup
from scaleops.core.clients import postgres_dsn
from scaleops.core.reporting import report_of
from scaleops.core.settings import load_settings
from scaleops.sandbox.kube_api import Cluster, serving, write_kubeconfig
from tasks.cost.aws import AwsScope, EbsVolume
from tasks.cost.lifecycle import run_policy
from tasks.cost.policy import load_policies
from tasks.cost.prices import load_prices
from tasks.cost.report import CostReport
from tasks.cost.resources import MARK_KEY, PROTECT_KEY

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[3]
ACCOUNT = "123456789012"  # moto's default account
NOW = datetime.now(UTC).replace(microsecond=0)
REGIONS = iter(
    [
        "eu-north-1",
        "eu-west-3",
        "ap-south-1",
        "ap-southeast-2",
        "ca-central-1",
        "sa-east-1",
        "eu-central-1",
        "ap-northeast-1",
        "us-east-2",
        "eu-west-2",
    ]
)


def later(days: float) -> str:
    return (NOW + timedelta(days=days)).isoformat()


def purge(ec2: Any, elb: Any, s3: Any) -> None:
    """Leave the test's region empty (moto's state outlives test runs), and drop earlier runs' buckets."""
    for bucket in s3.list_buckets().get("Buckets", []):
        if bucket["Name"].startswith("cost-test-"):
            for upload in s3.list_multipart_uploads(Bucket=bucket["Name"]).get("Uploads", []):
                s3.abort_multipart_upload(
                    Bucket=bucket["Name"], Key=upload["Key"], UploadId=upload["UploadId"]
                )
            s3.delete_bucket(Bucket=bucket["Name"])
    for lb in elb.describe_load_balancers().get("LoadBalancers", []):
        elb.delete_load_balancer(LoadBalancerArn=lb["LoadBalancerArn"])
    ids = [i["InstanceId"] for r in ec2.describe_instances()["Reservations"] for i in r["Instances"]]
    if ids:
        ec2.terminate_instances(InstanceIds=ids)
    for image in ec2.describe_images(Owners=["self"])["Images"]:
        ec2.deregister_image(ImageId=image["ImageId"])
    for snap in ec2.describe_snapshots(OwnerIds=["self"])["Snapshots"]:
        ec2.delete_snapshot(SnapshotId=snap["SnapshotId"])
    for vol in ec2.describe_volumes()["Volumes"]:
        if not vol.get("Attachments"):
            ec2.delete_volume(VolumeId=vol["VolumeId"])
    for address in ec2.describe_addresses()["Addresses"]:
        ec2.release_address(AllocationId=address["AllocationId"])


class Estate:
    """The test's AWS region and Kubernetes cluster, and the settings pointing the duty at them."""

    def __init__(self, env: dict[str, str], region: str, cluster: Cluster, kubeconfig: Path, policies: Path):
        self.region, self.cluster, self.policies = region, cluster, policies
        self.scope = AwsScope(
            region,
            env["SCALEOPS_S3__ENDPOINT_URL"],
            env["SCALEOPS_S3__ACCESS_KEY_ID"],
            env["SCALEOPS_S3__SECRET_ACCESS_KEY"],
        )
        self.ec2, self.elb, self.s3 = (self.scope.client(s) for s in ("ec2", "elbv2", "s3"))
        self.kubeconfig = kubeconfig

    def volume(self, size: int = 10, **tags: str) -> str:
        spec = (
            [{"ResourceType": "volume", "Tags": [{"Key": k, "Value": v} for k, v in tags.items()]}]
            if tags
            else []
        )
        return str(
            self.ec2.create_volume(
                AvailabilityZone=f"{self.region}a", Size=size, VolumeType="gp3", TagSpecifications=spec
            )["VolumeId"]
        )

    def tags(self, volume: str) -> dict[str, str]:
        (v,) = self.ec2.describe_volumes(VolumeIds=[volume])["Volumes"]
        return {t["Key"]: t["Value"] for t in v.get("Tags") or []}

    def describe(self) -> dict[str, Any]:
        """Everything the duty could change, as data (the dry-run check compares two of these)."""
        volumes = {
            v["VolumeId"]: sorted((t["Key"], t["Value"]) for t in v.get("Tags") or [])
            for v in self.ec2.describe_volumes()["Volumes"]
        }
        snapshots = sorted(
            s["SnapshotId"] for s in self.ec2.describe_snapshots(OwnerIds=["self"])["Snapshots"]
        )
        addresses = sorted(a["AllocationId"] for a in self.ec2.describe_addresses()["Addresses"])
        instances = sorted(
            (i["InstanceId"], i["State"]["Name"])
            for r in self.ec2.describe_instances()["Reservations"]
            for i in r["Instances"]
        )
        jobs = [
            (j["metadata"]["name"], j["metadata"].get("annotations"))
            for j in self.cluster.list("batch", "jobs", None, "", "")
        ]
        return {
            "volumes": volumes,
            "snapshots": snapshots,
            "addresses": addresses,
            "instances": instances,
            "jobs": jobs,
            "k8s_writes": self.cluster.writes,
        }


def write_policies(path: Path, names: list[str], **overrides: Any) -> Path:
    data = yaml.safe_load((ROOT / "deployments/cost-policies.yml").read_text())
    chosen = [{**p, **overrides.get(p["name"], {})} for p in data["policies"] if p["name"] in names]
    path.write_text(yaml.safe_dump({"policies": chosen}))
    return path


@pytest.fixture
def estate(sandbox_env: dict[str, str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Estate]:
    region = next(REGIONS)
    with serving() as (url, cluster):
        kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", url, "test")
        policies = write_policies(tmp_path / "policies.yml", ["ebs-unattached", "k8s-finished-jobs"])
        env = {
            "SCALEOPS_COST__POLICIES": str(policies),
            "SCALEOPS_COST__REGIONS": f'["{region}"]',
            "SCALEOPS_COST__AWS_ENDPOINT_URL": sandbox_env["SCALEOPS_S3__ENDPOINT_URL"],
            "SCALEOPS_COST__ACCESS_KEY_ID": sandbox_env["SCALEOPS_S3__ACCESS_KEY_ID"],
            "SCALEOPS_COST__SECRET_ACCESS_KEY": sandbox_env["SCALEOPS_S3__SECRET_ACCESS_KEY"],
            "SCALEOPS_COST__ALLOWED_ACCOUNTS": f'["{ACCOUNT}"]',
            "SCALEOPS_COST__KUBECONFIG": str(kubeconfig),
        }
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        e = Estate(sandbox_env, region, cluster, kubeconfig, policies)
        purge(e.ec2, e.elb, e.s3)
        yield e


def run(**params: Any) -> CostReport:
    state = cost_cleanup(**params, return_state=True)
    report = report_of(state)
    assert isinstance(report, CostReport), f"the run ended {state.name}: {state.message}"
    return report


def states(report: CostReport) -> dict[str, str]:
    return {f.id: f.state for f in report.findings}


def audit_rows(resource_id: str) -> list[tuple[str, str]]:
    with psycopg.connect(postgres_dsn(load_settings())) as conn:
        rows = conn.execute(
            "select policy, action from scaleops_cost_audit where resource_id = %s order by id",
            (resource_id,),
        ).fetchall()
    return [(r[0], r[1]) for r in rows]


def finished_job(cluster: Cluster, name: str, namespace: str = "ci") -> None:
    done = NOW.strftime("%Y-%m-%dT%H:%M:%SZ")
    cluster.create(
        "batch",
        "jobs",
        {
            "metadata": {"name": name, "namespace": namespace},
            "status": {"completionTime": done, "conditions": [{"type": "Complete", "status": "True"}]},
        },
    )


def test_ebs_and_jobs_dry_run_mark_grace_act(estate: Estate) -> None:
    idle = estate.volume(100)
    keep = estate.volume(5, **{PROTECT_KEY: "true"})
    instance = estate.ec2.run_instances(
        ImageId="ami-12c6146b", MinCount=1, MaxCount=1, Placement={"AvailabilityZone": f"{estate.region}a"}
    )["Instances"][0]
    used = estate.volume(20)
    estate.ec2.attach_volume(VolumeId=used, InstanceId=instance["InstanceId"], Device="/dev/sdf")
    finished_job(estate.cluster, "migrate-1")
    finished_job(estate.cluster, "kube-job", "kube-system")

    before = estate.describe()
    dry = run(as_of=later(8))
    assert dry.dry_run and dry.ok
    assert states(dry) == {
        idle: "would-mark",
        keep: "protected",
        "ci/migrate-1": "would-mark",
        "kube-system/kube-job": "protected",
    }
    assert estate.describe() == before  # the dry run changed nothing, in AWS or in the cluster
    assert dry.monthly_savings_usd.found == pytest.approx(100 * 0.08)  # gp3 at the default region price

    marked = run(as_of=later(8), dry_run=False)
    assert states(marked)[idle] == "marked" and marked.outcome() == "marked"
    due = (NOW + timedelta(days=15)).date().isoformat()
    assert estate.tags(idle)[MARK_KEY] == f"delete@{due}"
    assert MARK_KEY not in estate.tags(keep) and MARK_KEY not in estate.tags(used)
    assert estate.cluster.get("batch", "jobs", "ci", "migrate-1")["metadata"]["annotations"][MARK_KEY] == (
        f"delete@{(NOW + timedelta(days=9)).date().isoformat()}"
    )

    waiting = run(as_of=later(12), dry_run=False)  # inside the volume's grace, past the job's
    assert states(waiting)[idle] == "marked" and states(waiting)["ci/migrate-1"] == "acted"
    assert estate.ec2.describe_volumes(Filters=[{"Name": "volume-id", "Values": [idle]}])["Volumes"]

    acted = run(as_of=later(16), dry_run=False)
    assert states(acted)[idle] == "acted" and acted.outcome() == "cleaned"
    assert not estate.ec2.describe_volumes(Filters=[{"Name": "volume-id", "Values": [idle]}])["Volumes"]
    (snapshot,) = estate.ec2.describe_snapshots(
        Filters=[{"Name": "tag:scaleops/cleanup-of", "Values": [idle]}]
    )["Snapshots"]
    assert snapshot["VolumeId"] == idle  # snapshotted before deletion
    assert acted.monthly_savings_usd.acted == pytest.approx(8.0)
    assert {keep, used} <= {v["VolumeId"] for v in estate.ec2.describe_volumes()["Volumes"]}
    assert audit_rows(idle)[-2:] == [("ebs-unattached", "mark"), ("ebs-unattached", "delete")]
    assert ("ebs-unattached", "skip-protected") in audit_rows(keep)


def test_back_in_use_is_unmarked(estate: Estate) -> None:
    volume = estate.volume()
    run(as_of=later(8), dry_run=False, policies=["ebs-unattached"])
    assert MARK_KEY in estate.tags(volume)
    instance = estate.ec2.run_instances(
        ImageId="ami-12c6146b", MinCount=1, MaxCount=1, Placement={"AvailabilityZone": f"{estate.region}a"}
    )["Instances"][0]
    estate.ec2.attach_volume(VolumeId=volume, InstanceId=instance["InstanceId"], Device="/dev/sdf")
    report = run(as_of=later(30), dry_run=False, policies=["ebs-unattached"])
    assert states(report)[volume] == "back-in-use"
    assert report.policies[0].unmarked == 1 and report.policies[0].acted == 0
    assert MARK_KEY not in estate.tags(volume)
    assert audit_rows(volume)[-1] == ("ebs-unattached", "unmark")


def test_the_action_cap_stops_the_run_and_says_so(estate: Estate) -> None:
    volumes = [estate.volume() for _ in range(5)]
    run(as_of=later(8), dry_run=False, policies=["ebs-unattached"])
    report = run(as_of=later(20), dry_run=False, policies=["ebs-unattached"], max_actions=2)
    assert not report.ok and report.stopped_by_max_actions
    assert sorted(states(report)[v] for v in volumes) == ["acted", "acted", "due", "due", "due"]
    assert any("max_actions=2" in p for p in report.problems)
    assert (
        len(estate.ec2.describe_volumes(Filters=[{"Name": "volume-id", "Values": volumes}])["Volumes"]) == 3
    )


def test_a_volume_deleted_between_filter_and_action_is_skipped(estate: Estate) -> None:
    gone, stays = estate.volume(), estate.volume()
    policy = {p.name: p for p in load_policies(estate.policies)}["ebs-unattached"]

    class Racing(EbsVolume):
        def refresh(self, items):  # type: ignore[no-untyped-def]
            estate.ec2.delete_volume(VolumeId=gone)  # someone else deletes it first
            return super().refresh(items)

    resource = Racing(estate.scope, load_prices())
    run_policy(resource, policy, NOW + timedelta(days=8), dry_run=False, remaining=10)
    result = run_policy(resource, policy, NOW + timedelta(days=16), dry_run=False, remaining=10)
    assert {f.id: f.state for f in result.findings} == {gone: "changed", stays: "acted"}
    assert result.stats.skipped_changed == 1 and not result.errors


def test_account_guard_refuses_unlisted_accounts_and_prod_aliases(
    estate: Estate, monkeypatch: pytest.MonkeyPatch
) -> None:
    volume = estate.volume()
    iam = estate.scope.client("iam")
    monkeypatch.setenv("SCALEOPS_COST__ALLOWED_ACCOUNTS", '["000000000000"]')
    report = run(as_of=later(30), dry_run=False, policies=["ebs-unattached"])
    assert not report.ok and "not in SCALEOPS_COST__ALLOWED_ACCOUNTS" in report.problems[0]
    assert MARK_KEY not in estate.tags(volume)
    monkeypatch.setenv("SCALEOPS_COST__ALLOWED_ACCOUNTS", f'["{ACCOUNT}"]')
    iam.create_account_alias(AccountAlias="acme-prod")
    try:
        report = run(as_of=later(30), dry_run=False, policies=["ebs-unattached"])
        assert not report.ok and "blocked term 'prod'" in report.problems[0]
        assert MARK_KEY not in estate.tags(volume) and report.accounts == {ACCOUNT: ["acme-prod"]}
        monkeypatch.setenv("SCALEOPS_COST__ALLOWED_ALIASES", '["acme-prod"]')
        report = run(as_of=later(30), dry_run=False, policies=["ebs-unattached"])
        assert report.ok and states(report)[volume] == "marked"
    finally:
        iam.delete_account_alias(AccountAlias="acme-prod")


def test_a_malformed_policy_file_fails_the_run_before_any_api_call(
    estate: Estate, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    bad = tmp_path / "bad.yml"
    bad.write_text(
        yaml.safe_dump(
            {
                "policies": [
                    {
                        "name": "x",
                        "resource": "aws.ebs-volume",
                        "action": "delete",
                        "grace": "a week",
                        "filters": [{"unattached": True}],
                    }
                ]
            }
        )
    )
    monkeypatch.setenv("SCALEOPS_COST__POLICIES", str(bad))
    monkeypatch.setenv("SCALEOPS_COST__AWS_ENDPOINT_URL", "http://127.0.0.1:9")  # any call would fail loudly
    state = cost_cleanup(as_of=later(1), return_state=True)
    assert state.is_failed() and report_of(state) is None
    assert "policy 'x', field grace: not a duration" in str(state.message)


def test_every_aws_policy_finds_its_resources(
    estate: Estate, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    names = [
        "ebs-unattached",
        "ebs-snapshot-orphaned",
        "eip-unassociated",
        "ec2-stopped",
        "ami-unused",
        "elb-no-targets",
        "s3-incomplete-multipart",
    ]
    monkeypatch.setenv("SCALEOPS_COST__POLICIES", str(write_policies(tmp_path / "aws.yml", names)))
    ec2 = estate.ec2
    idle = estate.volume()
    gone = estate.volume()
    orphan = ec2.create_snapshot(VolumeId=gone)["SnapshotId"]
    ec2.delete_volume(VolumeId=gone)
    kept_volume = estate.volume()
    live = ec2.create_snapshot(VolumeId=kept_volume)["SnapshotId"]  # its volume exists
    address = ec2.allocate_address(Domain="vpc")["AllocationId"]
    running = ec2.run_instances(ImageId="ami-12c6146b", MinCount=1, MaxCount=1)["Instances"][0]["InstanceId"]
    stopped = ec2.run_instances(ImageId="ami-12c6146b", MinCount=1, MaxCount=1)["Instances"][0]["InstanceId"]
    ec2.stop_instances(InstanceIds=[stopped])
    used_image = ec2.create_image(InstanceId=running, Name=f"used-{uuid.uuid4().hex[:6]}")["ImageId"]
    unused_image = ec2.create_image(InstanceId=running, Name=f"unused-{uuid.uuid4().hex[:6]}")["ImageId"]
    ec2.run_instances(ImageId=used_image, MinCount=1, MaxCount=1)
    vpc = ec2.describe_vpcs()["Vpcs"][0]["VpcId"]
    subnets = [
        s["SubnetId"] for s in ec2.describe_subnets(Filters=[{"Name": "vpc-id", "Values": [vpc]}])["Subnets"]
    ]
    lb = estate.elb.create_load_balancer(Name=f"idle-{uuid.uuid4().hex[:6]}", Subnets=subnets[:2])[
        "LoadBalancers"
    ][0]
    bucket = f"cost-test-{uuid.uuid4().hex[:10]}"
    estate.s3.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": estate.region})
    upload = estate.s3.create_multipart_upload(Bucket=bucket, Key="half/done.bin")["UploadId"]

    report = run(as_of=later(100))
    by_policy: dict[str, set[str]] = {}
    for f in report.findings:
        by_policy.setdefault(f.policy, set()).add(f.id)
    assert idle in by_policy["ebs-unattached"] and kept_volume in by_policy["ebs-unattached"]
    assert by_policy["ebs-snapshot-orphaned"] >= {orphan} and live not in by_policy["ebs-snapshot-orphaned"]
    assert by_policy["eip-unassociated"] == {address}
    assert by_policy["ec2-stopped"] == {stopped}
    assert unused_image in by_policy["ami-unused"] and used_image not in by_policy["ami-unused"]
    assert by_policy["elb-no-targets"] == {lb["LoadBalancerArn"]}
    assert by_policy["s3-incomplete-multipart"] == {f"s3://{bucket}/half/done.bin?uploadId={upload}"}
    assert report.monthly_savings_usd.found > 0


def test_the_sandbox_estate_dry_run_finds_every_policy_and_changes_nothing(
    sandbox_env: dict[str, str],
) -> None:
    """What `scaleops demo` runs: the sandbox's own settings, its seeded AWS estate and cluster."""
    assert sandbox_env["SCALEOPS_COST__KUBECONFIG"] and sandbox_env["SCALEOPS_COST__REGIONS"]
    from scaleops.sandbox.cost_estate import ESTATE_REGION

    settings = load_settings()
    scope = AwsScope(
        ESTATE_REGION,
        settings.cost.aws_endpoint_url,
        sandbox_env["SCALEOPS_COST__ACCESS_KEY_ID"],
        sandbox_env["SCALEOPS_COST__SECRET_ACCESS_KEY"],
    )
    ec2 = scope.client("ec2")

    def describe() -> Any:
        return (
            sorted((v["VolumeId"], str(v.get("Tags"))) for v in ec2.describe_volumes()["Volumes"]),
            sorted(a["AllocationId"] for a in ec2.describe_addresses()["Addresses"]),
        )

    before = describe()
    report = run(as_of=later(100))
    assert report.dry_run and report.ok, report.problems
    by_policy = {p.name: p.found for p in report.policies}
    assert all(by_policy.values()) and len(by_policy) == 12, by_policy
    assert {"protected", "would-mark"} <= {f.state for f in report.findings}
    assert describe() == before
