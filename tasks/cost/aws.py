"""AWS resources (boto3): each finds every candidate of one region in batched describe calls and
knows its own "in use" check, its mark (an EC2 or ELBv2 tag) and its action.

| resource | in use when | action |
|---|---|---|
| aws.ebs-volume | attached to an instance | delete (snapshot first unless `snapshot: false`) |
| aws.ebs-snapshot | its volume exists, or an AMI uses it | delete |
| aws.eip | associated | release |
| aws.ec2-instance | running (filters: state, state_age) | terminate |
| aws.ami | an instance or a launch template version uses it | deregister |
| aws.elbv2 | a target is registered in one of its target groups | delete |
| aws.s3-multipart | (incomplete uploads: never; cannot carry a mark, so grace 0d) | abort |
"""

from __future__ import annotations

import contextlib
import re
import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, ClassVar

from scaleops.core.clients import aws_client
from tasks.cost.prices import PriceTable
from tasks.cost.resources import (
    AGE,
    MARK_KEY,
    METRIC,
    STATE,
    STATE_AGE,
    TAG,
    UNATTACHED,
    UNREFERENCED,
    Changed,
    Item,
    Resource,
    metric_key,
)

if TYPE_CHECKING:
    from tasks.cost.policy import Filter, Policy

CHUNK = 200  # ids per filtered describe / tag call
_STATE_TIME = re.compile(r"\((\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2})")


_VOLUMES: dict[AwsScope, dict[str, float]] = {}  # volume id -> monthly USD, from the last listing


@dataclass(frozen=True)
class AwsScope:
    """One region of one account, and how to reach it."""

    region: str
    endpoint_url: str | None = None
    access_key_id: str | None = field(default=None, repr=False)
    secret_access_key: str | None = field(default=None, repr=False)

    def client(self, service: str) -> Any:
        """A boto3 client for this region (scaleops.core.clients makes it, once per process)."""
        return aws_client(
            service,
            self.region,
            endpoint_url=self.endpoint_url,
            access_key_id=self.access_key_id,
            secret_access_key=self.secret_access_key,
        )


def chunks(values: list[str], size: int = CHUNK) -> Iterator[list[str]]:
    for start in range(0, len(values), size):
        yield values[start : start + size]


def tags_of(raw: dict[str, Any]) -> dict[str, str]:
    return {t["Key"]: t.get("Value", "") for t in raw.get("Tags") or []}


def aware(value: Any) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def error_code(exc: Exception) -> str:
    return str(getattr(exc, "response", {}).get("Error", {}).get("Code", ""))


@contextlib.contextmanager
def changed_on(item: Item, *codes: str) -> Iterator[None]:
    """An AWS error with one of `codes` inside the block means the resource changed or vanished since
    it was listed: a skip (`Changed`), never an error that stops the policy."""
    try:
        yield
    except Exception as exc:
        if error_code(exc) in codes:
            raise Changed(f"{error_code(exc)}: {item.id}") from None
        raise


