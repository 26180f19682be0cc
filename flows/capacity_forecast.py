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
import math
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd
from pydantic import BaseModel, Field

from scaleops.duties import duty_flow
from scaleops.redaction import Redactor, protect
from scaleops.reporting import DutyReport, flush_events, publish_report, utcnow
from scaleops.settings import SeriesSettings, Settings, load_settings
from tasks.forecasting import (
    DAY,
    WEEK,
    Forecast,
    SeriesData,
    breach,
    forecast_many,
    infer_step,
    parse_duration,
    recommend,
)
from tasks.series_validation import Validated, validate_series

log = logging.getLogger(__name__)

NAMESPACE = "capacity"
PARALLEL_FROM = 8  # fewer series than this are fitted in this process (spawning workers costs more)


class SeriesResult(BaseModel):
    """One series' outcome: validation, model, CV error, breach dates, recommendation."""

    name: str
    source: str
    unit: str = ""
    threshold: float
    status: str = "ok"  # ok | breach-within-lead-time | invalid | fetch-failed | forecast-failed
    failures: list[str] = Field(default_factory=list)
    notes: list[str] = Field(default_factory=list)
    points: int = 0
    step_seconds: float | None = None
    last_value: float | None = None
    model: str | None = None
    cv_mase: float | None = None
    cv_mae: dict[str, float] = Field(default_factory=dict)
    breach_at: datetime | None = None
    breach_at_upper: datetime | None = None
    breach_at_lower: datetime | None = None
    lead_time_days: float | None = None
    peak_upper_95: float | None = None
    recommendation: str | None = None
    recommended_units: int | None = None
    monthly_cost: float | None = None
    event_emitted: bool = False


class CapacityReport(DutyReport):
    duty: str = "capacity-forecast"
    horizon: str = ""
    lookback: str = ""
    series: list[SeriesResult] = Field(default_factory=list)


def min_points_for(step_seconds: float) -> int:
    """Two cycles of the longest season that can be used: two days of points for sub-daily series."""
    if step_seconds <= DAY / 2:
        return max(16, math.ceil(2 * DAY / step_seconds))
    return 16


def analyse_series(
    data: SeriesData,
    *,
    as_of: float,
    horizon_seconds: float | None = None,
    horizon_steps_: int | None = None,
    bounds: tuple[float | None, float | None] | None = None,
    max_staleness_seconds: float = 7200,
    max_gap_steps: int = 6,
) -> tuple[Validated, dict[str, Any] | None, float]:
    """Validate one series; when it passes, the keyword arguments of `forecast_series` for it."""
    step = data.step_seconds
    if step is None and len(data.timestamps) >= 2:
        step = infer_step(data.timestamps)
    step = float(step or 1.0)
    checked = validate_series(
        data.timestamps,
        data.values,
        step_seconds=step,
        as_of=as_of,
        bounds=bounds,
        max_staleness_seconds=max_staleness_seconds,
        max_gap_steps=max_gap_steps,
        min_points=min_points_for(step),
    )
    if not checked.ok:
        return checked, None, step
    h = horizon_steps_ or max(1, math.ceil((horizon_seconds or WEEK) / step))
    job = {"values": checked.values, "step_seconds": step, "horizon": h, "bounds": bounds}
    return checked, job, step


def fetch_all(settings: Settings, specs: list[SeriesSettings], start: float, end: float) -> list[SeriesData]:
    """One batch task per source system, run concurrently; results in the order of `specs`."""
    from tasks.cloudwatch import cloudwatch_fetch
    from tasks.metric_files import csv_fetch
    from tasks.postgres import postgres_fetch
    from tasks.prometheus import prometheus_fetch

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
            for spec in group:
                found[spec.name] = SeriesData(spec.name, error=f"fetch failed: {state.message or state.name}")
            continue
        for item in future.result():
            found[item.name] = item
    return [found[spec.name] for spec in specs]


