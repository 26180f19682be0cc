"""Duty `capacity-forecast`: metric history in, dated capacity warnings out.

For every configured series (SCALEOPS_CAPACITY__SERIES): fetch the lookback window ending at `as_of`
(Prometheus, CloudWatch, CSV or PostgreSQL, one batch per source), validate it with great-expectations
(a failing series is reported with its failed expectations and not forecast), forecast it (model chosen
per series by rolling-origin CV, calibrated 80/95% intervals), find when the threshold is crossed
(`breach_at` by the mean, `breach_at_upper` by the upper 95%), recommend capacity and its monthly cost,
and emit `scaleops.capacity.breach-forecast` for every series whose upper 95% crosses within the lead
time. One table artifact, one markdown artifact with a chart per series.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

from scaleops.core.duties import duty_flow
from scaleops.core.redaction import protect
from scaleops.core.reporting import flush_events, publish_report, utcnow
from scaleops.core.settings import SeriesSettings, load_settings
from tasks.capacity.analysis import PARALLEL_FROM, analyse_series, fill_result
from tasks.capacity.charts import chart_for
from tasks.capacity.models import (
    Forecast,
    forecast_many,
    parse_duration,
)
from tasks.capacity.report import CapacityReport, SeriesResult, emit_breach_event, fmt_time, render_markdown
from tasks.capacity.sources import fetch_all
from tasks.capacity.validation import Validated

log = logging.getLogger(__name__)

NAMESPACE = "capacity"


@duty_flow("capacity-forecast", NAMESPACE)
def capacity_forecast(
    as_of: datetime | None = None,
    series: list[str] | None = None,
    horizon: str | None = None,
    lookback: str | None = None,
    charts: bool = True,
) -> CapacityReport:
    """Forecast every configured series (or only those named in `series`) and warn of breaches."""
    from prefect import task

    settings = load_settings()
    redactor = protect(settings.secrets())
    cap = settings.capacity
    as_of = as_of or utcnow()
    if as_of.tzinfo is None:
        as_of = as_of.replace(tzinfo=UTC)
    horizon = horizon or cap.horizon
    lookback = lookback or cap.lookback
    horizon_seconds, lookback_seconds = parse_duration(horizon), parse_duration(lookback)
    report = CapacityReport(as_of=as_of, horizon=horizon, lookback=lookback)
    specs = [s for s in cap.series if not series or s.name in series]
    unknown = sorted(set(series or []) - {s.name for s in cap.series})
    if unknown:
        raise ValueError(f"unknown series: {', '.join(unknown)}; configured: {[s.name for s in cap.series]}")
    end = as_of.timestamp()
    start = end - lookback_seconds
    log.info(
        "capacity-forecast: fetching %d series, %s back from %s", len(specs), lookback, as_of.isoformat()
    )
    fetched = fetch_all(settings, specs, start, end)

    @task(task_run_name="validate-and-forecast-{count}-series")
    def validate_and_forecast(count: int) -> tuple[list[SeriesResult], dict[str, str]]:
        results: list[SeriesResult] = []
        jobs: list[dict[str, Any]] = []
        pending: list[tuple[SeriesResult, SeriesSettings, Validated, float]] = []
        for spec, data in zip(specs, fetched, strict=True):
            result = SeriesResult(
                name=spec.name, source=spec.source, unit=spec.unit, threshold=spec.threshold
            )
            results.append(result)
            if data.error:
                result.status, result.failures = "fetch-failed", [redactor.text(data.error)]
                continue
            checked, job, step = analyse_series(
                data,
                as_of=end,
                horizon_seconds=horizon_seconds,
                bounds=spec.bounds,
                max_staleness_seconds=parse_duration(cap.max_staleness),
                max_gap_steps=cap.max_gap_steps,
            )
            result.step_seconds, result.points = step, len(data.values)
            if job is None:
                result.status, result.failures = "invalid", checked.failures
                continue
            result.notes += checked.notes
            result.last_value = float(checked.values[-1])
            jobs.append(job)
            pending.append((result, spec, checked, step))
        log.info("capacity-forecast: %d series valid, forecasting", len(jobs))
        workers = cap.workers if len(jobs) >= PARALLEL_FROM else 1
        forecasts = forecast_many(
            jobs, workers=workers, progress=lambda done, total: log.info("forecast %d/%d series", done, total)
        )
        pictures: dict[str, str] = {}
        for (result, spec, checked, step), fc in zip(pending, forecasts, strict=True):
            if not isinstance(fc, Forecast):
                result.status, result.failures = "forecast-failed", [fc]
                continue
            fill_result(result, spec, fc, checked, step, as_of, cap.lead_time, cap.headroom)
            if charts:
                pictures[spec.name] = chart_for(result, spec, fc, checked, step)
        return results, pictures

    results, pictures = validate_and_forecast(len(specs))
    report.series = results
    for result in results:
        if result.status in ("fetch-failed", "invalid", "forecast-failed"):
            report.problem(f"{result.name}: {result.status}: {'; '.join(result.failures)}")
        elif result.status == "breach-within-lead-time":
            report.problem(
                f"{result.name}: may cross {result.threshold:g} {result.unit} from "
                f"{fmt_time(result.breach_at_upper)} (mean forecast: {fmt_time(result.breach_at)})"
            )
            emit_breach_event(result, redactor)
            result.event_emitted = True
    report.finish()
    table = [
        {
            "series": s.name,
            "status": s.status,
            "model": s.model,
            "cv_mase": None if s.cv_mase is None else round(s.cv_mase, 3),
            "breach_at": fmt_time(s.breach_at),
            "breach_at_upper": fmt_time(s.breach_at_upper),
            "recommendation": s.recommendation or "",
            "monthly_cost": s.monthly_cost,
        }
        for s in report.series
    ]
    breaches = sum(1 for s in report.series if s.status == "breach-within-lead-time")
    invalid = any(s.status not in ("ok", "breach-within-lead-time") for s in report.series)
    outcome = "series-failed" if invalid else ("breaches" if breaches else "ok")
    publish_report(
        report,
        namespace=NAMESPACE,
        outcome=outcome,
        resource_id="scaleops.capacity",
        markdown=render_markdown(report, pictures),
        table=table,
        redactor=redactor,
    )
    flush_events()
    return report
