"""Every resource kind a policy may name, by name (`aws.ebs-volume`, `k8s.job`, ...)."""

from __future__ import annotations

from tasks.cost.aws import AWS_RESOURCES
from tasks.cost.kube import KUBE_RESOURCES
from tasks.cost.resources import Resource

RESOURCES: dict[str, type[Resource]] = {r.name: r for r in (*AWS_RESOURCES, *KUBE_RESOURCES)}
