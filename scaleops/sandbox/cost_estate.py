"""cost-cleanup's corner of the sandbox: the Kubernetes API stand-in (scaleops/sandbox/kube_api.py)
as a process with a seeded cluster and a kubeconfig pointing at it, and a small AWS estate seeded in
one region of the moto server (something for every AWS policy of deployments/cost-policies.yml,
protected resources and resources in use among them).

moto stamps every resource "now", so the age-gated AWS policies find their resources only with an
`as_of` in the future (`scaleops run cost-cleanup -p as_of=2030-01-01`); the seeded cluster's objects
carry past timestamps, and idle addresses and incomplete uploads (moto dates them 2010) need no age.
"""

from __future__ import annotations

import sys
from typing import Any

from scaleops.sandbox.procs import spawn
from scaleops.sandbox.services import LOCAL, PROJECT_ROOT, S3, Service, http_ok

ESTATE_REGION = "us-west-1"  # the tests and the benchmark use other regions
ESTATE_TAG = {"Key": "scaleops-sandbox", "Value": "cost-estate"}
MOTO_ACCOUNT = "123456789012"
DEMO_BUCKET = "scaleops-cost-demo"


def seed_aws(client: Any) -> int:
    """Seed the estate once (a tagged volume says it is there); returns the resources created."""
    ec2, elb, s3 = client("ec2"), client("elbv2"), client("s3")
    marker = [{"Name": f"tag:{ESTATE_TAG['Key']}", "Values": [ESTATE_TAG["Value"]]}]
    if ec2.describe_volumes(Filters=marker)["Volumes"]:
        return 0
    zone = f"{ESTATE_REGION}a"

    def tags(kind: str, *extra: dict[str, str]) -> list[dict[str, Any]]:
        return [{"ResourceType": kind, "Tags": [ESTATE_TAG, *extra]}]

    protect = {"Key": "scaleops/protect", "Value": "true"}
    ec2.create_volume(AvailabilityZone=zone, Size=100, VolumeType="gp3", TagSpecifications=tags("volume"))
    ec2.create_volume(
        AvailabilityZone=zone, Size=20, VolumeType="gp3", TagSpecifications=tags("volume", protect)
    )
    running, stopped = (
        i["InstanceId"]
        for i in ec2.run_instances(
            ImageId="ami-12c6146b",
            MinCount=2,
            MaxCount=2,
            Placement={"AvailabilityZone": zone},
            TagSpecifications=tags("instance"),
        )["Instances"]
    )
    ec2.stop_instances(InstanceIds=[stopped])
    data = ec2.create_volume(
        AvailabilityZone=zone, Size=50, VolumeType="gp3", TagSpecifications=tags("volume")
    )
    ec2.attach_volume(VolumeId=data["VolumeId"], InstanceId=running, Device="/dev/sdf")
    gone = ec2.create_volume(AvailabilityZone=zone, Size=30, VolumeType="gp2")["VolumeId"]
    ec2.create_snapshot(VolumeId=gone, TagSpecifications=tags("snapshot"))
    ec2.delete_volume(VolumeId=gone)
    ec2.allocate_address(Domain="vpc", TagSpecifications=tags("elastic-ip"))
    used = ec2.allocate_address(Domain="vpc", TagSpecifications=tags("elastic-ip"))["AllocationId"]
    ec2.associate_address(AllocationId=used, InstanceId=running)
    ec2.create_image(InstanceId=running, Name="scaleops-demo-unused")
    vpc = ec2.describe_vpcs()["Vpcs"][0]["VpcId"]
    subnets = [
        s["SubnetId"] for s in ec2.describe_subnets(Filters=[{"Name": "vpc-id", "Values": [vpc]}])["Subnets"]
    ]
    elb.create_load_balancer(Name="scaleops-demo-idle", Subnets=subnets[:2])
    s3.create_bucket(Bucket=DEMO_BUCKET, CreateBucketConfiguration={"LocationConstraint": ESTATE_REGION})
    s3.create_multipart_upload(Bucket=DEMO_BUCKET, Key="exports/never-finished.parquet")
    return 12


class CostEstate(Service):
    name = "cost_estate"
    requires = ("s3",)
    description = (
        "Kubernetes API stand-in with a seeded cluster, and a seeded AWS estate in moto (cost-cleanup)"
    )

    @property
    def s3(self) -> S3:
        return self.sb.service("s3")  # type: ignore[return-value]

    @property
    def kubeconfig(self) -> Any:
        return self.home / "kubeconfig"

    def start(self) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        args = [
            sys.executable,
            "-m",
            "scaleops.sandbox.kube_api",
            "--host",
            LOCAL,
            "--port",
            str(self.port),
            "--seed",
        ]
        spawn(args, cwd=self.home, log=self.log, pidfile=self.pidfiles()[0])

    def probe(self) -> bool:
        return http_ok(f"{self.url()}/version")

    def client(self, service: str) -> Any:
        import boto3
        from botocore.config import Config

        return boto3.session.Session().client(
            service,
            endpoint_url=self.s3.url(),
            aws_access_key_id=self.s3.access_key,
            aws_secret_access_key=self.s3.secret_key,
            config=Config(
                region_name=ESTATE_REGION, retries={"max_attempts": 2}, connect_timeout=2, read_timeout=10
            ),
        )

    def ready(self) -> None:
        from scaleops.sandbox.kube_api import write_kubeconfig

        if not self.kubeconfig.exists() or self.url() not in self.kubeconfig.read_text():
            write_kubeconfig(self.kubeconfig, self.url(), "sandbox")
        # seeded once per moto process (its state lives in memory): keyed by the S3 server's PIDs
        self.sb.memo(
            "cost_estate_seeded", f"{self.s3.url()} {self.s3.pids()}", lambda _: str(seed_aws(self.client))
        )

    def env(self) -> dict[str, str]:
        return {
            "SCALEOPS_COST__POLICIES": str(PROJECT_ROOT / "deployments" / "cost-policies.yml"),
            "SCALEOPS_COST__REGIONS": f'["{ESTATE_REGION}"]',
            "SCALEOPS_COST__AWS_ENDPOINT_URL": self.s3.url(),
            "SCALEOPS_COST__ACCESS_KEY_ID": self.s3.access_key,
            "SCALEOPS_COST__SECRET_ACCESS_KEY": self.s3.secret_key,
            "SCALEOPS_COST__ALLOWED_ACCOUNTS": f'["{MOTO_ACCOUNT}"]',
            "SCALEOPS_COST__KUBECONFIG": str(self.kubeconfig),
        }

    def details(self) -> dict[str, Any]:
        return {"region": ESTATE_REGION, "kubeconfig": str(self.kubeconfig)}
