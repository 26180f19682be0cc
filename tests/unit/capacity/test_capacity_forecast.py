"""capacity-forecast without services: validation (each expectation), forecasting, breach dates,
recommendations, CSV reading, settings."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from scaleops.core.settings import ConfigError, load_settings
from scaleops.sandbox.prometheus import SANDBOX_SERIES
from tasks.capacity.models import (
    Forecast,
    ForecastError,
    breach,
    calibrated_widths,
    forecast_many,
    forecast_series,
    horizon_steps,
    is_seasonal,
    parse_duration,
    recommend,
)
from tasks.capacity.sources.files import MalformedFile, read_series_csv
from tasks.capacity.validation import validate_series

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"
HOUR = 3600.0


def hourly(n: int, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    t = 1_700_000_000 - 1_700_000_000 % 3600 + np.arange(n) * HOUR
    v = 50 + 10 * np.sin(2 * np.pi * np.arange(n) / 24) + rng.normal(0, 1, n)
    return t.astype(float), v


def check(t: np.ndarray, v: np.ndarray, **kwargs: object):
    options = {"step_seconds": HOUR, "as_of": float(t[-1]) + 60, "bounds": (0, 100), "min_points": 48}
    options.update(kwargs)
    return validate_series(t, v, **options)  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------------------ validation
def test_valid_series_passes_and_small_gaps_are_interpolated_and_reported() -> None:
    t, v = hourly(120)
    keep = np.ones(t.size, bool)
    keep[[40, 41, 80]] = False
    result = check(t[keep], v[keep])
    assert result.ok and result.failures == []
    assert result.interpolated == 3
    assert result.notes == ["interpolated 3 missing points in short gaps"]
    assert result.values.size == 120
    assert np.allclose(np.diff(result.timestamps), HOUR)
    assert result.values[40] == pytest.approx(v[39] + (v[42] - v[39]) / 3)


@pytest.mark.parametrize(
    ("breakage", "expectation"),
    [
        ("duplicate", "timestamps_unique"),
        ("backwards", "timestamps_increasing"),
        ("nan", "values_finite"),
        ("inf", "values_finite"),
        ("out_of_bounds", "values_in_bounds"),
        ("large_gap", "regular_cadence"),
        ("stale", "fresh"),
        ("short", "enough_history"),
    ],
)
def test_each_expectation_fails_the_series_with_its_name(breakage: str, expectation: str) -> None:
    t, v = hourly(120)
    as_of = float(t[-1]) + 60
    if breakage == "duplicate":
        t[50] = t[49]
    elif breakage == "backwards":
        t[50], t[51] = t[51], t[50]
    elif breakage == "nan":
        v[10] = np.nan
    elif breakage == "inf":
        v[10] = np.inf
    elif breakage == "out_of_bounds":
        v[10] = 130
    elif breakage == "large_gap":
        t, v = np.delete(t, range(60, 75)), np.delete(v, range(60, 75))
    elif breakage == "stale":
        as_of = float(t[-1]) + 5 * 86400
    elif breakage == "short":
        t, v = t[:30], v[:30]
    result = check(t, v, as_of=as_of)
    assert not result.ok
    names = [f.split(":")[0] for f in result.failures]
    assert expectation in names
    assert result.values.size == 0  # a failing series is not handed on


# ------------------------------------------------------------------------------------------------ forecasting
def test_linear_growth_breach_date_is_where_the_line_crosses() -> None:
    """1 unit per hour from 100 with little noise: 400 is crossed 300 hours after the first point."""
    rng = np.random.default_rng(3)
    n = 24 * 10
    y = 100 + np.arange(n) + rng.normal(0, 0.3, n)
    fc = forecast_series(y, HOUR, 24 * 5)
    start = datetime(2026, 1, 1, tzinfo=UTC)
    last = start + timedelta(hours=n - 1)
    found = breach(fc.frame(last, HOUR), 400.0)
    expected = start + timedelta(hours=300)
    assert found.breach_at is not None
    assert abs(found.breach_at - expected) <= timedelta(hours=3)
    assert found.breach_at_upper is not None and found.breach_at_upper <= found.breach_at
    assert found.breach_at_lower is None or found.breach_at_lower >= found.breach_at
    assert fc.model in ("ets", "mstl")


def test_seasonal_series_prefers_a_seasonal_model_and_intervals_cover() -> None:
    t, v = hourly(24 * 21, seed=5)
    train, test = v[:-48], v[-48:]
    fc = forecast_series(train, HOUR, 48, bounds=(0, 100))
    assert is_seasonal(fc.model), fc.model  # a seasonal model, alone or in the two-best ensemble
    singles = {m for m in fc.cv_mae if "+" not in m}
    assert singles == {"naive", "seasonal_naive", "seasonal_median", "weekly_naive", "mstl", "ets"}
    assert len(fc.cv_mae) == len(singles) + 1  # and the mean of the two best
    assert fc.cv_mae[fc.model] == min(fc.cv_mae.values())
    assert fc.cv_mae[fc.model] <= fc.cv_mae["naive"]
    assert np.all(fc.lo[95] <= fc.lo[80]) and np.all(fc.lo[80] <= fc.mean) and np.all(fc.mean <= fc.hi[80])
    assert np.all(fc.hi[80] <= fc.hi[95])
    inside = np.mean((test >= fc.lo[80]) & (test <= fc.hi[80]))
    assert 0.6 <= inside <= 1.0


def test_calibrated_widths_follow_the_residuals() -> None:
    rng = np.random.default_rng(0)
    residuals = rng.normal(0, 2.0, size=(4, 200))
    w80 = calibrated_widths(residuals, 300, 80)
    w95 = calibrated_widths(residuals, 300, 95)
    assert w80.shape == (300,)
    assert np.all(np.diff(w80) >= -1e-12)  # never narrower further out
    assert 2.0 * 1.1 <= w80[100] <= 2.0 * 1.5  # |N(0,2)| 80% quantile is 2.56
    assert w95[100] > w80[100]
    assert w80[-1] > w80[199]  # grows beyond the cross-validated horizon


def test_forecast_many_returns_errors_in_place() -> None:
    _, v = hourly(24 * 4)
    results = forecast_many(
        [
            {"values": v, "step_seconds": HOUR, "horizon": 12},
            {"values": v[:5], "step_seconds": HOUR, "horizon": 12},
        ]
    )
    assert isinstance(results[0], Forecast)
    assert isinstance(results[1], str) and "at least 16 points" in results[1]


def test_one_extreme_series_fails_alone() -> None:
    """statsforecast raises a bare Exception on 1e308: that series fails, the others are forecast."""
    _, v = hourly(24 * 4)
    extreme = np.array(v, dtype=float)
    extreme[50] = 1e308
    results = forecast_many(
        [
            {"values": v, "step_seconds": HOUR, "horizon": 12},
            {"values": extreme, "step_seconds": HOUR, "horizon": 12},
        ]
    )
    assert isinstance(results[0], Forecast)
    assert isinstance(results[1], str) and results[1].startswith("Exception: no model able to be fitted")


def test_forecast_many_in_worker_processes_matches_in_process() -> None:
    """Many series in parallel: spawned workers give the same answers as the flow's own process."""
    jobs = [
        {
            "values": hourly(24 * 4, seed=s)[1],
            "step_seconds": HOUR,
            "horizon": 12,
            "models": ["naive", "seasonal_naive"],
        }
        for s in range(3)
    ]
    seen: list[tuple[int, int]] = []
    # a generator, as the flow passes it: each job goes to the workers as soon as it is produced
    parallel = forecast_many(
        (job for job in jobs), workers=2, progress=lambda done, total: seen.append((done, total))
    )
    serial = forecast_many(jobs, workers=1)
    assert seen[-1] == (3, 3)
    for a, b in zip(parallel, serial, strict=True):
        assert isinstance(a, Forecast) and isinstance(b, Forecast)
        assert a.model == b.model and np.allclose(a.mean, b.mean) and np.allclose(a.hi[95], b.hi[95])


