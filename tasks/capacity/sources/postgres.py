"""Capacity series from PostgreSQL queries (`source = "postgres"`)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from scaleops.core.clients import postgres_connect
from scaleops.core.retry import io_task
from scaleops.core.settings import Settings


def fetch_postgres_series(conn: Any, specs: Any, start: float, end: float) -> list[Any]:
    """Capacity series from SQL: each spec's query returns (timestamp, value) rows and may use the
    parameters %(start)s and %(end)s (timestamptz). A failing query is that series' error."""
    from datetime import UTC

    from scaleops.core.retry import is_transient
    from tasks.capacity.models import SeriesData, epoch_seconds

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
