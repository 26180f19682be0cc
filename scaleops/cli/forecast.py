"""`scaleops forecast`: the capacity-forecast code path on one `timestamp,value` CSV file (registered
in scaleops/cli/app.py as a command).

Fast from the command line: it imports neither Prefect nor great-expectations (whose import alone costs
~4 CPU-s); the repair step guarantees what the suite would check here (unique, increasing, regular,
finite; no bounds and no freshness on a file), and `--gx` runs the suite on the repaired series too.
Of statsforecast only `statsforecast.ets` is loaded, without numba or the package's __init__
(tasks/capacity/models.py): ~210 MB peak and ~2 CPU-s on 4,000 points."""

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
    duplicates: Annotated[str, typer.Option(help="merge repeated timestamps by mean, max or last")] = "mean",
    max_fill: Annotated[
        str, typer.Option("--max-fill", help="interpolate gaps up to this long; cut history at a longer one")
    ] = "1d",
    dst: Annotated[bool, typer.Option("--dst/--no-dst", help="undo local-time DST folds and gaps")] = True,
    gx: Annotated[
        bool, typer.Option("--gx", help="also validate the repaired series with great-expectations")
    ] = False,
) -> None:
    """Forecast one timestamp,value CSV (the capacity-forecast code path): repair it (sort, merge
    duplicates, snap jitter, undo DST, fill gaps), write `timestamp,mean,lo_80,hi_80,lo_95,hi_95`,
    print the chosen model, why, and the repairs.

    Exit 0: forecast written (no threshold crossed); 1: written, and the threshold is crossed within the
    horizon; 2: the file is malformed (line and column named), too short after repair, or the horizon is bad.
    """
    from tasks.capacity.models import (
        ForecastError,
        breach,
        explain,
        forecast_series,
        horizon_steps,
        parse_duration,
    )
    from tasks.capacity.repair import AGGREGATES, Unusable, min_points_for, repair_series, robust_step
    from tasks.capacity.sources.files import MalformedFile, read_series_csv

    if output.is_dir():
        raise fail(f"--output {output}: is a directory (give the CSV file to write)")
    if duplicates not in AGGREGATES:
        raise fail(f"--duplicates: {duplicates!r} is not one of {', '.join(AGGREGATES)}")
    try:
        fill_seconds = parse_duration(max_fill)
    except ValueError as exc:
        raise fail(f"--max-fill: {exc}") from None
    try:
        stamps, values = read_series_csv(input)
    except MalformedFile as exc:
        raise fail(str(exc)) from None
    try:
        repaired = repair_series(
            stamps,
            values,
            aggregate=duplicates,
            max_fill_seconds=fill_seconds,
            min_points=min_points_for(robust_step(stamps)) if len(stamps) > 1 else 16,
            dst=dst,
        )
    except Unusable as exc:
        raise fail(f"{input}: {exc}") from None
    step = repaired.step_seconds
    try:
        steps = horizon_steps(horizon, step)
    except ValueError as exc:
        raise fail(f"--horizon: {exc}") from None
    need = min_points_for(step)
    if repaired.values.size < need:
        raise fail(
            f"{input}: enough_history: {repaired.values.size} points after repair "
            f"({repaired.repairs.describe()}), need at least {need} (two days)"
        )
    if gx:
        from tasks.capacity.validation import validate_series

        stamps_seen, values_seen, allowed_gap = repaired.for_validation(6)
        checked = validate_series(
            stamps_seen,
            values_seen,
            step_seconds=step,
            as_of=float(repaired.timestamps[-1]),
            max_staleness_seconds=float("inf"),
            max_gap_steps=allowed_gap,
            min_points=need,
        )
        if not checked.ok:
            raise fail(f"{input}: the repaired series fails validation: " + "; ".join(checked.failures))
    try:
        result = forecast_series(repaired.values, step, steps)
    except ForecastError as exc:
        raise fail(f"{input}: {exc}") from None
    except Exception as exc:  # statsforecast's bare Exception on values such as 1e308: exit 2, no traceback
        raise fail(f"{input}: the series cannot be forecast: {type(exc).__name__}: {exc}") from None
    import pandas as pd

    frame = result.frame(pd.Timestamp(repaired.timestamps[-1], unit="s", tz="UTC"), step)
    out = frame.copy()
    out["timestamp"] = out["timestamp"].dt.strftime("%Y-%m-%dT%H:%M:%SZ")
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
        out.to_csv(output, index=False, float_format="%.6g")
    except OSError as exc:
        raise fail(f"--output {output}: cannot write it ({exc.strerror or exc})") from None
    for note in repaired.notes:
        err.print(f"note: {escape(note)}", highlight=False)
    print(f"model: {result.model}")
    print(f"why: {explain(result)}")
    print(f"cv_mase: {result.cv_mase:.4f}")
    windows = f"{result.cv_windows} windows of {result.cv_horizon} steps"
    print(f"cv_mae: {result.cv_mae[result.model]:.6g} ({windows})")
    print(f"repairs: {repaired.repairs.describe()}")
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
