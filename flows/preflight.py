"""Duty `preflight`: can scaleops reach everything it manages? One probe per configured system.

Run it first on a new environment, after a failover, or whenever another duty fails to connect:
it names the system that does not answer and what it answered instead.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from scaleops.core.duties import duty
from scaleops.core.redaction import REDACTOR
from scaleops.core.reporting import utcnow
from scaleops.core.settings import Settings
from tasks.common.health import Check, postgres_health, redis_health, s3_health
from tasks.preflight.report import PreflightReport

System = Literal[
    "postgres_primary", "postgres_replica", "redis_standalone", "redis_cluster", "s3_primary", "s3_replica"
]
ALL_SYSTEMS: tuple[System, ...] = (
    "postgres_primary",
    "postgres_replica",
    "redis_standalone",
    "redis_cluster",
    "s3_primary",
    "s3_replica",
)


def configured_systems(settings: Settings) -> list[System]:
    """Systems the settings point at (an unset replica or cluster is skipped, not failed)."""
    skip = set()
    if settings.postgres.replica_dsn is None:
        skip.add("postgres_replica")
    if settings.redis.cluster_url is None:
        skip.add("redis_cluster")
    return [s for s in ALL_SYSTEMS if s not in skip]


@duty(
    "preflight",
    namespace="preflight",
    report=PreflightReport,
    summary="check that every configured system answers (PostgreSQL primary and replica, Redis, "
    "Redis Cluster, both S3 regions)",
)
def preflight(
    settings: Settings, systems: list[System] | None = None, as_of: datetime | None = None
) -> PreflightReport:
    """Probe every configured system (or only `systems`) and report which answer.

    Args:
        systems: probe only these (default: every system the settings point at).
        as_of: the run's clock (default now); a backfill sets it per partition.
    """
    report = PreflightReport(as_of=as_of or utcnow())
    futures = []
    for system in systems or configured_systems(settings):
        kind, _, which = system.partition("_")
        if kind == "postgres":
            futures.append(postgres_health.submit(settings, which))
        elif kind == "redis":
            futures.append(redis_health.submit(settings, which))
        else:
            futures.append(s3_health.submit(settings, which))
    for future in futures:
        check: Check = future.result()
        check.detail = REDACTOR.text(check.detail)
        report.checks.append(check)
        if not check.ok:
            report.problem(f"{check.system} ({check.target}): {check.detail}")
    return report
