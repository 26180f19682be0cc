"""Validation of metric series with great-expectations 1.x, before anything is forecast.

One expectation suite per series: timestamps unique and strictly increasing, a regular cadence (gaps
up to `max_gap_steps` steps are interpolated and reported, longer ones fail the series), values finite
and inside `bounds`, the last point fresh (near `as_of`), enough history. A failing series comes back
with the failed expectations in words; a passing one comes back on a regular grid.
"""

from __future__ import annotations

import logging
import threading
import uuid
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

log = logging.getLogger(__name__)
# GX logs its import-time bookkeeping and ephemeral set-up at INFO: not news for an operator
logging.getLogger("great_expectations").setLevel(logging.WARNING)

_LOCK = threading.Lock()
_BATCH: Any = None


def _batch_definition() -> Any:
    """One ephemeral GX context per process, progress bars off, a whole-dataframe batch definition."""
    global _BATCH
    with _LOCK:
        if _BATCH is None:
            import great_expectations as gx
            from great_expectations.data_context.types.base import ProgressBarsConfig

            # this module sets its own logger to INFO at import: quiet it after the import
            logging.getLogger("great_expectations.data_context.types.base").setLevel(logging.WARNING)
            context = gx.get_context(mode="ephemeral")
            context.variables.progress_bars = ProgressBarsConfig(globally=False)
            source = context.data_sources.add_pandas("scaleops-capacity")
            asset = source.add_dataframe_asset("metric-series")
            _BATCH = asset.add_batch_definition_whole_dataframe("whole-series")
        return _BATCH


@dataclass
class Validated:
    """The outcome for one series: failed expectations (empty when ok) and the regular series."""

    ok: bool
    failures: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    timestamps: np.ndarray = field(default_factory=lambda: np.empty(0))  # epoch seconds, regular
    values: np.ndarray = field(default_factory=lambda: np.empty(0))
    interpolated: int = 0


def _describe(kind: str, result: dict[str, Any], context: dict[str, Any]) -> str:
    count = result.get("unexpected_count")
    sample = result.get("partial_unexpected_list") or []
    sample_text = ", ".join(f"{v:g}" if isinstance(v, float) else str(v) for v in sample[:3])
    if kind == "expect_column_values_to_be_unique":
        return f"timestamps_unique: {count} timestamps repeat (e.g. {_ts(sample[:3])})"
    if kind == "expect_column_values_to_be_increasing":
        return f"timestamps_increasing: {count} timestamps go back in time (e.g. {_ts(sample[:3])})"
    if kind == "expect_column_values_to_not_be_null":
        return f"values_finite: {count} values are missing, NaN or infinite"
    if kind == "expect_column_values_to_be_between" and context["column"] == "finite_value":
        return f"values_in_bounds: {count} values outside {context['bounds']} (e.g. {sample_text})"
    if kind == "expect_column_values_to_be_between":
        return (
            f"regular_cadence: {count} gaps longer than {context['max_gap_steps']} steps of "
            f"{context['step']:g}s or shorter than half a step (gap lengths in steps: {sample_text})"
        )
    if kind == "expect_column_max_to_be_between":
        observed = result.get("observed_value")
        age = context["as_of"] - float(observed) if observed is not None else float("nan")
        return (
            f"fresh: the last point is {age:,.0f}s before as_of (allowed {context['staleness']:,.0f}s), "
            f"or after it"
        )
    if kind == "expect_table_row_count_to_be_between":
        return (
            f"enough_history: {result.get('observed_value')} points, need at least {context['min_points']} "
            f"(two cycles of the longest season)"
        )
    return f"{kind}: failed ({result})"


def _ts(values: list[Any]) -> str:
    out = []
    for v in values:
        try:
            out.append(pd.Timestamp(float(v), unit="s", tz="UTC").isoformat())
        except (TypeError, ValueError):
            out.append(str(v))
    return ", ".join(out)


