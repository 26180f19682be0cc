"""Benchmark for duty cost-cleanup, beside Cloud Custodian.

Seeds an estate in one fresh moto region of the sandbox with something found, something in use and
something protected for every AWS policy the project ships (`deployments/cost-policies.yml`): instances
(half stopped), unattached volumes, snapshots (of live and of deleted volumes, some used by AMIs), AMIs
(half with an instance), Elastic IPs, load balancers (with a target, an empty target group, none) and
incomplete multipart uploads. Then, against the same state, dry run, interleaved for `--rounds` rounds:

- Cloud Custodian (`custodian run --dryrun`, c7n in its own venv, default /tmp/c7n; reaches moto through
  AWS_ENDPOINT_URL) with the same policies written in its language (CUSTODIAN);
- `scaleops run cost-cleanup` with the shipped AWS policies (a whole flow run on the sandbox's Prefect
  server, as an operator runs it), and the duty's dry-run evaluation of the region alone
  (`dry_run_scope`, what its task runs, without Prefect).

It prints, per policy, whether the findings are the same set of resource ids both ways (the multipart
policy, which Custodian cannot express, against a direct ListMultipartUploads), the time ratio
Custodian / ours (> 1: ours is faster) per round and its median. Age thresholds are 0 on both sides
(moto stamps "now", Custodian reads the real clock): our policies get `0s` for every `age`/`state_age`,
Custodian's carry none, `state-age` with `days: 0, op: ge`, and it runs with `--cache-period 0` (its
describe cache would otherwise answer from an earlier estate).

Run: `.venv/bin/python -m bench.cost_cleanup [--resources 100 5000] [--rounds 3] [--c7n PATH]`
(needs `scaleops sandbox up`; --c7n defaults to /tmp/c7n/bin/custodian, which the bench installs when
missing: `python -m venv /tmp/c7n && /tmp/c7n/bin/pip install c7n==0.9.53`).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from scaleops.core.settings import Settings
from scaleops.sandbox.manager import Sandbox
from tasks.cost.aws import AwsScope
from tasks.cost.policy import parse_policies
from tasks.cost.prices import load_prices
from tasks.cost.steps import dry_run_scope

# moto keeps terminated instances listed for ever, so each estate gets a region nobody used before
# (not the sandbox's, the cost_estate service's or the integration tests')
FRESH_REGIONS = (
    "eu-south-1",
    "eu-south-2",
    "me-south-1",
    "me-central-1",
    "af-south-1",
    "ap-east-1",
    "ap-south-2",
    "ap-southeast-1",
    "ap-southeast-3",
    "ap-southeast-4",
    "ap-northeast-2",
    "ca-west-1",
    "eu-central-2",
    "eu-north-1",
    "il-central-1",
    "mx-central-1",
)
REGION = FRESH_REGIONS[0]  # set per estate by pick_region()
ACCOUNT = "123456789012"
SHIPPED = Path(__file__).resolve().parents[1] / "deployments" / "cost-policies.yml"
UNPROTECTED = {"tag:scaleops/protect": "absent"}  # ours reports protected ones apart, never as due
# Each shipped AWS policy in Custodian's language, with the resource id key of its output. Custodian has
# no resource for S3 incomplete multipart uploads (only a bucket lifecycle rule that aborts them after N
# days, without listing them), so that policy is compared with a direct ListMultipartUploads instead.
CUSTODIAN: dict[str, tuple[dict[str, Any], str]] = {
    "ebs-unattached": (
        {"resource": "aws.ebs", "filters": [{"type": "value", "key": "Attachments", "value": "empty"}]},
        "VolumeId",
    ),
    "ebs-snapshot-orphaned": (
        {
            "resource": "aws.ebs-snapshot",
            "filters": [
                {"type": "volume", "key": "VolumeId", "value": "absent"},  # its volume is gone
                {"type": "unused", "value": True},  # no AMI (nor ASG launch config/template) uses it
            ],
        },
        "SnapshotId",
    ),
    "eip-unassociated": (
        {"resource": "aws.network-addr", "filters": [{"AssociationId": "absent"}]},
        "AllocationId",
    ),
    "ec2-stopped": (
        {
            "resource": "aws.ec2",
            "filters": [{"State.Name": "stopped"}, {"type": "state-age", "days": 0, "op": "ge"}],
        },
        "InstanceId",
    ),
    "ami-unused": ({"resource": "aws.ami", "filters": [{"type": "unused", "value": True}]}, "ImageId"),
    "elb-no-targets": (
        {
            "resource": "aws.app-elb",
            "filters": [{"type": "target-group", "key": "[].TargetHealthDescriptions[]", "value": "empty"}],
        },
        "LoadBalancerArn",
    ),
}
NOT_IN_CUSTODIAN = {"s3-incomplete-multipart"}  # compared with a direct listing (reference_findings)


def zero_ages(policy: dict[str, Any]) -> dict[str, Any]:
    """The policy with every age threshold 0 (moto stamps "now"; Custodian reads the real clock)."""
    filters = [
        {k: ("0s" if k in ("age", "state_age") else v) for k, v in f.items()} for f in policy["filters"]
    ]
    return {**policy, "filters": filters}


def our_policies() -> dict[str, Any]:
    """Every AWS policy the project ships (deployments/cost-policies.yml), ages 0."""
    shipped = yaml.safe_load(SHIPPED.read_text())["policies"]
    policies = [zero_ages(p) for p in shipped if str(p["resource"]).startswith("aws.")]
    missing = sorted({p["name"] for p in policies} - set(CUSTODIAN) - NOT_IN_CUSTODIAN)
    if missing:
        raise SystemExit(f"no Custodian twin for shipped policies {missing}: add them to CUSTODIAN")
    return {"policies": policies}


def custodian_policies() -> dict[str, Any]:
    return {
        "policies": [
            {"name": name, **spec, "filters": [*spec["filters"], UNPROTECTED]}
            for name, (spec, _key) in CUSTODIAN.items()
        ]
    }


def pick_region(endpoint: str, key: str, secret: str) -> str:
    """The first region of FRESH_REGIONS whose EC2 holds no instance at all (terminated ones included)."""
    global REGION
    for region in FRESH_REGIONS:
        if not AwsScope(region, endpoint, key, secret).client("ec2").describe_instances()["Reservations"]:
            REGION = region
            return region
    raise SystemExit("every region of FRESH_REGIONS was used: restart the sandbox's s3 (moto) service")


def bucket() -> str:
    return f"bench-cost-multipart-{REGION}"  # bucket names are global: one per region


def purge(scope: AwsScope) -> None:
    """Remove what seed() made (moto keeps terminated instances listed for ever: a fresh region each time)."""
    ec2, elb, s3 = scope.client("ec2"), scope.client("elbv2"), scope.client("s3")
    for lb in elb.describe_load_balancers()["LoadBalancers"]:
        for listener in elb.describe_listeners(LoadBalancerArn=lb["LoadBalancerArn"])["Listeners"]:
            elb.delete_listener(ListenerArn=listener["ListenerArn"])
        elb.delete_load_balancer(LoadBalancerArn=lb["LoadBalancerArn"])
    for group in elb.describe_target_groups()["TargetGroups"]:
        try:
            elb.delete_target_group(TargetGroupArn=group["TargetGroupArn"])
        except Exception as exc:  # moto 5.2 keeps some listener references after their deletion
            if "ResourceInUse" not in str(exc):
                raise
    ids = [i["InstanceId"] for r in ec2.describe_instances()["Reservations"] for i in r["Instances"]]
    for start in range(0, len(ids), 500):
        ec2.terminate_instances(InstanceIds=ids[start : start + 500])
    with ThreadPoolExecutor(8) as pool:
        images = [i["ImageId"] for i in ec2.describe_images(Owners=["self"])["Images"]]
        list(pool.map(lambda i: ec2.deregister_image(ImageId=i), images))
        snaps = [s["SnapshotId"] for s in ec2.describe_snapshots(OwnerIds=["self"])["Snapshots"]]
        list(pool.map(lambda s: ec2.delete_snapshot(SnapshotId=s), snaps))
        list(
            pool.map(
                lambda a: ec2.release_address(AllocationId=a["AllocationId"]),
                ec2.describe_addresses()["Addresses"],
            )
        )
        vols = [v["VolumeId"] for v in ec2.describe_volumes()["Volumes"] if not v.get("Attachments")]
        list(pool.map(lambda v: ec2.delete_volume(VolumeId=v), vols))
    try:
        uploads = s3.list_multipart_uploads(Bucket=bucket()).get("Uploads") or []
    except Exception as exc:
        if "NoSuchBucket" not in str(exc):
            raise
        return
    for upload in uploads:
        s3.abort_multipart_upload(Bucket=bucket(), Key=upload["Key"], UploadId=upload["UploadId"])
    s3.delete_bucket(Bucket=bucket())


def seed(scope: AwsScope, total: int) -> dict[str, int]:
    """~total resources, something found and something in use for every policy, one in eight or ten
    protected: 15% instances (half stopped, each with its attached root volume; some launched from the
    seeded AMIs), 25% unattached volumes, 15% snapshots (a third of existing volumes, the rest of
    volumes since deleted, some of those used by an AMI), 5% AMIs (half with an instance), 20% Elastic
    IPs (a tenth associated), 5% load balancers (a third with a target, a third with an empty target
    group, a third with none), 15% incomplete multipart uploads."""
    ec2, elb, s3 = scope.client("ec2"), scope.client("elbv2"), scope.client("s3")
    zone = f"{REGION}a"
    protect = [{"Key": "scaleops/protect", "Value": "true"}]
    n_instances, n_volumes, n_snapshots = max(2, total * 15 // 100), total // 4, max(3, total * 15 // 100)
    n_images, n_addresses, n_lbs = max(2, total // 20), total // 5, max(3, total // 20)
    n_uploads = max(1, total * 15 // 100)

    launched: list[str] = []
    for start in range(0, n_instances, 100):
        count = min(100, n_instances - start)
        batch = ec2.run_instances(
            ImageId="ami-12c6146b", MinCount=count, MaxCount=count, Placement={"AvailabilityZone": zone}
        )["Instances"]
        launched += [i["InstanceId"] for i in batch]
    stopped, running = launched[: len(launched) // 2], launched[len(launched) // 2 :]
    for start in range(0, len(stopped), 500):
        ec2.stop_instances(InstanceIds=stopped[start : start + 500])

    def volume(i: int) -> str:
        kwargs: dict[str, Any] = {"AvailabilityZone": zone, "Size": 10 + i % 90, "VolumeType": "gp3"}
        if i % 8 == 0:
            kwargs["TagSpecifications"] = [{"ResourceType": "volume", "Tags": protect}]
        return str(ec2.create_volume(**kwargs)["VolumeId"])

    def snapshot(i: int) -> str:
        # a third of a volume that still exists (in use), the rest of a volume deleted below
        source = volumes[i % len(volumes)] if i % 3 == 0 and volumes else volume(i + 1)
        kwargs: dict[str, Any] = {"VolumeId": source}
        if i % 10 == 1:
            kwargs["TagSpecifications"] = [{"ResourceType": "snapshot", "Tags": protect}]
        snap = str(ec2.create_snapshot(**kwargs)["SnapshotId"])
        if i % 3 or not volumes:
            ec2.delete_volume(VolumeId=source)
        return snap

    def image(i: int) -> str:
        mapping = {"DeviceName": "/dev/sda1", "Ebs": {"SnapshotId": orphans[i]}} if i < len(orphans) else None
        made = str(
            ec2.register_image(
                Name=f"bench-image-{i}",
                RootDeviceName="/dev/sda1",
                BlockDeviceMappings=[mapping] if mapping else [],
            )["ImageId"]
        )
        if i % 10 == 3:
            ec2.create_tags(Resources=[made], Tags=protect)
        if i % 2 == 0:  # an instance runs from it: in use
            ec2.run_instances(ImageId=made, MinCount=1, MaxCount=1, Placement={"AvailabilityZone": zone})
        return made

    def address(i: int) -> None:
        allocation = ec2.allocate_address(Domain="vpc")["AllocationId"]
        if i % 10 == 0 and running:
            ec2.associate_address(AllocationId=allocation, InstanceId=running[i % len(running)])

    vpc = ec2.describe_vpcs()["Vpcs"][0]["VpcId"]
    subnets = [
        s["SubnetId"] for s in ec2.describe_subnets(Filters=[{"Name": "vpc-id", "Values": [vpc]}])["Subnets"]
    ][:2]

    def balancer(i: int) -> None:
        extra: dict[str, Any] = {"Tags": protect} if i % 10 == 4 else {}
        made = elb.create_load_balancer(Name=f"bench-lb-{i}", Subnets=subnets, **extra)
        arn = made["LoadBalancers"][0]["LoadBalancerArn"]
        if i % 3 == 2:  # no target group at all
            return
        group = elb.create_target_group(
            Name=f"bench-tg-{i}", Protocol="HTTP", Port=80, VpcId=vpc, TargetType="instance"
        )["TargetGroups"][0]["TargetGroupArn"]
        forward = [{"Type": "forward", "TargetGroupArn": group}]
        elb.create_listener(LoadBalancerArn=arn, Protocol="HTTP", Port=80, DefaultActions=forward)
        if i % 3 == 0 and running:  # a registered target: in use
            elb.register_targets(TargetGroupArn=group, Targets=[{"Id": running[i % len(running)]}])

    s3.create_bucket(Bucket=bucket(), CreateBucketConfiguration={"LocationConstraint": REGION})
    with ThreadPoolExecutor(8) as pool:
        volumes = list(pool.map(volume, range(n_volumes)))
        snaps = list(pool.map(snapshot, range(n_snapshots)))
        orphans = [s for i, s in enumerate(snaps) if i % 3][: n_images // 2]  # some orphans an AMI uses
        list(pool.map(image, range(n_images)))
        list(pool.map(address, range(n_addresses)))
        list(
            pool.map(lambda i: s3.create_multipart_upload(Bucket=bucket(), Key=f"part/{i}"), range(n_uploads))
        )
    for i in range(n_lbs):  # one at a time: moto's ELBv2 is not thread-safe (CreateTargetGroup: HTTP 500)
        balancer(i)
    return {
        "instances": len(launched) + (n_images + 1) // 2,
        "volumes": n_volumes,
        "snapshots": n_snapshots,
        "images": n_images,
        "addresses": n_addresses,
        "balancers": n_lbs,
        "uploads": n_uploads,
    }


def custodian(binary: str, env: dict[str, str], workdir: Path) -> tuple[float, dict[str, set[str]]]:
    policy_file = workdir / "custodian.yml"
    policy_file.write_text(yaml.safe_dump(custodian_policies()))
    out = workdir / "c7n-out"
    started = time.perf_counter()
    done = subprocess.run(
        [
            binary,
            "run",
            "--dryrun",
            "--cache-period",
            "0",
            "-s",
            str(out),
            "--region",
            REGION,
            str(policy_file),
        ],
        env=env,
        capture_output=True,
        text=True,
    )
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"custodian exited {done.returncode}: {done.stderr[-2000:]}")
    found = {}
    for name, (_spec, key) in CUSTODIAN.items():
        resources = json.loads((out / name / "resources.json").read_text())
        found[name] = {r[key] for r in resources}
    return seconds, found


def reference_findings(scope: AwsScope) -> dict[str, set[str]]:
    """For the policies Custodian cannot express: the answer read directly from the API."""
    s3 = scope.client("s3")
    uploads = s3.list_multipart_uploads(Bucket=bucket()).get("Uploads") or []
    return {
        "s3-incomplete-multipart": {f"s3://{bucket()}/{u['Key']}?uploadId={u['UploadId']}" for u in uploads}
    }


def ours_in_process(scope: AwsScope) -> tuple[float, dict[str, set[str]]]:
    """The duty's dry-run evaluation of one region (`dry_run_scope`, what its task runs), no Prefect."""
    found: dict[str, set[str]] = {}
    started = time.perf_counter()
    outcomes = dry_run_scope(parse_policies(our_policies()), scope, datetime.now(UTC), load_prices())
    seconds = time.perf_counter() - started
    for outcome in outcomes:
        if outcome.result is None:
            raise RuntimeError(f"{outcome.policy.name}: {outcome.error}")
        found[outcome.policy.name] = {f.id for f in outcome.result.findings if f.state != "protected"}
    return seconds, found