def test_too_short_or_not_finite_is_refused() -> None:
    with pytest.raises(ForecastError):
        forecast_series([1.0] * 10, HOUR, 5)
    with pytest.raises(ForecastError):
        forecast_series([1.0] * 30 + [float("nan")], HOUR, 5)


def test_recommendation_covers_the_upper_peak_and_costs_it() -> None:
    advice = recommend(872.0, 800.0, capacity_per_unit=50, unit_cost_per_month=4.0, unit="GB")
    assert advice is not None
    assert advice.units == 2 and advice.amount == 100 and advice.monthly_cost == 8.0
    assert "add 2 x 50 GB" in advice.text and "about 8.00 USD/month more" in advice.text  # currency named
    assert recommend(700.0, 800.0, capacity_per_unit=50, unit_cost_per_month=None).units == 0  # type: ignore[union-attr]
    assert recommend(900.0, 800.0, capacity_per_unit=None, unit_cost_per_month=1.0) is None


@pytest.mark.parametrize(
    ("text", "seconds"), [("90s", 90), ("5m", 300), ("6h", 21600), ("1d", 86400), ("2w", 1209600)]
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


def test_horizon_steps_takes_steps_or_durations() -> None:
    assert horizon_steps("48", 1800) == 48
    assert horizon_steps("1d", 1800) == 48
    assert horizon_steps("7d", 3600) == 168
    with pytest.raises(ValueError, match="not a duration"):
        horizon_steps("soon", 60)


# ---------------------------------------------------------------------------------------- files, settings
def test_read_csv_fixture() -> None:
    stamps, values = read_series_csv(FIXTURES / "nyc_taxi_16days.csv")
    assert len(stamps) == len(values) == 768
    assert stamps[1] - stamps[0] == 1800
    assert pd.Timestamp(stamps[0], unit="s", tz="UTC") == pd.Timestamp("2014-07-01", tz="UTC")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("timestamp,value\n2024-01-01 00:00,1\n2024-01-01 01:00,abc\n", "line 3, column 'value'"),
        ("timestamp,value\nyesterday,1\n", "line 2, column 'timestamp'"),
        ("time,value\n2024-01-01,1\n", "line 1, column 'timestamp'"),
        ("timestamp,value\n2024-01-01 00:00,1,7\n", "line 2: 3 columns"),
        ("", "line 1: the file is empty"),
    ],
)
def test_malformed_csv_names_line_and_column(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "bad.csv"
    path.write_text(content)
    with pytest.raises(MalformedFile, match=message):
        read_series_csv(path)


def test_series_settings_are_validated_and_named(monkeypatch: pytest.MonkeyPatch) -> None:
    assert load_settings().capacity.series == []  # production has no default series
    monkeypatch.setenv("SCALEOPS_CAPACITY__SERIES", json.dumps(SANDBOX_SERIES))  # what the sandbox exports
    assert [s.name for s in load_settings().capacity.series][:1] == ["disk-db-1"]
    monkeypatch.setenv("SCALEOPS_CAPACITY__SERIES", '[{"name": "x", "source": "cloudwatch", "threshold": 1}]')
    with pytest.raises(ConfigError, match="SCALEOPS_CAPACITY__SERIES: .*needs namespace, metric"):
        load_settings()
    monkeypatch.setenv(
        "SCALEOPS_CAPACITY__SERIES",
        '[{"name": "x", "source": "csv", "path": "a.csv", "threshold": 1},'
        ' {"name": "x", "source": "csv", "path": "b.csv", "threshold": 1}]',
    )
    with pytest.raises(ConfigError, match="repeated: x"):
        load_settings()
    monkeypatch.setenv("SCALEOPS_CAPACITY__HORIZON", "soon")
    with pytest.raises(ConfigError, match="SCALEOPS_CAPACITY__HORIZON"):
        load_settings()


def test_daily_series_use_the_weekly_season() -> None:
    rng = np.random.default_rng(4)
    days = 7 * 12
    weekly = np.tile([10, 10, 10, 10, 10, 2, 2], days // 7).astype(float)
    fc = forecast_series(weekly + rng.normal(0, 0.3, days), 86400, 14)
    assert fc.seasons.weekly == 7 and fc.seasons.daily == 0
    assert is_seasonal(fc.model), fc.model
    assert np.allclose(fc.mean[5:7], 2, atol=1.0) and np.allclose(fc.mean[:5], 10, atol=1.0)


def test_falling_series_breaches_below_and_recommends_for_the_trough() -> None:
    """Free space falling 2 GB an hour from 500: 100 GB is reached 200 hours after the first point."""
    rng = np.random.default_rng(8)
    n = 24 * 6
    y = 500 - 2 * np.arange(n) + rng.normal(0, 0.5, n)
    fc = forecast_series(y, HOUR, 24 * 4, bounds=(0, None))
    start = datetime(2026, 1, 1, tzinfo=UTC)
    found = breach(fc.frame(start + timedelta(hours=n - 1), HOUR), 100.0, "below")
    assert found.breach_at is not None
    assert abs(found.breach_at - (start + timedelta(hours=200))) <= timedelta(hours=3)
    assert found.breach_at_upper is not None and found.breach_at_upper <= found.breach_at
    assert found.peak_upper < 100  # the plausible trough over the horizon
    advice = recommend(
        found.peak_upper, 100.0, capacity_per_unit=50, unit_cost_per_month=5, direction="below"
    )
    assert advice is not None and advice.units == int(np.ceil((100 - found.peak_upper) / 50))
    assert breach(fc.frame(start, HOUR), 100.0, "above").breach_at is not None  # starts above 100


# ----------------------------------------------------------------------------------------------- light import
def test_smooth_models_load_without_numba_or_the_statsforecast_package() -> None:
    """The CLI's memory goal: a fit loads statsforecast.ets alone (no numba, no package __init__, no dask)
    and leaves no stand-in behind. In a fresh process, since another test may have imported them."""
    import subprocess
    import sys

    code = (
        "import sys, numpy as np\n"
        "from tasks.capacity.models import Seasons, point_forecast\n"
        "y = 50 + 10 * np.sin(np.arange(24 * 6) * 2 * np.pi / 24)\n"
        "fc = point_forecast('mstl', y, 24, Seasons(daily=24, weekly=0, k=1))\n"
        "assert fc.shape == (24,) and np.all(np.isfinite(fc))\n"
        "loaded = sorted(m for m in ('numba', 'llvmlite', 'dask', 'fugue', 'statsforecast', 'utilsforecast')"
        " if m in sys.modules)\n"
        "print(','.join(loaded) or 'none')\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).parents[3],
    )
    assert done.stdout.strip() == "none"


def test_light_models_equal_statsforecasts_own_classes(monkeypatch: pytest.MonkeyPatch) -> None:
    """The hand-rolled MSTL and AutoETS calls give statsforecast's own answers (same code, fewer imports),
    and the real package still imports with real numba afterwards; with STL's jumps (the default) the
    MSTL forecast stays within 2% of the every-point fit."""
    from tasks.capacity import models
    from tasks.capacity.models import _auto_ets, _mstl

    rng = np.random.default_rng(3)
    n = 24 * 7 * 3
    y = 100 + 0.05 * np.arange(n) + 10 * np.sin(2 * np.pi * np.arange(n) / 24)
    y = y + 5 * np.sin(2 * np.pi * np.arange(n) / 168) + rng.normal(0, 1, n)
    jumped = _mstl(y, [168, 24], 30)
    monkeypatch.setattr(models, "STL_JUMPS", False)
    ours_ets, ours_mstl = _auto_ets(y, 30), _mstl(y, [168, 24], 30)
    import numba
    from statsforecast.models import MSTL, AutoETS

    assert hasattr(numba, "jit")  # the real numba, not the stand-in used while loading
    theirs_ets = AutoETS(model="ZZN").forecast(y=y, h=30)["mean"]
    theirs_mstl = MSTL(season_length=[24, 168], trend_forecaster=AutoETS(model="ZZN")).forecast(y=y, h=30)
    assert np.allclose(ours_ets, theirs_ets, rtol=1e-9, atol=1e-9)
    assert np.allclose(ours_mstl, theirs_mstl["mean"], rtol=1e-9, atol=1e-9)
    assert np.allclose(jumped, ours_mstl, rtol=0.02) and not np.allclose(jumped, ours_mstl, rtol=1e-9)
