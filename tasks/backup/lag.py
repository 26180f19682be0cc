"""Streaming replica lag as the primary reports it (duty backup-verification)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from scaleops.core.clients import postgres_connect
from scaleops.core.retry import io_task
from scaleops.core.settings import Settings

if TYPE_CHECKING:
    from tasks.backup.report import BackupReport


class ReplicaLag(BaseModel):
    """Streaming replication as the primary sees it (pg_stat_replication)."""

    application_name: str
    state: str
    bytes: int | None
    seconds: float | None


def replica_lag(conn: Any) -> list[ReplicaLag]:
    """Every streaming replica's lag as the primary sees it (replay position and replay_lag)."""
    rows = conn.execute(
        "select coalesce(application_name, ''), coalesce(state, ''),"
        " pg_wal_lsn_diff(pg_current_wal_lsn(), replay_lsn)::bigint,"
        " extract(epoch from replay_lag)::float8"
        " from pg_stat_replication order by 1"
    ).fetchall()
    lags = []
    for name, state, lag_bytes, seconds in rows:
        if seconds is None and lag_bytes == 0:
            seconds = 0.0  # idle and caught up: PostgreSQL reports no lag sample
        lags.append(ReplicaLag(application_name=name, state=state, bytes=lag_bytes, seconds=seconds))
    return lags


@io_task(task_run_name="postgres-replica-lag")
def replica_lag_task(settings: Settings) -> list[ReplicaLag]:
    with postgres_connect(settings, "primary", autocommit=True) as conn:
        return replica_lag(conn)


def check_replica_lag(settings: Settings, report: BackupReport) -> None:
    """Record the streaming replica's lag; with a replica configured, one that is not streaming (or
    missing from pg_stat_replication) is a problem."""
    report.replica_lag = replica_lag_task(settings)
    if settings.postgres.replica_dsn is None:
        return
    if not report.replica_lag:
        report.problem("PostgreSQL primary reports no streaming replica (pg_stat_replication is empty)")
    for lag in report.replica_lag:
        if lag.state != "streaming":
            report.problem(f"PostgreSQL replica {lag.application_name} is {lag.state}, not streaming")