def ours_flow(env: dict[str, str], workdir: Path) -> tuple[float, dict[str, set[str]]]:
    policy_file = workdir / "ours.yml"
    policy_file.write_text(yaml.safe_dump(our_policies()))
    run_env = {**env, "SCALEOPS_COST__POLICIES": str(policy_file)}
    started = time.perf_counter()
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "scaleops.cli",
            "run",
            "cost-cleanup",
            "--json",
            "-p",
            f"as_of={datetime.now(UTC).isoformat()}",
        ],
        env=run_env,
        capture_output=True,
        text=True,
    )
    seconds = time.perf_counter() - started
    if done.returncode not in (0, 1):
        raise RuntimeError(f"scaleops run cost-cleanup exited {done.returncode}: {done.stderr[-2000:]}")
    report = json.loads(done.stdout)
    found: dict[str, set[str]] = {p["name"]: set() for p in report["policies"]}
    for f in report["findings"]:
        if f["state"] != "protected":
            found[f["policy"]].add(f["id"])
    return seconds, found


def compare(
    label: str, ours: dict[str, set[str]], theirs: dict[str, set[str]], reference: dict[str, set[str]]
) -> bool:
    same = True
    for name in [*CUSTODIAN, *sorted(NOT_IN_CUSTODIAN)]:
        against, who = (theirs, "Custodian") if name in CUSTODIAN else (reference, "direct listing")
        a, b = ours.get(name, set()), against.get(name, set())
        verdict = "same" if a == b else f"DIFFERENT: only ours {len(a - b)}, only {who} {len(b - a)}"
        print(f"    {label} {name}: {len(a)} vs {who} {len(b)}: {verdict}")
        same = same and a == b
    return same


