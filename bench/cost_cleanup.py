"""Benchmark for duty cost-cleanup, beside Cloud Custodian.

Seeds an estate in one moto region of the sandbox (unattached volumes, protected ones, running and
stopped instances with their root volumes, Elastic IPs of which some are associated), then runs, in one
go and against the same state, dry run:

- Cloud Custodian (`custodian run --dryrun`, c7n in its own venv, default /tmp/c7n; reaches moto through
  AWS_ENDPOINT_URL) with the same policies written in its language;
- `scaleops run cost-cleanup` (a whole flow run on the sandbox's Prefect server, as an operator runs it),
  and the duty's policy evaluation alone (`run_policy` per policy, in process).

It prints, per policy, whether the findings are the same set of resource ids both ways, and the time
ratio Custodian / ours (> 1: ours is faster). Age thresholds are 0 on both sides (moto stamps "now",
Custodian reads the real clock): our policies say `age: 0s`/`state_age: 0s`, Custodian's carry none,
`state-age` with `days: 0, op: ge`, and runs with `--cache-period 0` (its
describe cache would otherwise answer from an earlier estate).

Run: `.venv/bin/python -m bench cost_cleanup [--resources 5000] [--c7n /tmp/c7n/bin/custodian]`
(needs `scaleops sandbox up`; install c7n with `python -m venv /tmp/c7n && /tmp/c7n/bin/pip install c7n`).
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
from tasks.cost.aws import AwsScope, EbsVolume, Ec2Instance, ElasticIp
from tasks.cost.lifecycle import run_policy
from tasks.cost.policy import parse_policies
from tasks.cost.prices import load_prices

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
OURS = {
    "policies": [
        {
            "name": "ebs-unattached",
            "resource": "aws.ebs-volume",
            "action": "delete",
            "grace": "7d",
            "filters": [{"unattached": True}, {"age": "0s"}],
        },
        {
            "name": "eip-unassociated",
            "resource": "aws.eip",
            "action": "release",
            "grace": "3d",
            "filters": [{"unattached": True}],
        },
        {
            "name": "ec2-stopped",
            "resource": "aws.ec2-instance",
            "action": "terminate",
            "grace": "7d",
            "filters": [{"state": "stopped"}, {"state_age": "0s"}],
        },
    ]
}
UNPROTECTED = {"tag:scaleops/protect": "absent"}  # ours reports protected ones apart, never as due
CUSTODIAN = {
    "policies": [
        {
            "name": "ebs-unattached",
            "resource": "aws.ebs",
            "filters": [{"type": "value", "key": "Attachments", "value": "empty"}, UNPROTECTED],
        },
        {
            "name": "eip-unassociated",
            "resource": "aws.network-addr",
            "filters": [{"AssociationId": "absent"}, UNPROTECTED],
        },
        {
            "name": "ec2-stopped",
            "resource": "aws.ec2",
            "filters": [{"State.Name": "stopped"}, {"type": "state-age", "days": 0, "op": "ge"}, UNPROTECTED],
        },
    ]
}
ID_KEY = {"ebs-unattached": "VolumeId", "eip-unassociated": "AllocationId", "ec2-stopped": "InstanceId"}


def pick_region(endpoint: str, key: str, secret: str) -> str:
    """The first region of FRESH_REGIONS whose EC2 holds no instance at all (terminated ones included)."""
    global REGION
    for region in FRESH_REGIONS:
        if not AwsScope(region, endpoint, key, secret).client("ec2").describe_instances()["Reservations"]:
            REGION = region
            return region
    raise SystemExit("every region of FRESH_REGIONS was used: restart the sandbox's s3 (moto) service")


def purge(scope: AwsScope) -> None:
    ec2 = scope.client("ec2")
    ids = [i["InstanceId"] for r in ec2.describe_instances()["Reservations"] for i in r["Instances"]]
    for start in range(0, len(ids), 500):
        ec2.terminate_instances(InstanceIds=ids[start : start + 500])
    with ThreadPoolExecutor(8) as pool:
        list(
            pool.map(
                lambda a: ec2.release_address(AllocationId=a["AllocationId"]),
                ec2.describe_addresses()["Addresses"],
            )
        )
        vols = [v["VolumeId"] for v in ec2.describe_volumes()["Volumes"] if not v.get("Attachments")]
        list(pool.map(lambda v: ec2.delete_volume(VolumeId=v), vols))


def seed(scope: AwsScope, total: int) -> dict[str, int]:
    """~total resources: 20% instances (half stopped; each with an attached root volume), 35% unattached
    volumes, 5% protected unattached volumes, 20% Elastic IPs (a tenth associated)."""
    ec2 = scope.client("ec2")
    instances = max(2, total // 5)
    launched: list[str] = []
    for start in range(0, instances, 100):
        batch = ec2.run_instances(
            ImageId="ami-12c6146b",
            MinCount=min(100, instances - start),
            MaxCount=min(100, instances - start),
            Placement={"AvailabilityZone": f"{REGION}a"},
        )["Instances"]
        launched += [i["InstanceId"] for i in batch]
    stopped, running = launched[: len(launched) // 2], launched[len(launched) // 2 :]
    for start in range(0, len(stopped), 500):
        ec2.stop_instances(InstanceIds=stopped[start : start + 500])
    protect = [{"ResourceType": "volume", "Tags": [{"Key": "scaleops/protect", "Value": "true"}]}]

    def volume(i: int) -> None:
        kwargs: dict[str, Any] = {"AvailabilityZone": f"{REGION}a", "Size": 10 + i % 90, "VolumeType": "gp3"}
        if i % 8 == 0:
            kwargs["TagSpecifications"] = protect
        ec2.create_volume(**kwargs)

    def address(i: int) -> None:
        allocation = ec2.allocate_address(Domain="vpc")["AllocationId"]
        if i % 10 == 0 and running:
            ec2.associate_address(AllocationId=allocation, InstanceId=running[i % len(running)])

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(volume, range(total * 2 // 5)))
        list(pool.map(address, range(total // 5)))
    return {"instances": len(launched), "volumes": total * 2 // 5 + len(launched), "addresses": total // 5}


def custodian(binary: str, env: dict[str, str], workdir: Path) -> tuple[float, dict[str, set[str]]]:
    policy_file = workdir / "custodian.yml"
    policy_file.write_text(yaml.safe_dump(CUSTODIAN))
    out = workdir / "c7n-out"
    started = time.perf_counter()
    subprocess.run(
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
        check=True,
        capture_output=True,
    )
    seconds = time.perf_counter() - started
    found = {}
    for name, key in ID_KEY.items():
        resources = json.loads((out / name / "resources.json").read_text())
        found[name] = {r[key] for r in resources}
    return seconds, found


def ours_in_process(scope: AwsScope) -> tuple[float, dict[str, set[str]]]:
    prices = load_prices()
    kinds = {"ebs-unattached": EbsVolume, "eip-unassociated": ElasticIp, "ec2-stopped": Ec2Instance}
    found: dict[str, set[str]] = {}
    started = time.perf_counter()
    for policy in parse_policies(OURS):
        result = run_policy(
            kinds[policy.name](scope, prices), policy, datetime.now(UTC), dry_run=True, remaining=0
        )
        found[policy.name] = {f.id for f in result.findings if f.state != "protected"}
    return time.perf_counter() - started, found


def ours_flow(env: dict[str, str], workdir: Path) -> tuple[float, dict[str, set[str]]]:
    policy_file = workdir / "ours.yml"
    policy_file.write_text(yaml.safe_dump(OURS))
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
    found: dict[str, set[str]] = {name: set() for name in ID_KEY}
    for f in report["findings"]:
        if f["state"] != "protected":
            found[f["policy"]].add(f["id"])
    return seconds, found


def compare(label: str, ours: dict[str, set[str]], theirs: dict[str, set[str]]) -> bool:
    same = True
    for name in ID_KEY:
        a, b = ours.get(name, set()), theirs.get(name, set())
        verdict = "same" if a == b else f"DIFFERENT: only ours {len(a - b)}, only Custodian {len(b - a)}"
        print(f"    {label} {name}: {len(a)} vs Custodian {len(b)}: {verdict}")
        same = same and a == b
    return same


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="bench.cost_cleanup", description=__doc__.splitlines()[0])
    parser.add_argument("--resources", type=int, nargs="+", default=[100, 5000])
    parser.add_argument("--c7n", default="/tmp/c7n/bin/custodian")  # noqa: S108 - where FIELD-NOTES puts it
    parser.add_argument("--rounds", type=int, default=1)
    args = parser.parse_args(argv)
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
            f"seeded in {time.perf_counter() - started:.1f} s"
        )
        with tempfile.TemporaryDirectory() as tmp:
            for round_ in range(args.rounds):
                theirs_s, theirs = custodian(args.c7n, c7n_env, Path(tmp))
                flow_s, flow = ours_flow(ours_env, Path(tmp))
                inproc_s, inproc = ours_in_process(scope)
                print(
                    f"  round {round_ + 1}: Custodian {theirs_s:.2f} s; "
                    f"scaleops run cost-cleanup {flow_s:.2f} s "
                    f"(ratio {theirs_s / flow_s:.2f}x); policy evaluation in process {inproc_s:.2f} s "
                    f"(ratio {theirs_s / inproc_s:.2f}x)"
                )
                ok = compare("flow", flow, theirs) and compare("in-process", inproc, theirs) and ok
        purge(scope)
    print("findings identical per policy, both ways" if ok else "FINDINGS DIFFER")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
