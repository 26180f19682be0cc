"""Per-series analysis for capacity-forecast: validate, forecast, date the breach, recommend."""

from __future__ import annotations

import math
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

import pandas as pd
from prefect import task
from prefect.cache_policies import NO_CACHE

from scaleops.core.redaction import REDACTOR
from scaleops.core.reporting import run_logger
from scaleops.core.settings import CapacitySettings, SeriesSettings
from tasks.capacity.models import (
    DAY,
    MAX_HORIZON_STEPS,
    WEEK,
    Forecast,
    SeriesData,
    breach,
    explain,
    forecast_many,
    parse_duration,
    recommend,
)
from tasks.capacity.repair import (
    Aggregate,
    Repaired,
    Unusable,
    min_points_for,
    repair_series,
    robust_step,
)
from tasks.capacity.report import SeriesResult, fmt_time
from tasks.capacity.validation import Validated, validate_series

PARALLEL_FROM = 8  # fewer series than this are fitted in this process (spawning workers costs more)


def analyse_series(
    data: SeriesData,
    *,
    as_of: float,
    horizon_seconds: float | None = None,
    horizon_steps_: int | None = None,
    bounds: tuple[float | None, float | None] | None = None,
    max_staleness_seconds: float = 7200,
    max_gap_steps: int = 6,
    aggregate: Aggregate = "mean",
    max_fill_seconds: float = DAY,
    dst: bool = True,
) -> tuple[Validated, dict[str, Any] | None, float, Repaired | None]:
    """Repair one series, validate the repaired series; when it passes, the keyword arguments of
    `forecast_series` for it. A series that cannot be repaired fails as `repairable`."""
    repaired: Repaired | None = None
    step = float(data.step_seconds or 1.0)
    if len(data.timestamps) >= 2:  # fewer: nothing to repair, the suite says what is missing
        try:
            step = float(data.step_seconds or robust_step(data.timestamps))
            repaired = repair_series(
                data.timestamps,
                data.values,
                step_seconds=step,
                aggregate=aggregate,
                max_fill_seconds=max_fill_seconds,
                min_points=min_points_for(step),
                dst=dst,
            )
        except Unusable as exc:
            return Validated(ok=False, failures=[f"repairable: {exc}"]), None, step, None
    stamps: Any = data.timestamps
    values: Any = data.values
    allowed_gap = max_gap_steps
    if repaired is not None:  # long gaps left missing on purpose are in `repairs`, not a cadence failure
        stamps, values, allowed_gap = repaired.for_validation(max_gap_steps)
    checked = validate_series(
        stamps,
        values,
        step_seconds=step,
        as_of=as_of,
        bounds=bounds,
        max_staleness_seconds=max_staleness_seconds,
        max_gap_steps=allowed_gap,
        min_points=min_points_for(step),
    )
    checked.notes = (repaired.notes if repaired else []) + checked.notes
    if not checked.ok:
        return checked, None, step, repaired
    if repaired is not None:  # forecast the repaired series itself, gaps left missing as NaN
        checked.timestamps, checked.values = repaired.timestamps, repaired.values
    h = horizon_steps_ or max(1, math.ceil((horizon_seconds or WEEK) / step))
    if h > MAX_HORIZON_STEPS:  # a huge horizon would only allocate (issue 18.8): refuse this series
        failure = f"horizon: {h} steps of {step:g}s asked, at most {MAX_HORIZON_STEPS} are forecast"
        return Validated(ok=False, failures=[failure], notes=checked.notes), None, step, repaired
    job = {"values": checked.values, "step_seconds": step, "horizon": h, "bounds": bounds}
    return checked, job, step, repaired


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
    result.why = explain(fc)
    result.notes += fc.notes
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


def validate_and_forecast(
    specs: list[SeriesSettings],
    fetched: list[SeriesData],
    *,
    as_of: datetime,
    horizon_seconds: float,
    capacity: CapacitySettings,
    charts: bool,
) -> tuple[list[SeriesResult], dict[str, str]]:
    """Validate every fetched series, forecast the valid ones (in worker processes when there are
    many), date their breaches and recommend; returns one result per spec and a chart per series."""
    log = run_logger()
    results: list[SeriesResult] = []
    pending: list[tuple[SeriesResult, SeriesSettings, Validated, float, Repaired | None]] = []

    def jobs() -> Iterator[dict[str, Any]]:
        """Repair and validate one series at a time, handing each valid one to the fitting workers at
        once: this process validates while they fit."""
        for spec, data in zip(specs, fetched, strict=True):
            result = SeriesResult(
                name=spec.name, source=spec.source, unit=spec.unit, threshold=spec.threshold
            )
            results.append(result)
            if data.error:
                result.status, result.failures = "fetch-failed", [REDACTOR.text(data.error)]
                continue
            checked, job, step, repaired = analyse_series(
                data,
                as_of=as_of.timestamp(),
                horizon_seconds=horizon_seconds,
                bounds=spec.bounds,
                max_staleness_seconds=parse_duration(capacity.max_staleness),
                max_gap_steps=capacity.max_gap_steps,
                aggregate=capacity.duplicates,
                max_fill_seconds=parse_duration(capacity.max_fill),
                dst=capacity.dst_repair,
            )
            result.step_seconds, result.points = step, len(data.values)
            if repaired is not None:
                result.repairs = repaired.repairs.as_dict()
            if job is None:
                result.status, result.failures = "invalid", checked.failures
                continue
            result.notes += checked.notes
            result.last_value = float(checked.values[-1])
            pending.append((result, spec, checked, step, repaired))
            yield job

    log.info("capacity-forecast: validating and forecasting %d series", len(specs))
    workers = capacity.workers if len(specs) >= PARALLEL_FROM else 1
    every = max(1, len(specs) // 20)  # about 20 progress lines, not one per series

    def progress(done: int, total: int) -> None:
        if done % every == 0 or done == total:
            log.info("forecast %d/%d series", done, total)

    forecasts = forecast_many(jobs(), workers=workers, progress=progress, dask_address=capacity.dask_address)
    log.info("capacity-forecast: %d series valid and forecast", len(pending))
    pictures: dict[str, str] = {}
    for (result, spec, checked, step, repaired), fc in zip(pending, forecasts, strict=True):
        if not isinstance(fc, Forecast):
            result.status, result.failures = "forecast-failed", [fc]
            continue
        fill_result(result, spec, fc, checked, step, as_of, capacity.lead_time, capacity.headroom)
        if charts:
            from tasks.capacity.charts import chart_for  # matplotlib only when charts are wanted

            filled = repaired.filled if repaired is not None else None
            pictures[spec.name] = chart_for(result, spec, fc, checked, step, filled)
    return results, pictures


@task(task_run_name="validate-and-forecast-{count}-series", cache_policy=NO_CACHE)
def validate_and_forecast_task(
    specs: list[SeriesSettings],
    fetched: list[SeriesData],
    *,
    as_of: datetime,
    horizon_seconds: float,
    capacity: CapacitySettings,
    charts: bool,
    count: int,
) -> tuple[list[SeriesResult], dict[str, str]]:
    """One task for all series: the work is CPU, not I/O, and never retried."""
    return validate_and_forecast(
        specs, fetched, as_of=as_of, horizon_seconds=horizon_seconds, capacity=capacity, charts=charts
    )
