"""Where capacity series come from: Prometheus, CloudWatch, CSV files, PostgreSQL; `fetch_all` asks
each source once for all of its series."""

from __future__ import annotations

from collections import defaultdict
from typing import TYPE_CHECKING

from scaleops.core.endpoints import unreachable
from tasks.capacity.models import SeriesData
from tasks.capacity.report import UNREACHABLE

if TYPE_CHECKING:
    from scaleops.core.settings import SeriesSettings, Settings


def fetch_all(settings: Settings, specs: list[SeriesSettings], start: float, end: float) -> list[SeriesData]:
    """One batch task per source system, run concurrently; results in the order of `specs`."""
    from tasks.capacity.sources.cloudwatch import cloudwatch_fetch
    from tasks.capacity.sources.file_fetch import csv_fetch
    from tasks.capacity.sources.postgres import postgres_fetch
    from tasks.capacity.sources.prometheus import prometheus_fetch

    by_source: dict[str, list[SeriesSettings]] = defaultdict(list)
    for spec in specs:
        by_source[spec.source].append(spec)
    futures = []
    for source, group in by_source.items():
        n = len(group)
        if source == "prometheus":
            futures.append((group, prometheus_fetch.submit(settings, group, start, end, n)))
        elif source == "cloudwatch":
            futures.append((group, cloudwatch_fetch.submit(settings, group, start, end, n)))
        elif source == "postgres":
            futures.append((group, postgres_fetch.submit(settings, group, start, end, n)))
        else:
            futures.append((group, csv_fetch.submit(group, start, end, n)))
    found: dict[str, SeriesData] = {}
    for group, future in futures:
        state = future.wait() or future.state
        if state is not None and not state.is_completed():
            raised = state.result(raise_on_failure=False)
            named = unreachable(raised, settings) if isinstance(raised, BaseException) else None
            error = f"{UNREACHABLE}{named}" if named else f"fetch failed: {state.message or state.name}"
            for spec in group:
                found[spec.name] = SeriesData(spec.name, error=error)
            continue
        for item in future.result():
            found[item.name] = item
    return [found[spec.name] for spec in specs]


def select_series(configured: list[SeriesSettings], names: list[str] | None) -> list[SeriesSettings]:
    """The configured series named in `names` (all when None); an unknown name is refused."""
    if not configured:
        raise ValueError("series: no series configured (SCALEOPS_CAPACITY__SERIES)")
    unknown = sorted(set(names or []) - {s.name for s in configured})
    if unknown:
        raise ValueError(f"unknown series: {', '.join(unknown)}; configured: {[s.name for s in configured]}")
    return [s for s in configured if not names or s.name in names]
