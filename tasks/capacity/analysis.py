"""Per-series analysis for capacity-forecast: validate, forecast, date the breach, recommend."""

from __future__ import annotations

import math
from datetime import datetime, timedelta
from typing import Any

import pandas as pd

from scaleops.core.settings import SeriesSettings
from tasks.capacity.models import (
    DAY,
    WEEK,
    Forecast,
    SeriesData,
    breach,
    infer_step,
    parse_duration,
    recommend,
)
from tasks.capacity.report import SeriesResult, fmt_time
from tasks.capacity.validation import Validated, validate_series

PARALLEL_FROM = 8  # fewer series than this are fitted in this process (spawning workers costs more)


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
