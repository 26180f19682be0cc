"""PostgreSQL: everything scaleops asks of the primary, the replica and the restore server."""

from __future__ import annotations

from typing import Any

import psycopg  # noqa: F401 - imported once here, not first inside concurrent task threads

from scaleops.clients import PostgresRole, postgres_connect
from scaleops.retry import io_task
from scaleops.settings import Settings
from tasks.health import Check, timed_check


def server_facts(conn: Any) -> dict[str, Any]:
    """Version, recovery state and, on a replica, how far behind replay is."""
    row = conn.execute(
        "select current_setting('server_version'), pg_is_in_recovery(),"
        " case when pg_is_in_recovery()"
        "   then extract(epoch from now() - coalesce(pg_last_xact_replay_timestamp(), now())) end"
    ).fetchone()
    version, in_recovery, replay_delay = row
    facts: dict[str, Any] = {"server_version": version, "in_recovery": bool(in_recovery)}
    if replay_delay is not None:
        facts["replay_delay_seconds"] = float(replay_delay)
    return facts


def check_postgres(settings: Settings, role: PostgresRole) -> Check:
    """Connect as `role`; a replica must be in recovery, a primary must not."""

    def probe() -> tuple[bool, str, dict[str, Any]]:
        with postgres_connect(settings, role, autocommit=True) as conn:
            facts = server_facts(conn)
        want_recovery = role == "replica"
        if facts["in_recovery"] != want_recovery:
            expected = "in recovery (a replica)" if want_recovery else "writable (a primary)"
            return False, f"expected the server to be {expected}", facts
        return True, f"PostgreSQL {facts['server_version']}", facts

    return timed_check(f"postgres_{role}", role, probe)


@io_task(task_run_name="postgres-health-{role}")
def postgres_health(settings: Settings, role: PostgresRole) -> Check:
    return check_postgres(settings, role)


def fetch_postgres_series(conn: Any, specs: Any, start: float, end: float) -> list[Any]:
    """Capacity series from SQL: each spec's query returns (timestamp, value) rows and may use the
    parameters %(start)s and %(end)s (timestamptz). A failing query is that series' error."""
    from datetime import UTC, datetime

    from scaleops.retry import is_transient
    from tasks.forecasting import SeriesData, epoch_seconds

    params = {"start": datetime.fromtimestamp(start, UTC), "end": datetime.fromtimestamp(end, UTC)}
    out = []
    for spec in specs:
        try:
            with conn.transaction():
                rows = conn.execute(spec.query, params).fetchall()
        except Exception as exc:
            if is_transient(exc):
                raise
            out.append(SeriesData(spec.name, error=f"query failed: {str(exc).splitlines()[0]}"))
            continue
        stamps = [
            float(r[0]) if isinstance(r[0], int | float) else float(epoch_seconds([r[0]])[0]) for r in rows
        ]
        values = [float("nan") if r[1] is None else float(r[1]) for r in rows]
        out.append(SeriesData(spec.name, timestamps=stamps, values=values))
    return out


@io_task(task_run_name="postgres-fetch-{count}-series")
def postgres_fetch(settings: Settings, specs: list[Any], start: float, end: float, count: int) -> list[Any]:
    with postgres_connect(settings, "primary", autocommit=True) as conn:
        return fetch_postgres_series(conn, specs, start, end)
