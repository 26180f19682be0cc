"""Duty `preflight`: can scaleops reach everything it manages? One probe per configured system.

Run it first on a new environment, after a failover, or whenever another duty fails to connect:
it names the system that does not answer and what it answered instead.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import Field

from scaleops.core.duties import duty_flow
from scaleops.core.redaction import protect
from scaleops.core.reporting import DutyReport, publish_report, utcnow
from scaleops.core.settings import Settings, load_settings
from tasks.common.health import Check, postgres_health, redis_health, s3_health

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


class PreflightReport(DutyReport):
    duty: str = "preflight"
    checks: list[Check] = Field(default_factory=list)


def configured_systems(settings: Settings) -> list[System]:
    """Systems the settings point at (an unset replica or cluster is skipped, not failed)."""
    skip = set()
    if settings.postgres.replica_dsn is None:
        skip.add("postgres_replica")
    if settings.redis.cluster_url is None:
        skip.add("redis_cluster")
    return [s for s in ALL_SYSTEMS if s not in skip]


def render_markdown(report: PreflightReport) -> str:
    lines = [
        f"# Preflight: {'all systems answer' if report.ok else 'some systems do not answer'}",
        "",
        f"as of `{report.as_of.isoformat()}`",
        "",
        "| system | target | ok | detail | seconds |",
        "|---|---|---|---|---|",
    ]
    for c in report.checks:
        lines.append(
            f"| {c.system} | `{c.target}` | {'yes' if c.ok else '**no**'} | {c.detail} | {c.seconds} |"
        )
    return "\n".join(lines)


@duty_flow("preflight", "preflight")
def preflight(systems: list[System] | None = None, as_of: datetime | None = None) -> PreflightReport:
    """Probe every configured system (or only `systems`) and report which answer."""
    settings = load_settings()
    redactor = protect(settings.secrets())
    report = PreflightReport(as_of=as_of or utcnow())
    wanted = systems or configured_systems(settings)
    futures = []
    for system in wanted:
        kind, _, which = system.partition("_")
        if kind == "postgres":
            futures.append(postgres_health.submit(settings, which))
        elif kind == "redis":
            futures.append(redis_health.submit(settings, which))
        else:
            futures.append(s3_health.submit(settings, which))
    for future in futures:
        check: Check = future.result()
        check.detail = redactor.text(check.detail)
        report.checks.append(check)
        if not check.ok:
            report.problem(f"{check.system} ({check.target}): {check.detail}")
    report.finish()
    publish_report(
        report,
        namespace="preflight",
        outcome="passed" if report.ok else "problems",
        resource_id="scaleops.preflight",
        markdown=render_markdown(report),
        table=[c.model_dump(exclude={"facts"}) for c in report.checks],
        redactor=redactor,
    )
    return report
