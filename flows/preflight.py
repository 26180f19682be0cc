"""Duty `preflight`: can scaleops reach everything it manages? One probe per configured system.

Run it first on a new environment, after a failover, or whenever another duty fails to connect:
it names the system that does not answer, what it answered instead, and the setting to look at.
It probes PostgreSQL (primary, replica), Redis (standalone, cluster), both S3 regions, Prometheus,
Alertmanager, the alert bridge and every configured chain's RPC.
"""

from __future__ import annotations

import typing
from datetime import datetime
from typing import Literal

from scaleops.core.duties import duty
from scaleops.core.redaction import REDACTOR
from scaleops.core.reporting import utcnow
from scaleops.core.settings import Settings
from tasks.common.health import UNREACHABLE, Check, endpoint_health, postgres_health, redis_health, s3_health
from tasks.preflight.report import PreflightReport

System = Literal[
    "postgres_primary",
    "postgres_replica",
    "redis_standalone",
    "redis_cluster",
    "s3_primary",
    "s3_replica",
    "prometheus",
    "alertmanager",
    "alert_bridge",
    "chains",
]
ALL_SYSTEMS: tuple[System, ...] = typing.get_args(System)


def configured_systems(settings: Settings) -> list[str]:
    """Systems the settings point at (one unset is skipped, not failed); `chains` is every chain."""
    unset = {
        "postgres_replica": settings.postgres.replica_dsn,
        "redis_cluster": settings.redis.cluster_url,
        "prometheus": settings.capacity.prometheus_url,
        "alertmanager": settings.alertmanager.url,
        "alert_bridge": settings.alerts.url,
    }
    return [s for s in ALL_SYSTEMS if unset.get(s, True) and s != "chains"] + [
        f"chain_{name}" for name in sorted(settings.chains)
    ]


@duty(
    "preflight",
    namespace="preflight",
    report=PreflightReport,
    summary="check that every configured system answers (PostgreSQL primary and replica, Redis, "
    "Redis Cluster, both S3 regions, Prometheus, Alertmanager, the alert bridge, every chain RPC)",
)
def preflight(
    settings: Settings, systems: list[System] | None = None, as_of: datetime | None = None
) -> PreflightReport:
    """Probe every configured system (or only `systems`) and report which answer.

    Args:
        systems: probe only these (default: every system the settings point at; `chains` is every chain).
        as_of: the run's clock (default now); a backfill sets it per partition.
    """
    report = PreflightReport(as_of=as_of or utcnow())
    futures = []
    wanted = [s for s in systems or configured_systems(settings) if s != "chains"]
    if systems and "chains" in systems:
        wanted += [f"chain_{name}" for name in sorted(settings.chains)]
    for system in wanted:
        kind, _, which = system.partition("_")
        if kind == "postgres":
            futures.append(postgres_health.submit(settings, which))
        elif kind == "redis":
            futures.append(redis_health.submit(settings, which))
        elif kind == "s3":
            futures.append(s3_health.submit(settings, which))
        else:  # prometheus, alertmanager, alert_bridge, chain_<name>
            futures.append(endpoint_health.submit(settings, system))
    for future in futures:
        check: Check = future.result()
        check.detail = REDACTOR.text(check.detail)
        report.checks.append(check)
        if check.facts.get(UNREACHABLE):  # a wrong endpoint: could not check, exit 2, like every duty
            report.step_failed(f"{check.system}: {check.detail}")
        elif not check.ok:  # it answered, and what it answered is wrong
            report.problem(f"{check.system} ({check.target}): {check.detail}")
    return report