def validate_series(
    timestamps: np.ndarray | list[float],
    values: np.ndarray | list[float],
    *,
    step_seconds: float,
    as_of: float,
    bounds: tuple[float | None, float | None] | None = None,
    max_staleness_seconds: float = 3600.0,
    max_gap_steps: int = 6,
    min_points: int = 48,
) -> Validated:
    """Run the expectation suite on (epoch-seconds timestamps, values); regularise when it passes."""
    import great_expectations as gx

    t = np.asarray(timestamps, dtype=float)
    v = np.asarray(values, dtype=float)
    gaps = np.concatenate([[1.0], np.diff(t) / step_seconds]) if t.size else np.empty(0)
    frame = pd.DataFrame({"t": t, "finite_value": np.where(np.isfinite(v), v, np.nan), "gap_steps": gaps})
    staleness = max(max_staleness_seconds, 2 * step_seconds)
    low, high = bounds if bounds is not None else (None, None)
    batch_definition = _batch_definition()  # creates the GX context the suite belongs to
    suite = gx.ExpectationSuite(name=f"capacity-series-{uuid.uuid4().hex[:8]}")
    E = gx.expectations
    suite.add_expectation(E.ExpectColumnValuesToBeUnique(column="t"))
    suite.add_expectation(E.ExpectColumnValuesToBeIncreasing(column="t", strictly=True))
    suite.add_expectation(E.ExpectColumnValuesToNotBeNull(column="finite_value"))
    if low is not None or high is not None:
        suite.add_expectation(
            E.ExpectColumnValuesToBeBetween(column="finite_value", min_value=low, max_value=high)
        )
    suite.add_expectation(
        E.ExpectColumnValuesToBeBetween(column="gap_steps", min_value=0.5, max_value=max_gap_steps + 0.5)
    )
    suite.add_expectation(
        E.ExpectColumnMaxToBeBetween(column="t", min_value=as_of - staleness, max_value=as_of + step_seconds)
    )
    suite.add_expectation(E.ExpectTableRowCountToBeBetween(min_value=min_points))
    batch = batch_definition.get_batch(batch_parameters={"dataframe": frame})
    outcome = batch.validate(suite, result_format={"result_format": "SUMMARY", "partial_unexpected_count": 5})
    context = {
        "bounds": f"[{'' if low is None else f'{low:g}'}, {'' if high is None else f'{high:g}'}]",
        "max_gap_steps": max_gap_steps,
        "step": step_seconds,
        "as_of": as_of,
        "staleness": staleness,
        "min_points": min_points,
    }
    failures = []
    for item in outcome.results:
        if item.success:
            continue
        config = item.expectation_config
        kind = config.type
        column = config.kwargs.get("column")
        failures.append(_describe(kind, dict(item.result), {**context, "column": column}))
    if failures:
        return Validated(ok=False, failures=failures)
    grid_t, grid_v, filled = regularise(t, v, step_seconds)
    notes = [f"interpolated {filled} missing points in short gaps"] if filled else []
    return Validated(ok=True, notes=notes, timestamps=grid_t, values=grid_v, interpolated=filled)


def regularise(t: np.ndarray, v: np.ndarray, step_seconds: float) -> tuple[np.ndarray, np.ndarray, int]:
    """Snap to the grid that ends at the last timestamp; fill missing grid points linearly."""
    end = t[-1]
    index = np.round((t - end) / step_seconds).astype(int)
    size = int(-index[0]) + 1
    grid_v = np.full(size, np.nan)
    grid_v[index + size - 1] = v
    missing = np.isnan(grid_v)
    filled = int(missing.sum())
    if filled:
        positions = np.arange(size)
        grid_v[missing] = np.interp(positions[missing], positions[~missing], grid_v[~missing])
    grid_t = end + (np.arange(size) - (size - 1)) * step_seconds
    return grid_t, grid_v, filled
