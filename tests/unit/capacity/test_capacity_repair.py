"""The repair step on small series built for each repair (DST fold and gap in a local-time export,
duplicates, reordering, jitter, a one-day gap, a long gap), on a real NAB export with a DST gap, and
through `scaleops forecast`."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from scaleops.cli.app import app
from tasks.capacity.models import forecast_series
from tasks.capacity.repair import Unusable, repair_series
from tasks.capacity.sources.files import read_series_csv

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"
STEP = 300.0
DAY_STEPS = 288
START = 1_700_000_000 - 1_700_000_000 % 86_400  # a midnight, UTC


def daily(n: int, seed: int = 1, noise: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """n 5-minute points with a strong daily cycle (amplitude 20) around 50."""
    rng = np.random.default_rng(seed)
    i = np.arange(n)
    t = START + i * STEP
    return t.astype(float), 50 + 20 * np.sin(2 * np.pi * i / DAY_STEPS) + rng.normal(0, noise, n)


def test_a_clean_series_is_left_alone() -> None:
    t, v = daily(600)
    fixed = repair_series(t, v)
    assert fixed.repairs.total() == 0 and fixed.repairs.describe() == "none" and fixed.notes == []
    assert np.array_equal(fixed.timestamps, t) and np.array_equal(fixed.values, v)
    assert not fixed.filled.any() and fixed.step_seconds == STEP


def test_dst_fold_in_a_local_time_export() -> None:
    """Autumn: local time goes back an hour, so one hour of timestamps appears twice, in file order."""
    t, v = daily(3 * DAY_STEPS)
    k = 400
    local = t.copy()
    local[:k] += 3600  # before the change the local clock was an hour ahead
    assert (local[k] - local[k - 1]) == STEP - 3600
    fixed = repair_series(local, v)
    assert fixed.repairs.dst_changes == 1
    assert fixed.repairs.duplicates_merged == 0 and fixed.repairs.points_filled == 0
    assert np.array_equal(fixed.timestamps, t) and np.array_equal(fixed.values, v)


def test_dst_gap_in_a_local_time_export() -> None:
    """Spring: local time jumps an hour ahead; no point is missing, the clock skipped."""
    t, v = daily(3 * DAY_STEPS)
    k = 400
    local = t.copy()
    local[k:] += 3600
    fixed = repair_series(local, v)
    assert fixed.repairs.dst_changes == 1 and fixed.repairs.points_filled == 0
    assert np.array_equal(fixed.timestamps, t + 3600)  # anchored on the newest point
    assert np.array_equal(fixed.values, v)
    kept = repair_series(local, v, dst=False)  # turned off: an hour-long gap, interpolated
    assert kept.repairs.dst_changes == 0 and kept.repairs.points_filled == 12


def test_dst_gap_with_the_skipped_hour_clamped_to_its_end() -> None:
    """The NAB shape: 01:56, twelve points stamped 03:00, then 03:01: spread back over the hour."""
    t, v = daily(3 * DAY_STEPS)
    t = t + 60  # the :01, :06 ... phase
    a = 500
    clamped = t.copy()
    clamped[a : a + 12] = t[a + 12] - 60
    fixed = repair_series(clamped, v)
    assert fixed.repairs.dst_changes == 1
    assert fixed.repairs.duplicates_merged == 0 and fixed.repairs.points_filled == 0
    assert np.array_equal(fixed.timestamps, t) and np.array_equal(fixed.values, v)


def test_real_export_with_a_dst_gap_is_repaired_not_refused() -> None:
    stamps, values = read_series_csv(FIXTURES / "ec2_request_latency_dst.csv")
    assert len(stamps) - len(set(stamps)) == 11  # twelve points share 2014-03-09 03:00
    fixed = repair_series(stamps, values)
    assert fixed.repairs.dst_changes == 1 and fixed.repairs.duplicates_merged == 0
    assert np.allclose(np.diff(fixed.timestamps), STEP)
    assert fixed.values.size >= len(stamps)
    assert np.isfinite(fixed.values).all()


@pytest.mark.parametrize(("how", "expected"), [("mean", 2.0), ("max", 3.0), ("last", 3.0)])
def test_duplicates_are_merged_as_configured(how: str, expected: float) -> None:
    t, v = daily(400)
    t = np.insert(t, 101, t[100])
    v = np.insert(v, 101, 3.0)
    v[100] = 1.0
    fixed = repair_series(t, v, aggregate=how)  # type: ignore[arg-type]
    assert fixed.repairs.duplicates_merged == 1 and fixed.values.size == 400
    assert fixed.values[100] == pytest.approx(expected)
    with pytest.raises(ValueError, match="aggregate"):
        repair_series(t, v, aggregate="median")  # type: ignore[arg-type]


def test_out_of_order_points_are_sorted_and_counted() -> None:
    t, v = daily(400)
    order = np.arange(400)
    order[[10, 11]] = order[[11, 10]]
    order[[200, 203]] = order[[203, 200]]
    fixed = repair_series(t[order], v[order])
    assert fixed.repairs.points_reordered == 4
    assert np.array_equal(fixed.timestamps, t) and np.array_equal(fixed.values, v)
    newest_first = repair_series(t[::-1], v[::-1])  # e.g. a CloudWatch export
    assert newest_first.repairs.points_reordered == 400
    assert np.array_equal(newest_first.values, v)


def test_jittered_cadence_is_snapped_to_the_step() -> None:
    t, v = daily(400)
    rng = np.random.default_rng(2)
    jitter = rng.choice([-60.0, -1.0, 0.0, 0.0, 1.0, 60.0], size=t.size)
    jitter[-1] = 60.0  # even the newest point is off by a minute: the grid keeps the common phase
    fixed = repair_series(t + jitter, v)
    assert fixed.repairs.points_snapped == int((jitter != 0).sum())
    assert np.array_equal(fixed.timestamps, t) and np.array_equal(fixed.values, v)
    assert fixed.repairs.points_filled == 0 and fixed.repairs.duplicates_merged == 0


def test_a_long_gap_is_filled_seasonally_not_by_a_line_across_the_night() -> None:
    t, v = daily(6 * DAY_STEPS, noise=0.2)
    gap = slice(3 * DAY_STEPS + 60, 3 * DAY_STEPS + 60 + DAY_STEPS // 2)  # 12 hours, through a trough
    keep = np.ones(t.size, bool)
    keep[gap] = False
    fixed = repair_series(t[keep], v[keep])
    assert fixed.repairs.points_filled == DAY_STEPS // 2
    assert fixed.filled.sum() == DAY_STEPS // 2 and fixed.filled[gap].all()
    assert np.array_equal(fixed.timestamps, t)
    seasonal_error = np.abs(fixed.values[gap] - v[gap]).mean()
    line = np.interp(np.arange(t.size)[gap], np.flatnonzero(keep), v[keep])
    assert seasonal_error < 1.0 < np.abs(line - v[gap]).mean()
    assert any("interpolated 144 missing points" in note for note in fixed.notes)


def test_a_one_day_gap_is_filled_up_to_the_limit_and_history_cut_beyond_it() -> None:
    t, v = daily(8 * DAY_STEPS)
    keep = np.ones(t.size, bool)
    keep[2 * DAY_STEPS : 3 * DAY_STEPS] = False  # one whole day missing
    filled = repair_series(t[keep], v[keep], max_fill_seconds=86_400, min_points=2 * DAY_STEPS)
    assert filled.repairs.points_filled == DAY_STEPS and filled.repairs.history_cut == 0
    assert filled.values.size == t.size
    cut = repair_series(t[keep], v[keep], max_fill_seconds=6 * 3600, min_points=2 * DAY_STEPS)
    assert cut.repairs.history_cut == 2 * DAY_STEPS and cut.repairs.points_filled == 0
    assert np.array_equal(cut.timestamps, t[3 * DAY_STEPS :])
    # cutting would leave less than min_points: the long gap is left missing instead, and said so
    left = repair_series(t[keep], v[keep], max_fill_seconds=6 * 3600, min_points=6 * DAY_STEPS)
    assert left.repairs.gaps_left == 1 and left.repairs.points_missing == DAY_STEPS
    assert left.repairs.history_cut == 0 and left.repairs.points_filled == 0 and not left.filled.any()
    assert np.array_equal(left.timestamps, t) and np.isnan(left.values[~keep]).all()
    assert np.array_equal(left.values[keep], v[keep])
    assert "1 long gaps left missing, 288 points missing in them" in left.repairs.describe()


def test_short_gaps_are_filled_beside_a_long_gap_left_missing() -> None:
    t, v = daily(8 * DAY_STEPS)
    keep = np.ones(t.size, bool)
    keep[2 * DAY_STEPS : 3 * DAY_STEPS] = False  # a day: longer than the 6 h limit, left
    keep[5 * DAY_STEPS : 5 * DAY_STEPS + 10] = False  # 50 minutes: filled
    fixed = repair_series(t[keep], v[keep], max_fill_seconds=6 * 3600, min_points=6 * DAY_STEPS)
    assert fixed.repairs.gaps_left == 1 and fixed.repairs.points_filled == 10
    assert fixed.filled.sum() == 10 and np.isfinite(fixed.values[5 * DAY_STEPS : 5 * DAY_STEPS + 10]).all()
    stamps, values, allowed = fixed.for_validation(6)
    assert stamps.size == t.size - DAY_STEPS and np.isfinite(values).all() and allowed == DAY_STEPS + 1


def test_a_long_gap_left_is_forecast_by_models_that_tolerate_it() -> None:
    """Eight days with a day missing three days before the end: cutting would leave 3 days (< 6 asked),
    so the gap stays NaN; the forecast is finite, follows the daily cycle, and ETS / MSTL fit only on the
    gap-free stretch after it (MSTL's weekly season would need more: it is no candidate, and says so)."""
    t, v = daily(8 * DAY_STEPS, noise=0.2)
    keep = np.ones(t.size, bool)
    keep[4 * DAY_STEPS : 5 * DAY_STEPS] = False
    left = repair_series(t[keep], v[keep], max_fill_seconds=6 * 3600, min_points=6 * DAY_STEPS)
    assert left.repairs.gaps_left == 1
    fc = forecast_series(left.values, STEP, DAY_STEPS)
    assert np.isfinite(fc.mean).all() and np.isfinite(fc.hi[95]).all() and np.isfinite(fc.lo[80]).all()
    truth = 50 + 20 * np.sin(2 * np.pi * np.arange(8 * DAY_STEPS, 9 * DAY_STEPS) / DAY_STEPS)
    assert np.abs(fc.mean - truth).mean() < 2.0  # a flat line would be ~12.7 off
    assert set(fc.cv_mae) >= {"naive", "seasonal_naive", "seasonal_median", "ets"}
    assert all(np.isfinite(e) for e in fc.cv_mae.values())


def test_a_gap_left_too_close_to_the_end_keeps_only_the_tolerant_models() -> None:
    t, v = daily(8 * DAY_STEPS, noise=0.2)
    keep = np.ones(t.size, bool)
    keep[-DAY_STEPS - 60 : -DAY_STEPS // 2] = False  # ends 12 h before the last point
    left = repair_series(t[keep], v[keep], max_fill_seconds=6 * 3600, min_points=7 * DAY_STEPS)
    assert left.repairs.gaps_left == 1 and np.isnan(left.values).sum() == DAY_STEPS // 2 + 60
    fc = forecast_series(left.values, STEP, 48)
    assert "mstl" not in fc.cv_mae and "mstl" not in fc.model
    assert any(note.startswith("not a candidate: mstl") for note in fc.notes)
    assert np.isfinite(fc.mean).all()


def test_gappy_seasonal_naive_takes_each_phase_from_the_newest_cycle_that_saw_it() -> None:
    from tasks.capacity.models import Seasons, point_forecast

    y = np.concatenate([np.arange(24.0), np.arange(24.0) + 100, np.arange(24.0) + 200])
    y[-24:-12] = np.nan  # the last day's first half is missing: take it from the day before
    fc = point_forecast("seasonal_naive", y, 24, Seasons(daily=24, weekly=0, k=1))
    assert np.array_equal(fc[:12], np.arange(12.0) + 100) and np.array_equal(
        fc[12:], np.arange(12.0, 24) + 200
    )
    assert point_forecast("naive", y, 3, Seasons(daily=24, weekly=0, k=1)).tolist() == [223.0] * 3
    with pytest.raises(ValueError, match="last one observed"):
        forecast_series(np.append(y, np.nan), 3600.0, 4)


def test_missing_values_become_filled_points() -> None:
    t, v = daily(400)
    v[50] = np.nan
    v[51] = np.inf
    fixed = repair_series(t, v)
    assert fixed.repairs.points_filled == 2 and np.isfinite(fixed.values).all()


def test_only_the_unusable_is_refused() -> None:
    with pytest.raises(Unusable, match="same timestamp"):
        repair_series([5.0, 5.0, 5.0], [1.0, 2.0, 3.0])
    with pytest.raises(Unusable, match="not a time series"):
        repair_series([5.0], [1.0])


def test_a_level_shift_is_followed_not_averaged() -> None:
    """Two days at 50, then a step to 80 for two days: the forecast starts from the new level."""
    rng = np.random.default_rng(7)
    y = np.concatenate([np.full(2 * DAY_STEPS, 50.0), np.full(2 * DAY_STEPS, 80.0)]) + rng.normal(
        0, 1, 4 * DAY_STEPS
    )
    fc = forecast_series(y, STEP, 48)
    assert abs(float(np.median(fc.mean)) - 80) < 3


def test_forecast_command_repairs_a_real_dst_export(tmp_path: Path) -> None:
    out = tmp_path / "out.csv"
    result = CliRunner().invoke(
        app,
        [
            "forecast",
            "--input",
            str(FIXTURES / "ec2_request_latency_dst.csv"),
            "--horizon",
            "6h",
            "-o",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "repairs: 1 daylight-saving changes undone" in result.output
    assert "why: " in result.output and "naive" in result.output
    assert len(pd.read_csv(out)) == 72


def test_forecast_command_names_line_and_column_without_a_traceback(tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("timestamp,value\n2024-01-01T00:00:00Z,1\n2024-01-01T00:05:00Z,2\nsoon,3\n")
    result = CliRunner().invoke(
        app, ["forecast", "--input", str(bad), "--horizon", "6h", "-o", str(tmp_path / "o")]
    )
    assert result.exit_code == 2
    assert "line 4, column 'timestamp'" in result.output and "Traceback" not in result.output


def test_a_drifting_clock_is_still_the_five_minute_step() -> None:
    """The exporter's clock gains a second a step and is reset every tenth (most steps 5:01): the step is
    5 minutes, not the 301 s median (which would drift off the grid and leave holes)."""
    t, v = daily(400)
    drifting = t + np.arange(400) % 10
    assert np.median(np.diff(drifting)) == 301
    fixed = repair_series(drifting, v)
    assert fixed.step_seconds == STEP and fixed.values.size == 400 and fixed.repairs.points_filled == 0
    assert np.array_equal(fixed.values, v)


def test_report_says_why_the_model_won_and_what_was_repaired_and_charts_the_repairs() -> None:
    from datetime import UTC, datetime

    from tasks.capacity.charts import forecast_chart
    from tasks.capacity.models import explain
    from tasks.capacity.report import CapacityReport, SeriesResult

    t, v = daily(3 * DAY_STEPS)
    keep = np.ones(t.size, bool)
    keep[100:140] = False
    fixed = repair_series(t[keep], v[keep])
    fc = forecast_series(fixed.values, STEP, 48)
    why = explain(fc)
    assert why.startswith(f"{fc.model}: lowest CV MAE") and "naive" in why and "seasonal naive" in why
    result = SeriesResult(
        name="cpu", source="csv", threshold=90, model=fc.model, why=why, repairs=fixed.repairs.as_dict()
    )
    report = CapacityReport(as_of=datetime(2026, 1, 1, tzinfo=UTC), series=[result])
    text = report.markdown(None)  # type: ignore[arg-type]
    assert f"- model: {why}" in text
    assert "- repairs: points filled 40" in text
    assert report.table()[0]["repairs"] == 40
    frame = fc.frame(pd.Timestamp(fixed.timestamps[-1], unit="s", tz="UTC"), STEP)
    plain = forecast_chart(fixed.timestamps, fixed.values, frame, threshold=90, title="cpu")
    marked = forecast_chart(
        fixed.timestamps, fixed.values, frame, threshold=90, title="cpu", filled=fixed.filled
    )
    assert marked.startswith(b"\x89PNG") and marked != plain  # the repaired points are drawn


def test_the_flow_path_repairs_then_validates_the_repaired_series() -> None:
    """analyse_series: the real DST export is repaired (counted), then passes the great-expectations suite."""
    from tasks.capacity.analysis import analyse_series
    from tasks.capacity.models import SeriesData

    stamps, values = read_series_csv(FIXTURES / "ec2_request_latency_dst.csv")
    data = SeriesData("ec2", timestamps=stamps, values=values)
    checked, job, step, repaired = analyse_series(data, as_of=max(stamps) + 60, horizon_steps_=12)
    assert checked.ok and job is not None, checked.failures
    assert step == STEP and repaired is not None and repaired.repairs.dst_changes == 1
    assert job["values"].size == repaired.values.size
    stale, job, _, _ = analyse_series(data, as_of=max(stamps) + 3 * 86_400, horizon_steps_=12)
    assert job is None and [f.split(":")[0] for f in stale.failures] == ["fresh"]  # the suite still decides


def test_the_flow_path_refuses_a_horizon_it_would_only_allocate_for() -> None:
    """A flow run asked for horizon=99999999999s fails that series by name (issue 18.8), it does not try
    to allocate hundreds of GiB; a sane horizon for the same series still forecasts."""
    from tasks.capacity.analysis import analyse_series
    from tasks.capacity.models import MAX_HORIZON_STEPS, SeriesData

    stamps, values = read_series_csv(FIXTURES / "ec2_request_latency_dst.csv")
    data = SeriesData("ec2", timestamps=stamps, values=values)
    checked, job, _, _ = analyse_series(data, as_of=max(stamps) + 60, horizon_seconds=99_999_999_999.0)
    assert job is None and not checked.ok
    assert checked.failures[0].startswith("horizon:") and str(MAX_HORIZON_STEPS) in checked.failures[0]
    _, job, _, _ = analyse_series(data, as_of=max(stamps) + 60, horizon_seconds=86_400.0)
    assert job is not None and job["horizon"] == 86_400 // STEP


def test_flow_and_command_forecast_a_series_with_a_long_gap_left(tmp_path: Path) -> None:
    """Too short to cut at its long gap: the flow path validates the observed points (the gap is in
    `repairs`, not a cadence failure) and forecasts with the NaN left; so does the command, with --gx."""
    from tasks.capacity.analysis import analyse_series
    from tasks.capacity.models import SeriesData

    t, v = daily(5 * DAY_STEPS, noise=0.2)
    keep = np.ones(t.size, bool)
    keep[3 * DAY_STEPS + 100 : 3 * DAY_STEPS + 200] = False  # 8 h 20 min: more than the 6 h fill limit
    data = SeriesData("gappy", timestamps=t[keep].tolist(), values=v[keep].tolist())
    checked, job, _, repaired = analyse_series(
        data, as_of=float(t[-1]) + 60, horizon_steps_=12, max_fill_seconds=6 * 3600
    )
    assert checked.ok and job is not None, checked.failures
    assert repaired is not None and repaired.repairs.gaps_left == 1 and repaired.repairs.history_cut == 0
    assert np.isnan(job["values"]).sum() == 100 and forecast_series(**job).mean.size == 12
    csv = tmp_path / "gappy.csv"
    stamps = pd.to_datetime(t[keep], unit="s", utc=True).strftime("%Y-%m-%dT%H:%M:%SZ")
    pd.DataFrame({"timestamp": stamps, "value": v[keep]}).to_csv(csv, index=False)
    out = tmp_path / "out.csv"
    args = ["forecast", "--input", str(csv), "--horizon", "12", "-o", str(out), "--max-fill", "6h", "--gx"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "1 long gaps left missing, 100 points missing in them" in result.output
    assert pd.read_csv(out)["mean"].notna().all()


def test_forecast_command_gx_validates_the_repaired_series(tmp_path: Path) -> None:
    out = tmp_path / "out.csv"
    fixture = str(FIXTURES / "ec2_request_latency_dst.csv")
    result = CliRunner().invoke(
        app, ["forecast", "--input", fixture, "--horizon", "12", "-o", str(out), "--gx"]
    )
    assert result.exit_code == 0, result.output
    assert len(pd.read_csv(out)) == 12