def fmt_time(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M UTC") if value else "-"


def render_markdown(report: CapacityReport, charts: dict[str, str]) -> str:
    breaching = [s for s in report.series if s.status == "breach-within-lead-time"]
    failing = [s for s in report.series if s.status not in ("ok", "breach-within-lead-time")]
    lines = [
        f"# Capacity forecast: {len(breaching)} breach(es) within lead time, "
        f"{len(failing)} series not forecast",
        "",
        f"as of `{report.as_of.isoformat()}`, lookback {report.lookback}, horizon {report.horizon}",
        "",
        "| series | model | CV MASE | last | threshold | breach (mean) | earliest (upper 95%) | "
        "latest (lower 95%) | recommendation |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for s in report.series:
        lines.append(
            f"| {s.name} | {s.model or s.status} | {'' if s.cv_mase is None else f'{s.cv_mase:.2f}'} | "
            f"{'' if s.last_value is None else f'{s.last_value:.4g}'} {s.unit} | {s.threshold:g} {s.unit} | "
            f"{fmt_time(s.breach_at)} | {fmt_time(s.breach_at_upper)} | {fmt_time(s.breach_at_lower)} | "
            f"{s.recommendation or ''} |"
        )
    for s in report.series:
        lines += ["", f"## {s.name} ({s.source}): {s.status}"]
        if s.breach_at_upper:
            earliest, latest = fmt_time(s.breach_at_upper), fmt_time(s.breach_at_lower)
            lines.append(
                f"- crosses {s.threshold:g} {s.unit} around **{fmt_time(s.breach_at)}** "
                f"(between {earliest} and {latest if s.breach_at_lower else 'after the horizon'})"
            )
        if s.recommendation:
            lines.append(f"- recommendation: {s.recommendation}")
        for failure in s.failures:
            lines.append(f"- failed: {failure}")
        for note in s.notes:
            lines.append(f"- note: {note}")
        if s.name in charts:
            lines += ["", f"![{s.name}]({charts[s.name]})"]
    return "\n".join(lines)


def emit_breach_event(result: SeriesResult, redactor: Redactor) -> None:
    from prefect.events import emit_event

    emit_event(
        event=f"scaleops.{NAMESPACE}.breach-forecast",
        resource={"prefect.resource.id": result.name, "scaleops.duty": "capacity-forecast"},
        payload=redactor.data(result.model_dump(mode="json")),
    )


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


def fill_result(
    result: SeriesResult,
    spec: SeriesSettings,
    fc: Forecast,
    checked: Validated,
    step: float,
    as_of: datetime,
    default_lead_time: str,
    headroom: float,
) -> None:
    """Breach dates, lead time verdict and recommendation for one forecast series."""
    frame = fc.frame(pd.Timestamp(checked.timestamps[-1], unit="s", tz="UTC"), step)
    found = breach(frame, spec.threshold, spec.direction)
    result.model, result.cv_mase = fc.model, round(fc.cv_mase, 4)
    result.cv_mae = {k: round(v, 6) for k, v in fc.cv_mae.items()}
    result.breach_at = found.breach_at
    result.breach_at_upper, result.breach_at_lower = found.breach_at_upper, found.breach_at_lower
    result.peak_upper_95 = round(found.peak_upper, 6)
    lead = timedelta(seconds=parse_duration(spec.lead_time or default_lead_time))
    result.lead_time_days = lead.total_seconds() / DAY
    if found.breach_at_upper is not None and found.breach_at_upper - as_of <= lead:
        result.status = "breach-within-lead-time"
    advice = recommend(
        found.peak_upper,
        spec.threshold,
        capacity_per_unit=spec.capacity_per_unit,
        unit_cost_per_month=spec.unit_cost_per_month,
        unit=spec.unit,
        headroom=headroom,
        direction=spec.direction,
    )
    if advice:
        result.recommended_units, result.monthly_cost = advice.units, advice.monthly_cost
        result.recommendation = advice.text
        if advice.units and found.breach_at_upper:
            result.recommendation += f", before {fmt_time(found.breach_at_upper)}"


def chart_for(
    result: SeriesResult, spec: SeriesSettings, fc: Forecast, checked: Validated, step: float
) -> str:
    from tasks.capacity_charts import data_uri, forecast_chart

    frame = fc.frame(pd.Timestamp(checked.timestamps[-1], unit="s", tz="UTC"), step)
    png = forecast_chart(
        np.asarray(checked.timestamps),
        np.asarray(checked.values),
        frame,
        threshold=spec.threshold,
        title=f"{spec.name}: {fc.model}, CV MASE {fc.cv_mase:.2f}",
        unit=spec.unit,
    )
    return data_uri(png)
