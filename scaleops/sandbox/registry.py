"""Every sandbox service, in start order (dependencies before dependents). A new service lives in its
own module under scaleops/sandbox/ and is added here."""

from __future__ import annotations

from scaleops.sandbox.prometheus import Prometheus
from scaleops.sandbox.services import (
    S3,
    Postgres,
    PostgresReplica,
    PrefectServer,
    Redis,
    RedisCluster,
    S3Replicator,
    Service,
)

SERVICES: tuple[type[Service], ...] = (
    Postgres,
    PostgresReplica,
    Redis,
    RedisCluster,
    S3,
    S3Replicator,
    PrefectServer,
    Prometheus,
)