class Listings:
    """Whole listings (every volume, instance, self-owned image of a region) shared by the policies of
    one scope while nothing changes them (a dry run): each is asked of AWS once, by the first policy
    that needs it, while the others wait for it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._made: dict[tuple[str, str], Future[list[dict[str, Any]]]] = {}

    def get(self, key: tuple[str, str], load: Callable[[], list[dict[str, Any]]]) -> list[dict[str, Any]]:
        with self._lock:
            made = self._made.get(key)
            mine = made is None
            if made is None:
                made = self._made[key] = Future()
        if mine:
            try:
                made.set_result(load())
            except BaseException as exc:  # those waiting get the error; the next asker (a retry) loads again
                with self._lock:
                    del self._made[key]
                made.set_exception(exc)
        return made.result()


class AwsResource(Resource):
    provider: ClassVar[str] = "aws"

    def __init__(self, scope: AwsScope, prices: PriceTable, listings: Listings | None = None):
        self.aws = scope
        self.scope = scope.region
        self.prices = prices
        self.listings = listings  # shared whole listings, in a dry run only (see Listings)
        self._clients: dict[str, Any] = {}

    def client(self, service: str) -> Any:
        if service not in self._clients:
            self._clients[service] = self.aws.client(service)
        return self._clients[service]

    def pages(self, service: str, operation: str, key: str, **kwargs: Any) -> Iterator[dict[str, Any]]:
        paginator = self.client(service).get_paginator(operation)
        for page in paginator.paginate(**kwargs):
            yield from page.get(key) or []

    def listing(self, operation: str, key: str) -> list[dict[str, Any]]:
        """A whole EC2 listing of the region (shared with the scope's other policies when `listings`)."""

        def load() -> list[dict[str, Any]]:
            if operation == "describe_images":  # not paginated; self-owned only
                return list(self.client("ec2").describe_images(Owners=["self"]).get("Images", []))
            return list(self.pages("ec2", operation, key))

        return load() if self.listings is None else self.listings.get((operation, key), load)

    def metric_target(self, item: Item) -> tuple[str, list[dict[str, str]]]:
        """(CloudWatch namespace, dimensions) of the item, for `metric_below`."""
        raise NotImplementedError(f"{self.name} has no metrics")

    def load_metrics(self, items: list[Item], filters: list[Filter], as_of: datetime) -> None:
        """One GetMetricData per 500 (item, filter) queries: the daily statistic over the filter's
        window; an item's value is the largest day (None: no datapoints)."""
        cloudwatch = self.client("cloudwatch")
        for f in filters:
            key = metric_key(f)
            queries: dict[str, Item] = {}
            for n, item in enumerate(items):
                item.metrics[key] = None
                queries[f"m{n}"] = item
            ids = list(queries)
            for start in range(0, len(ids), 500):
                batch = []
                for qid in ids[start : start + 500]:
                    namespace, dimensions = self.metric_target(queries[qid])
                    metric = {"Namespace": namespace, "MetricName": f.key, "Dimensions": dimensions}
                    batch.append(
                        {"Id": qid, "MetricStat": {"Metric": metric, "Period": 86400, "Stat": f.stat}}
                    )
                window = {"StartTime": as_of - (f.duration or timedelta(days=14)), "EndTime": as_of}
                token: dict[str, str] = {}
                while True:
                    answer = cloudwatch.get_metric_data(MetricDataQueries=batch, **window, **token)
                    for result in answer.get("MetricDataResults", []):
                        values = result.get("Values") or []
                        if values:
                            item = queries[result["Id"]]
                            previous = item.metrics.get(key)
                            item.metrics[key] = max([*values, *([previous] if previous is not None else [])])
                    if not answer.get("NextToken"):
                        break
                    token = {"NextToken": answer["NextToken"]}

    def tag_batches(self, items: list[Item], call: Any, size: int = CHUNK) -> set[str]:
        """`call(ids)` per chunk; a chunk refused because one of its resources vanished is retried one
        id at a time, and the vanished ids are returned (skipped, never an error)."""
        skipped: set[str] = set()
        for ids in chunks([i.id for i in items], size):
            try:
                call(ids)
            except Exception as exc:
                if "NotFound" not in error_code(exc):
                    raise
                for one in ids:
                    try:
                        call([one])
                    except Exception as again:
                        if "NotFound" not in error_code(again):
                            raise
                        skipped.add(one)
        return skipped

    # EC2 resources share tagging: one CreateTags/DeleteTags call per chunk of ids.
    def mark(self, items: list[Item], value: str) -> set[str]:
        ec2 = self.client("ec2")
        return self.tag_batches(
            items, lambda ids: ec2.create_tags(Resources=ids, Tags=[{"Key": MARK_KEY, "Value": value}])
        )

    def unmark(self, items: list[Item]) -> set[str]:
        ec2 = self.client("ec2")
        return self.tag_batches(items, lambda ids: ec2.delete_tags(Resources=ids, Tags=[{"Key": MARK_KEY}]))


class EbsVolume(AwsResource):
    name = "aws.ebs-volume"
    actions = ("delete",)
    filters: ClassVar[dict[str, str]] = {**AGE, **STATE, **TAG, **UNATTACHED, **METRIC}

    def metric_target(self, item: Item) -> tuple[str, list[dict[str, str]]]:
        return "AWS/EBS", [{"Name": "VolumeId", "Value": item.id}]

    def item(self, v: dict[str, Any]) -> Item:
        tags = tags_of(v)
        kind = v.get("VolumeType", "gp2")
        return Item(
            id=v["VolumeId"],
            where=self.scope,
            created=aware(v.get("CreateTime")),
            state=v.get("State"),
            labels=tags,
            annotations=tags,
            attached=bool(v.get("Attachments")),
            monthly_usd=v.get("Size", 0) * self.prices.aws(self.scope, f"ebs:{kind}"),
            what=f"{kind} {v.get('Size', 0)} GiB",
        )

    def find(self) -> list[Item]:
        items = [self.item(v) for v in self.listing("describe_volumes", "Volumes")]
        _VOLUMES[self.aws] = {i.id: i.monthly_usd for i in items}  # prices stopped instances' volumes
        return items

    def refresh(self, items: Iterable[Item]) -> dict[str, Item]:
        found: dict[str, Item] = {}
        for ids in chunks([i.id for i in items]):
            filters = [{"Name": "volume-id", "Values": ids}]
            for v in self.pages("ec2", "describe_volumes", "Volumes", Filters=filters):
                found[v["VolumeId"]] = self.item(v)
        return found

    def act(self, item: Item, policy: Policy) -> str:
        ec2 = self.client("ec2")
        detail = "deleted"
        with changed_on(item, "InvalidVolume.NotFound", "VolumeInUse", "IncorrectState"):
            if policy.snapshot:
                snap = ec2.create_snapshot(
                    VolumeId=item.id,
                    Description=f"scaleops cost-cleanup: {item.id} before deletion by policy {policy.name}",
                    TagSpecifications=[
                        {
                            "ResourceType": "snapshot",
                            "Tags": [{"Key": "scaleops/cleanup-of", "Value": item.id}],
                        }
                    ],
                )
                detail = f"snapshot {snap['SnapshotId']}, deleted"
            ec2.delete_volume(VolumeId=item.id)
        return detail


class EbsSnapshot(AwsResource):
    name = "aws.ebs-snapshot"
    actions = ("delete",)
    filters: ClassVar[dict[str, str]] = {**AGE, **TAG, **UNREFERENCED}

    def find(self) -> list[Item]:
        volumes = {v["VolumeId"] for v in self.listing("describe_volumes", "Volumes")}
        used = set()
        for image in self.listing("describe_images", "Images"):
            for mapping in image.get("BlockDeviceMappings") or []:
                if (mapping.get("Ebs") or {}).get("SnapshotId"):
                    used.add(mapping["Ebs"]["SnapshotId"])
        items = []
        for s in self.pages("ec2", "describe_snapshots", "Snapshots", OwnerIds=["self"]):
            tags = tags_of(s)
            items.append(
                Item(
                    id=s["SnapshotId"],
                    where=self.scope,
                    created=aware(s.get("StartTime")),
                    state=s.get("State"),
                    labels=tags,
                    annotations=tags,
                    referenced=s.get("VolumeId") in volumes or s["SnapshotId"] in used,
                    monthly_usd=s.get("VolumeSize", 0) * self.prices.aws(self.scope, "snapshot"),
                    what=f"snapshot of {s.get('VolumeId', '?')} {s.get('VolumeSize', 0)} GiB",
                )
            )
        return items

    def act(self, item: Item, policy: Policy) -> str:
        with changed_on(item, "InvalidSnapshot.NotFound", "InvalidSnapshot.InUse"):
            self.client("ec2").delete_snapshot(SnapshotId=item.id)
        return "deleted"


class ElasticIp(AwsResource):
    name = "aws.eip"
    actions = ("release",)
    filters: ClassVar[dict[str, str]] = {**TAG, **UNATTACHED}

    def find(self) -> list[Item]:
        items = []
        for a in self.client("ec2").describe_addresses().get("Addresses", []):
            if "AllocationId" not in a:  # EC2-Classic addresses have none
                continue
            tags = tags_of(a)
            items.append(
                Item(
                    id=a["AllocationId"],
                    where=self.scope,
                    labels=tags,
                    annotations=tags,
                    attached=bool(a.get("AssociationId")),
                    monthly_usd=self.prices.aws(self.scope, "eip"),
                    what=f"address {a.get('PublicIp', '?')}",
                )
            )
        return items

    def act(self, item: Item, policy: Policy) -> str:
        with changed_on(item, "InvalidAllocationID.NotFound", "InvalidIPAddress.InUse", "AuthFailure"):
            self.client("ec2").release_address(AllocationId=item.id)
        return "released"


class Ec2Instance(AwsResource):
    name = "aws.ec2-instance"
    actions = ("terminate",)
    filters: ClassVar[dict[str, str]] = {**AGE, **STATE, **STATE_AGE, **TAG, **METRIC}

    def metric_target(self, item: Item) -> tuple[str, list[dict[str, str]]]:
        return "AWS/EC2", [{"Name": "InstanceId", "Value": item.id}]

    def find(self) -> list[Item]:
        instances = [
            i
            for r in self.listing("describe_instances", "Reservations")
            for i in r.get("Instances", [])
            if i["State"]["Name"] not in ("terminated", "shutting-down")
        ]
        storage: dict[str, float] = {}  # a stopped instance costs what its volumes cost
        stopped = [i for i in instances if i["State"]["Name"] == "stopped"]
        known = _VOLUMES.get(self.aws, {})  # sizes from this process's volume listing, if any
        missing: list[str] = []
        for i in stopped:
            for mapping in i.get("BlockDeviceMappings") or []:
                volume = (mapping.get("Ebs") or {}).get("VolumeId")
                if volume in known:
                    storage[i["InstanceId"]] = storage.get(i["InstanceId"], 0.0) + known[volume]
                elif volume:
                    missing.append(i["InstanceId"])
        for ids in chunks(sorted(set(missing))):
            filters = [{"Name": "attachment.instance-id", "Values": ids}]
            for v in self.pages("ec2", "describe_volumes", "Volumes", Filters=filters):
                price = v.get("Size", 0) * self.prices.aws(self.scope, f"ebs:{v.get('VolumeType', 'gp2')}")
                for attachment in v.get("Attachments") or []:
                    storage[attachment["InstanceId"]] = storage.get(attachment["InstanceId"], 0.0) + price
        items = []
        for i in instances:
            tags = tags_of(i)
            reason = _STATE_TIME.search(i.get("StateTransitionReason") or "")
            since = datetime.fromisoformat(reason.group(1)).replace(tzinfo=UTC) if reason else None
            items.append(
                Item(
                    id=i["InstanceId"],
                    where=self.scope,
                    created=aware(i.get("LaunchTime")),
                    state=i["State"]["Name"],
                    state_since=since,
                    labels=tags,
                    annotations=tags,
                    monthly_usd=storage.get(i["InstanceId"], 0.0),
                    what=f"{i.get('InstanceType', '?')} {i['State']['Name']}",
                )
            )
        return items

    def refresh(self, items: Iterable[Item]) -> dict[str, Item]:
        wanted = {i.id for i in items}
        return {i.id: i for i in self.find() if i.id in wanted}

    def act(self, item: Item, policy: Policy) -> str:
        with changed_on(item, "InvalidInstanceID.NotFound", "IncorrectInstanceState"):
            self.client("ec2").terminate_instances(InstanceIds=[item.id])
        return "terminated"


class Ami(AwsResource):
    name = "aws.ami"
    actions = ("deregister",)
    filters: ClassVar[dict[str, str]] = {**AGE, **TAG, **UNREFERENCED}

    def find(self) -> list[Item]:
        ec2 = self.client("ec2")
        used = {
            i.get("ImageId")
            for r in self.listing("describe_instances", "Reservations")
            for i in r.get("Instances", [])
            if i["State"]["Name"] != "terminated"
        }
        templates = [
            t["LaunchTemplateId"] for t in self.pages("ec2", "describe_launch_templates", "LaunchTemplates")
        ]
        for template in templates:  # one call per template: every version of it
            for version in ec2.describe_launch_template_versions(LaunchTemplateId=template).get(
                "LaunchTemplateVersions", []
            ):
                used.add((version.get("LaunchTemplateData") or {}).get("ImageId"))
        items = []
        for image in self.listing("describe_images", "Images"):
            tags = tags_of(image)
            gib = sum(
                (m.get("Ebs") or {}).get("VolumeSize", 0) for m in image.get("BlockDeviceMappings") or []
            )
            items.append(
                Item(
                    id=image["ImageId"],
                    where=self.scope,
                    created=aware(image.get("CreationDate")),
                    state=image.get("State"),
                    labels=tags,
                    annotations=tags,
                    referenced=image["ImageId"] in used,
                    monthly_usd=gib * self.prices.aws(self.scope, "snapshot"),
                    what=f"image {image.get('Name', '')}",
                )
            )
        return items

    def act(self, item: Item, policy: Policy) -> str:
        with changed_on(item, "InvalidAMIID.NotFound", "InvalidAMIID.Unavailable"):
            self.client("ec2").deregister_image(ImageId=item.id)
        return "deregistered"


class LoadBalancer(AwsResource):
    name = "aws.elbv2"
    actions = ("delete",)
    filters: ClassVar[dict[str, str]] = {**AGE, **TAG, **UNREFERENCED, **METRIC}

    def metric_target(self, item: Item) -> tuple[str, list[dict[str, str]]]:
        suffix = item.id.split(":loadbalancer/", 1)[-1]  # app/name/id or net/name/id
        namespace = "AWS/NetworkELB" if suffix.startswith("net/") else "AWS/ApplicationELB"
        return namespace, [{"Name": "LoadBalancer", "Value": suffix}]

    def find(self) -> list[Item]:
        elb = self.client("elbv2")
        balancers = list(self.pages("elbv2", "describe_load_balancers", "LoadBalancers"))
        arns = [b["LoadBalancerArn"] for b in balancers]
        tags: dict[str, dict[str, str]] = {}
        for batch in chunks(arns, 20):  # DescribeTags takes at most 20 ARNs
            for d in elb.describe_tags(ResourceArns=batch).get("TagDescriptions", []):
                tags[d["ResourceArn"]] = tags_of(d)
        with_targets = set()
        for group in self.pages("elbv2", "describe_target_groups", "TargetGroups"):
            if not group.get("LoadBalancerArns"):
                continue
            health = elb.describe_target_health(TargetGroupArn=group["TargetGroupArn"])
            if health.get("TargetHealthDescriptions"):
                with_targets.update(group["LoadBalancerArns"])
        return [
            Item(
                id=b["LoadBalancerArn"],
                where=self.scope,
                created=aware(b.get("CreatedTime")),
                state=(b.get("State") or {}).get("Code"),
                labels=tags.get(b["LoadBalancerArn"], {}),
                annotations=tags.get(b["LoadBalancerArn"], {}),
                referenced=b["LoadBalancerArn"] in with_targets,
                monthly_usd=self.prices.aws(self.scope, f"elbv2:{b.get('Type', 'application')}"),
                what=f"{b.get('Type', '?')} {b.get('LoadBalancerName', '')}",
            )
            for b in balancers
        ]

    def mark(self, items: list[Item], value: str) -> set[str]:
        elb = self.client("elbv2")
        tags = [{"Key": MARK_KEY, "Value": value}]
        return self.tag_batches(items, lambda arns: elb.add_tags(ResourceArns=arns, Tags=tags), 20)

    def unmark(self, items: list[Item]) -> set[str]:
        elb = self.client("elbv2")
        return self.tag_batches(
            items, lambda arns: elb.remove_tags(ResourceArns=arns, TagKeys=[MARK_KEY]), 20
        )

    def act(self, item: Item, policy: Policy) -> str:
        with changed_on(item, "LoadBalancerNotFound", "ResourceInUse"):
            self.client("elbv2").delete_load_balancer(LoadBalancerArn=item.id)
        return "deleted"


class S3Multipart(AwsResource):
    name = "aws.s3-multipart"
    actions = ("abort",)
    filters: ClassVar[dict[str, str]] = {**AGE}
    markable = False  # an upload carries no tags: its age is its grace

    def buckets(self) -> list[str]:
        s3 = self.client("s3")
        names = []
        for bucket in s3.list_buckets().get("Buckets", []):
            location = s3.get_bucket_location(Bucket=bucket["Name"]).get("LocationConstraint") or "us-east-1"
            if location == self.scope:
                names.append(bucket["Name"])
        return names

    def find(self) -> list[Item]:
        items = []
        for bucket in self.buckets():
            for upload in self.pages("s3", "list_multipart_uploads", "Uploads", Bucket=bucket):
                items.append(
                    Item(
                        id=f"s3://{bucket}/{upload['Key']}?uploadId={upload['UploadId']}",
                        where=self.scope,
                        created=aware(upload.get("Initiated")),
                        what=f"incomplete upload of {upload['Key']}",
                    )
                )
        return items

    def act(self, item: Item, policy: Policy) -> str:
        path, _, upload_id = item.id.removeprefix("s3://").partition("?uploadId=")
        bucket, _, key = path.partition("/")
        with changed_on(item, "NoSuchUpload"):
            self.client("s3").abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id)
        return "aborted"


AWS_RESOURCES: tuple[type[AwsResource], ...] = (
    EbsVolume,
    EbsSnapshot,
    ElasticIp,
    Ec2Instance,
    Ami,
    LoadBalancer,
    S3Multipart,
)