DEFAULT_C7N = "/tmp/c7n/bin/custodian"  # noqa: S108 - where FIELD-NOTES puts it
C7N_VERSION = "0.9.53"  # the version the results in docs/benchmarks.md were measured with


def install_c7n(venv: Path) -> None:
    """Cloud Custodian in a virtualenv of its own (its pins never touch the project's), as `make bench`
    must install what it needs on a fresh machine."""
    print(f"installing c7n=={C7N_VERSION} into {venv} (once)", flush=True)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", f"c7n=={C7N_VERSION}"]
    subprocess.run(pip, check=True)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="bench.cost_cleanup", description=__doc__.splitlines()[0])
    parser.add_argument("--resources", type=int, nargs="+", default=[100, 5000])
    parser.add_argument("--c7n", default=DEFAULT_C7N, help="custodian (installed when missing)")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    if not Path(args.c7n).exists() and args.c7n == DEFAULT_C7N:
        install_c7n(Path(DEFAULT_C7N).parents[1])
    if not Path(args.c7n).exists():
        print(f"no Cloud Custodian at {args.c7n}: python -m venv /tmp/c7n && /tmp/c7n/bin/pip install c7n")
        return 2
    sandbox_env = Sandbox(Settings()).env()
    endpoint = sandbox_env["SCALEOPS_S3__ENDPOINT_URL"]
    key, secret = sandbox_env["SCALEOPS_S3__ACCESS_KEY_ID"], sandbox_env["SCALEOPS_S3__SECRET_ACCESS_KEY"]
    base = {k: v for k, v in os.environ.items() if not k.startswith(("SCALEOPS_", "AWS_"))}
    c7n_env = {
        **base,
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": key,
        "AWS_SECRET_ACCESS_KEY": secret,
        "AWS_DEFAULT_REGION": REGION,
    }
    ours_env = {
        **base,
        **sandbox_env,
        "SCALEOPS_COST__REGIONS": f'["{REGION}"]',
        "SCALEOPS_COST__AWS_ENDPOINT_URL": endpoint,
        "SCALEOPS_COST__ACCESS_KEY_ID": key,
        "SCALEOPS_COST__SECRET_ACCESS_KEY": secret,
        "SCALEOPS_COST__ALLOWED_ACCOUNTS": f'["{ACCOUNT}"]',
    }
    ok = True
    for total in args.resources:
        scope = AwsScope(pick_region(endpoint, key, secret), endpoint, key, secret)
        c7n_env["AWS_DEFAULT_REGION"] = REGION
        ours_env["SCALEOPS_COST__REGIONS"] = f'["{REGION}"]'
        purge(scope)
        started = time.perf_counter()
        counts = seed(scope, total)
        print(
            f"estate of ~{total} resources in {REGION} ({counts}), "
            f"seeded in {time.perf_counter() - started:.1f} s",
            flush=True,
        )
        reference = reference_findings(scope)
        ratios: list[tuple[float, float]] = []
        with tempfile.TemporaryDirectory() as tmp:
            for round_ in range(args.rounds):
                # interleaved, the order alternating: the machine is shared, its load swings
                if round_ % 2:
                    flow_s, flow = ours_flow(ours_env, Path(tmp))
                    theirs_s, theirs = custodian(args.c7n, c7n_env, Path(tmp))
                else:
                    theirs_s, theirs = custodian(args.c7n, c7n_env, Path(tmp))
                    flow_s, flow = ours_flow(ours_env, Path(tmp))
                inproc_s, inproc = ours_in_process(scope)
                ratios.append((theirs_s / flow_s, theirs_s / inproc_s))
                print(
                    f"  round {round_ + 1} (load {os.getloadavg()[0]:.1f}): Custodian {theirs_s:.2f} s; "
                    f"scaleops run cost-cleanup {flow_s:.2f} s "
                    f"(ratio {theirs_s / flow_s:.2f}x); policy evaluation in process {inproc_s:.2f} s "
                    f"(ratio {theirs_s / inproc_s:.2f}x)",
                    flush=True,
                )
                same = compare("flow", flow, theirs, reference)
                ok = compare("in-process", inproc, theirs, reference) and same and ok
        whole = sorted(r[0] for r in ratios)
        alone = sorted(r[1] for r in ratios)
        print(
            f"  ~{total}: median ratio of {len(ratios)} rounds: whole flow run {whole[len(whole) // 2]:.2f}x "
            f"({whole[0]:.2f}-{whole[-1]:.2f}), policy evaluation {alone[len(alone) // 2]:.2f}x "
            f"({alone[0]:.2f}-{alone[-1]:.2f})",
            flush=True,
        )
        try:
            purge(scope)
        except Exception as exc:  # the next estate takes a fresh region anyway
            print(f"  could not remove the estate in {REGION}: {type(exc).__name__}: {exc}", flush=True)
    print("findings identical per policy, both ways" if ok else "FINDINGS DIFFER")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
