"""Prometheus: range queries over the HTTP API (`/api/v1/query_range`), one call per series."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import httpx  # noqa: F401 - imported once here, not first inside concurrent task threads

from scaleops.core.clients import prometheus_http
from scaleops.core.retry import io_task, is_transient
from scaleops.core.settings import SeriesSettings, Settings
from tasks.capacity.models import SeriesData, parse_duration

DEFAULT_STEP = "1h"


def query_range(client: Any, query: str, start: float, end: float, step_seconds: float) -> dict[str, Any]:
    """The raw `data` of a range query; raises on HTTP errors, returns Prometheus' error in words."""
    response = client.get(
        "/api/v1/query_range",
        params={"query": query, "start": f"{start:.3f}", "end": f"{end:.3f}", "step": f"{step_seconds:g}s"},
    )
    if response.status_code in (400, 422):
        body = response.json()
        raise ValueError(f"Prometheus rejected the query: {body.get('error', response.text)}")
    response.raise_for_status()
    body = response.json()
    if body.get("status") != "success":
        raise ValueError(f"Prometheus answered {body.get('status')}: {body.get('error')}")
    return dict(body["data"])


def fetch_prometheus_series(
    client: Any, specs: Sequence[SeriesSettings], start: float, end: float
) -> list[SeriesData]:
    """Every series' points between `start` and `end` (epoch seconds). A query that returns no series or
    several is that series' error; transient failures raise (the task retries)."""
    out = []
    for spec in specs:
        step = parse_duration(spec.step or DEFAULT_STEP)
        # align to the step so that repeated runs ask for the same grid
        aligned_end = math.floor(end / step) * step
        aligned_start = math.ceil(start / step) * step
        try:
            data = query_range(client, spec.query or "", aligned_start, aligned_end, step)
        except Exception as exc:
            if is_transient(exc):
                raise
            out.append(SeriesData(spec.name, step_seconds=step, error=str(exc)))
            continue
        result = data.get("result") or []
        if len(result) != 1:
            labels = [r.get("metric", {}) for r in result[:3]]
            out.append(
                SeriesData(
                    spec.name,
                    step_seconds=step,
                    error=f"the query returned {len(result)} series (need exactly one; aggregate it, "
                    f"e.g. sum(...)); first labels: {labels}",
                )
            )
            continue
        points = result[0].get("values", [])
        out.append(
            SeriesData(
                spec.name,
                timestamps=[float(t) for t, _ in points],
                values=[float(v) for _, v in points],
                step_seconds=step,
            )
        )
    return out


@io_task(task_run_name="prometheus-fetch-{count}-series")
def prometheus_fetch(
    settings: Settings, specs: list[SeriesSettings], start: float, end: float, count: int
) -> list[SeriesData]:
    with prometheus_http(settings) as client:
        return fetch_prometheus_series(client, specs, start, end)
