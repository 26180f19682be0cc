"""`scaleops forecast`: the capacity-forecast code path on one `timestamp,value` CSV file (registered
in scaleops/cli/app.py as a command)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from scaleops.cli.console import EXIT_OK, EXIT_PROBLEMS, err, fail


def forecast(
    input: Annotated[Path, typer.Option("--input", "-i", help="CSV with a timestamp,value header")],
    horizon: Annotated[str, typer.Option("--horizon", help="steps (48) or a duration (6h, 1d, 7d)")],
    output: Annotated[Path, typer.Option("--output", "-o", help="CSV to write the forecast to")],
    threshold: Annotated[float | None, typer.Option(help="report when the forecast crosses it")] = None,
    below: Annotated[bool, typer.Option("--below", help="the threshold is crossed downwards")] = False,
) -> None:
    """Forecast one timestamp,value CSV (the capacity-forecast code path): write
    `timestamp,mean,lo_80,hi_80,lo_95,hi_95`, print the chosen model and its CV error.

    Exit 0: forecast written (no threshold crossed); 1: written, and the threshold is crossed within the
    horizon; 2: the file is malformed, fails validation, or the horizon is bad.
    """
    from tasks.capacity.analysis import analyse_series
    from tasks.capacity.models import (
        ForecastError,
        SeriesData,
        breach,
        forecast_series,
        horizon_steps,
        infer_step,
    )
    from tasks.capacity.sources.files import MalformedFile, read_series_csv

    try:
        stamps, values = read_series_csv(input)
        step = infer_step(stamps)
        steps = horizon_steps(horizon, step)
    except (MalformedFile, ForecastError) as exc:
        raise fail(str(exc)) from None
    except ValueError as exc:
        raise fail(f"--horizon: {exc}") from None
    data = SeriesData(input.stem, timestamps=stamps, values=values, step_seconds=step)
    checked, job, step = analyse_series(
        data, as_of=max(stamps), horizon_steps_=steps, max_staleness_seconds=float("inf")
    )
    if job is None:
        raise fail(f"{input}: the series fails validation: " + "; ".join(checked.failures))
    try:
        result = forecast_series(**job)
    except ForecastError as exc:
        raise fail(f"{input}: {exc}") from None
    import pandas as pd

    frame = result.frame(pd.Timestamp(checked.timestamps[-1], unit="s", tz="UTC"), step)
    out = frame.copy()
    out["timestamp"] = out["timestamp"].dt.strftime("%Y-%m-%dT%H:%M:%SZ")
    output.parent.mkdir(parents=True, exist_ok=True)
    out.to_csv(output, index=False, float_format="%.6g")
    for note in checked.notes:
        err.print(f"note: {escape(note)}", highlight=False)
    print(f"model: {result.model}")
    print(f"cv_mase: {result.cv_mase:.4f}")
    windows = f"{result.cv_windows} windows of {result.cv_horizon} steps"
    print(f"cv_mae: {result.cv_mae[result.model]:.6g} ({windows})")
    print(f"wrote {len(out)} rows ({steps} steps of {step:g}s) to {output}")
    code = EXIT_OK
    if threshold is not None:
        found = breach(frame, threshold, "below" if below else "above")
        print(f"breach_at: {found.breach_at.isoformat() if found.breach_at else 'none within horizon'}")
        upper = found.breach_at_upper.isoformat() if found.breach_at_upper else "none within horizon"
        print(f"breach_at_upper: {upper}")
        if found.breach_at_upper:
            code = EXIT_PROBLEMS
    raise typer.Exit(code)
