"""Duty `capacity-forecast`: metric history in, dated capacity warnings out.

For every configured series (SCALEOPS_CAPACITY__SERIES): fetch the lookback window ending at `as_of`
(Prometheus, CloudWatch, CSV or PostgreSQL, one batch per source), repair it (sort, merge duplicates,
undo DST, snap jitter, fill gaps, cut at a long one; every repair counted), validate the repaired series
with great-expectations (a failing series is reported with its failed expectations and not forecast),
forecast it (model chosen per series by rolling-origin CV among the naive baselines and smarter
candidates, calibrated 80/95% intervals; fits in local processes or on a Dask cluster), find when the
threshold is crossed (`breach_at` by the mean, `breach_at_upper` by the upper 95%), recommend capacity
and its monthly cost, and emit `scaleops.capacity.breach-forecast` for every series whose upper 95%
crosses within the lead time. One table artifact, one markdown artifact with a chart per series."""

from __future__ import annotations

from datetime import datetime

from scaleops.core.duties import duty
from scaleops.core.reporting import as_datetime, run_logger
from scaleops.core.settings import Settings
from tasks.capacity.analysis import validate_and_forecast_task
from tasks.capacity.models import parse_duration
from tasks.capacity.report import CapacityReport
from tasks.capacity.sources import fetch_all, select_series


def needs(settings: Settings) -> list[str]:
    cap = settings.capacity
    if not cap.series:
        return ["no series configured (SCALEOPS_CAPACITY__SERIES)"]
    if any(s.source == "prometheus" for s in cap.series) and not cap.prometheus_url:
        return ["prometheus series configured but no SCALEOPS_CAPACITY__PROMETHEUS_URL"]
    return []


@duty(
    "capacity-forecast",
    namespace="capacity",
    report=CapacityReport,
    summary="forecast metric series (Prometheus, CloudWatch, CSV, PostgreSQL), date threshold breaches, "
    "recommend capacity and cost",
    needs=needs,
)
def capacity_forecast(
    settings: Settings,
    as_of: datetime | None = None,
    series: list[str] | None = None,
    horizon: str | None = None,
    lookback: str | None = None,
    charts: bool = True,
) -> CapacityReport:
    """Forecast every configured series (or only those named in `series`) and warn of breaches.

    Args:
        as_of: the end of the history window and the clock of breach dates (default now).
        series: forecast only these configured series (by name).
        horizon: how far ahead, e.g. 30d (default: SCALEOPS_CAPACITY__HORIZON).
        lookback: how much history, e.g. 28d (default: SCALEOPS_CAPACITY__LOOKBACK).
        charts: draw a chart per series in the report artifact.
    """
    cap = settings.capacity
    clock = as_datetime(as_of)
    report = CapacityReport(as_of=clock, horizon=horizon or cap.horizon, lookback=lookback or cap.lookback)
    specs = select_series(cap.series, series)
    end = clock.timestamp()
    run_logger().info(
        "capacity-forecast: fetching %d series, %s back from %s", len(specs), report.lookback, clock
    )
    fetched = fetch_all(settings, specs, end - parse_duration(report.lookback), end)

    results, pictures = validate_and_forecast_task(
        specs,
        fetched,
        as_of=clock,
        horizon_seconds=parse_duration(report.horizon),
        capacity=cap,
        charts=charts,
        count=len(specs),
    )
    report.record(results, pictures)
    return report
