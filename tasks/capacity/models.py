"""Forecasting as plain functions (no Prefect, no scaleops settings): regular series in, forecast out.

`forecast_series(values, step_seconds, horizon)` chooses a model per series by rolling-origin
cross-validation among naive, seasonal naive (daily), seasonal median (the median of the last cycles at
the level of the last quarter cycle: robust to one odd day and to a level shift), weekly naive (sub-daily
series with two weeks), MSTL (daily + weekly seasons, non-seasonal ETS trend), non-seasonal ETS, and the
mean of the two best of these (its CV residuals are the mean of theirs, so it costs no extra fit), then
calibrates 80% and 95% intervals on the cross-validation residuals (split-conformal on absolute errors,
per horizon bucket), so the intervals are as wide as the errors this model really made on this series,
not as wide as its textbook assumptions say.

Speed: statsmodels' STL (inside statsforecast's MSTL) is slow with long seasons (a weekly season at
5-minute resolution takes ~10 s per fit), so the smooth models (MSTL, ETS) run on the series averaged
into buckets of `k` steps, with at most 48 buckets a day (24 when the weekly season is used), and their
forecast is interpolated back to the series' own step. The naive models run at the native step.

`breach(...)` finds when a forecast first crosses a threshold; `recommend(...)` turns the peak of the
upper interval into units of capacity and their monthly cost.
"""

from __future__ import annotations

import math
import os
import re
import warnings
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd

# statsforecast compiles its models' numba code in every new process (seconds of CPU per CLI call) unless
# this is set when it is first imported: then the compiled code is cached on disk across runs.
os.environ.setdefault("NIXTLA_NUMBA_CACHE", "1")

DAY = 86_400
WEEK = 7 * DAY
MODELS = ("naive", "seasonal_naive", "seasonal_median", "weekly_naive", "mstl", "ets")
SEASONAL_MEDIAN_CYCLES = 4  # cycles whose median makes the seasonal profile
ENSEMBLE = "+"  # "mstl+ets": the mean of the two best candidates' forecasts, itself a CV candidate
LEVELS = (80, 95)
CV_WINDOWS = 4
MAX_BUCKETS_PER_DAY = 48
MAX_BUCKETS_PER_DAY_WEEKLY = 24
INTERVAL_BUCKETS = 6
# The smooth models see at most this many buckets (STL's cost grows with length x season): five weekly
# cycles when the weekly season is used, else this many.
MAX_SMOOTH_BUCKETS = 1000
WEEKLY_CYCLES_KEPT = 5
# STL's LOESS smoothers evaluated every ~tenth of their window and interpolated between (R's stl()
# defaults, Cleveland et al. 1990) instead of at every point (statsmodels' default): a weekly season of
# 168 hourly steps takes 3 ms per fit instead of 54, which is most of the flow's CPU on hourly series.
STL_JUMPS = True


class ForecastError(ValueError):
    """The series cannot be forecast as asked (too short, bad horizon ...); the message says why."""


# ------------------------------------------------------------------------------------------------ durations
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|min|h|d|w)\s*$", re.IGNORECASE)
_UNIT_SECONDS = {"s": 1, "m": 60, "min": 60, "h": 3600, "d": DAY, "w": WEEK}


def parse_duration(text: str | float | int | timedelta) -> float:
    """'90s', '5m', '6h', '1d', '2w' (or a number of seconds, or a timedelta) -> seconds."""
    if isinstance(text, timedelta):
        return text.total_seconds()
    if isinstance(text, int | float):
        if text <= 0:
            raise ValueError("a duration must be positive")
        return float(text)
    match = _DURATION.match(text)
    if not match:
        raise ValueError(f"not a duration: {text!r} (expected e.g. 30s, 5m, 6h, 1d, 2w)")
    seconds = float(match.group(1)) * _UNIT_SECONDS[match.group(2).lower()]
    if seconds <= 0:
        raise ValueError("a duration must be positive")
    return seconds


MAX_HORIZON_STEPS = 200_000  # ~2 years of 5-minute steps; more only allocates (99,999,999,999 wanted 745 GiB)


def horizon_steps(horizon: str | int, step_seconds: float) -> int:
    """A horizon given as a number of steps ('48', 48) or a duration ('6h', '7d') -> steps (1 to
    MAX_HORIZON_STEPS)."""
    if isinstance(horizon, int) or (isinstance(horizon, str) and horizon.strip().isdigit()):
        steps = int(horizon)
    else:
        steps = math.ceil(parse_duration(horizon) / step_seconds)
    if steps < 1:
        raise ValueError(f"horizon {horizon!r} is less than one step")
    if steps > MAX_HORIZON_STEPS:
        raise ValueError(
            f"horizon {horizon!r} is {steps} steps of {step_seconds:g}s; "
            f"at most {MAX_HORIZON_STEPS} are forecast"
        )
    return steps


def epoch_seconds(timestamps: Any) -> np.ndarray:
    """Timestamps (datetime-like, any pandas resolution, naive = UTC) -> float seconds since the epoch."""
    index = pd.DatetimeIndex(pd.to_datetime(timestamps, utc=True))
    return (index - pd.Timestamp(0, tz="UTC")) / pd.Timedelta(seconds=1)


def infer_step(timestamps: Sequence[float] | np.ndarray) -> float:
    """The series' cadence in seconds: the median distance between consecutive timestamps."""
    t = np.asarray(timestamps, dtype=float)
    if t.size < 2:
        raise ForecastError("need at least two points to know the series' step")
    diffs = np.diff(t)
    diffs = diffs[diffs > 0]
    if diffs.size == 0:
        raise ForecastError("timestamps do not increase")
    return float(np.median(diffs))


# ------------------------------------------------------------------------------------------------ seasons
@dataclass(frozen=True)
class Seasons:
    """Season lengths in native steps (0 = not used) and the bucket size the smooth models run at."""

    daily: int
    weekly: int
    k: int

    @property
    def longest(self) -> int:
        return max(self.weekly, self.daily, 1)


def _period(step_seconds: float, seconds: int) -> int:
    ratio = seconds / step_seconds
    return int(round(ratio)) if abs(ratio - round(ratio)) < 1e-6 and ratio >= 2 else 0


def choose_seasons(step_seconds: float, train_length: int) -> Seasons:
    """Daily and weekly seasons the shortest training window can support (two full cycles each); daily
    data (step 1d) gets the weekly season alone."""
    daily = _period(step_seconds, DAY)
    weekly = _period(step_seconds, WEEK)
    if daily and train_length < 2 * daily:
        daily = 0
    if weekly and train_length < 2 * weekly:
        weekly = 0
    if weekly and not daily and _period(step_seconds, DAY):
        weekly = 0  # sub-daily data without two days of it: no seasonal model at all
    cap = MAX_BUCKETS_PER_DAY_WEEKLY if weekly else MAX_BUCKETS_PER_DAY
    k = 1
    if daily and daily > cap:
        k = next(c for c in range(math.ceil(daily / cap), daily + 1) if daily % c == 0)
    elif not daily and not weekly:
        # no season: still average very long series so the smooth models stay fast
        k = max(1, math.ceil(train_length / 2000))
    return Seasons(daily=daily, weekly=weekly, k=k)


# ------------------------------------------------------------------------------------------------ models
def _aggregate(y: np.ndarray, k: int) -> np.ndarray:
    """Mean of buckets of `k` steps, aligned to the end of the series (a leading remainder is dropped)."""
    if k == 1:
        return y
    usable = (y.size // k) * k
    return y[y.size - usable :].reshape(-1, k).mean(axis=1)


def _upsample(last_bucket: float, forecast: np.ndarray, k: int, h: int) -> np.ndarray:
    """Bucket forecasts back to native steps: linear between bucket centres, anchored on the last bucket."""
    if k == 1:
        return forecast[:h]
    centres = np.arange(-1, forecast.size) * k + (k - 1) / 2
    return np.interp(np.arange(h), centres, np.concatenate([[last_bucket], forecast]))


# Memory and start-up: `import statsforecast` runs its package __init__ (the StatsForecast class, fugue,
# pyarrow, dask when installed) and statsforecast.utils imports numba (llvmlite's LLVM library alone is
# ~57 MB resident): ~175 MB and ~0.7 CPU-s per process for code these two models never run. The models
# used here are AutoETS (statsforecast.ets: its fit is C++ in statsforecast._lib, no numba) and MSTL
# (statsmodels' STL, then AutoETS on the seasonally adjusted series). So statsforecast.ets is loaded on
# its own: the package's __init__ is skipped, numba is replaced by a no-op `njit` (ets calls no jitted
# function: utils' one jitted helper serves the CES model) and dask is hidden, for the time of that one
# import only; then every module loaded that way is dropped from sys.modules again, so a later
# `import statsforecast` anywhere in the process gets the real package with real numba.
# `scaleops forecast` on 4,000 points: peak RSS 334 -> 211 MB, 3.0 -> 2.3 CPU-s (docs/benchmarks.md).
_HIDDEN_WHILE_LOADING = ("dask", "fugue", "fugue_dask")
_ets: tuple[Any, Any] | None = None


def _ets_functions() -> tuple[Any, Any]:
    """statsforecast's (ets_f, forecast_ets), loaded without its package import (see above)."""
    global _ets
    if _ets is not None:
        return _ets
    import importlib
    import importlib.util
    import sys
    import types

    if "statsforecast.ets" in sys.modules:  # the real package is already here: use it
        module = sys.modules["statsforecast.ets"]
        _ets = (module.ets_f, module.forecast_ets)
        return _ets
    before = set(sys.modules)
    spec = importlib.util.find_spec("statsforecast")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("statsforecast is not installed")
    stand_ins: dict[str, types.ModuleType | None] = {}
    if "statsforecast" not in sys.modules:
        package = types.ModuleType("statsforecast")
        package.__path__ = list(spec.submodule_search_locations)
        package.__spec__ = spec
        stand_ins["statsforecast"] = package
    if "numba" not in sys.modules:
        numba = types.ModuleType("numba")

        def njit(*args: Any, **_kwargs: Any) -> Any:
            if len(args) == 1 and callable(args[0]):
                return args[0]
            return lambda function: function

        numba.njit = njit  # type: ignore[attr-defined]
        stand_ins["numba"] = numba
    for name in _HIDDEN_WHILE_LOADING:
        if name not in sys.modules:
            stand_ins[name] = None  # import raises ImportError: the optional backend is skipped
    sys.modules.update(stand_ins)  # type: ignore[arg-type]
    try:
        module = importlib.import_module("statsforecast.ets")
        _ets = (module.ets_f, module.forecast_ets)
    finally:
        for name in set(sys.modules) - before:
            if name.split(".")[0] in ("statsforecast", "utilsforecast"):
                del sys.modules[name]
        for name, stand_in in stand_ins.items():
            if sys.modules.get(name) is stand_in:
                del sys.modules[name]
    return _ets


def _auto_ets(y: np.ndarray, h: int) -> np.ndarray:
    """statsforecast's `AutoETS(model="ZZN").forecast(y, h)["mean"]`: non-seasonal ETS, chosen by AICc."""
    ets_f, forecast_ets = _ets_functions()
    fitted = ets_f(np.asarray(y, dtype=float), m=1, model="ZZN", damped=None, phi=None)
    return np.asarray(forecast_ets(fitted, h=h, level=None)["mean"], dtype=float)


def _mstl(y: np.ndarray, periods: Sequence[int], h: int) -> np.ndarray:
    """statsforecast's `MSTL(season_length=periods, trend_forecaster=AutoETS(model="ZZN")).forecast(y, h)`
    (statsforecast.mstl.mstl and MSTL.forecast, step for step): STL per season (seasonal_deg 0, seasonal
    windows 11, 15, ..., two passes when there are several seasons), AutoETS on trend + remainder, each
    season repeated from its last cycle."""
    from statsmodels.tsa.seasonal import STL

    msts = sorted(periods)
    windows = 7 + 4 * np.arange(1, 7)
    x = np.asarray(y, dtype=float)
    seas = np.zeros((len(msts), x.size))
    deseas = np.copy(x)
    for _ in range(2 if len(msts) > 1 else 1):
        for i, period in enumerate(msts):
            deseas = deseas + seas[i]
            stl = STL(deseas, period=period, seasonal=int(windows[i]), seasonal_deg=0)
            if STL_JUMPS:  # R's stl() defaults: each LOESS evaluated every ~tenth of its window
                smoothers = ("seasonal", "trend", "low_pass")
                jumps = {f"{n}_jump": math.ceil(stl.config[n] / 10) for n in smoothers}
                stl = STL(deseas, period=period, seasonal=int(windows[i]), seasonal_deg=0, **jumps)
            fit = stl.fit()
            seas[i] = fit.seasonal
            deseas = deseas - seas[i]
    trend = np.asarray(fit.trend)
    adjusted = trend + (deseas - trend)
    mean = _auto_ets(adjusted, h)
    for i, period in enumerate(msts):
        mean = mean + np.resize(seas[i][-period:], h)
    return mean


def _smooth_forecast(model: str, y: np.ndarray, h: int, seasons: Seasons) -> np.ndarray:
    k = seasons.k
    ya = _aggregate(y, k)
    keep = WEEKLY_CYCLES_KEPT * seasons.weekly // k if seasons.weekly else MAX_SMOOTH_BUCKETS
    ya = ya[-keep:]
    ha = math.ceil(h / k) + 1
    if model == "ets":
        mean = _auto_ets(ya, ha)
    else:
        mean = _mstl(ya, [s // k for s in (seasons.daily, seasons.weekly) if s], ha)
    return _upsample(float(ya[-1]), mean, k, h)


def seasonal_median(y: np.ndarray, h: int, season: int) -> np.ndarray:
    """Seasonal naive with a robust level: the median of the last few cycles at each phase (one odd day
    or spike does not repeat), moved to the median level of the last quarter cycle (a level shift is
    followed at once, not averaged away)."""
    cycles = max(1, min(SEASONAL_MEDIAN_CYCLES, y.size // season))
    profile = np.median(y[y.size - cycles * season :].reshape(cycles, season), axis=0)
    recent = max(1, season // 4)
    level = float(np.median(y[-recent:] - profile[-recent:]))
    return np.resize(profile, h).astype(float) + level


class GapError(ForecastError):
    """A model that needs a gap-free history has too little of it after the last gap left missing."""


def _recent_cycles(y: np.ndarray, season: int, cycles: int) -> np.ndarray:
    """The last `cycles` whole cycles of `y` as rows (oldest first); a partial oldest cycle is NaN-padded."""
    count = min(cycles, math.ceil(y.size / season))
    tail = y[-count * season :]
    if tail.size < count * season:
        tail = np.concatenate([np.full(count * season - tail.size, np.nan), tail])
    return tail.reshape(count, season)


def _gappy_forecast(model: str, y: np.ndarray, h: int, seasons: Seasons) -> np.ndarray:
    """The models on a history with gaps left missing (NaN): the naive ones use what was observed (the
    last value; per phase the newest observed cycle; a median over the observed cycles), the smooth ones
    (MSTL, ETS) are fitted on the gap-free stretch after the last gap, and refuse (GapError) when that
    stretch is too short for them."""
    seen = np.isfinite(y)
    last = float(y[np.flatnonzero(seen)[-1]])
    if model == "naive":
        return np.full(h, last)
    if model in ("seasonal_naive", "weekly_naive", "seasonal_median"):
        season = seasons.weekly if model == "weekly_naive" else (seasons.daily or seasons.weekly)
        rows = _recent_cycles(y, season, SEASONAL_MEDIAN_CYCLES if model == "seasonal_median" else 8)
        if model == "seasonal_median":
            with np.errstate(all="ignore"), warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # an all-missing phase: NaN, filled below
                profile = np.nanmedian(rows, axis=0)
                recent = max(1, season // 4)
                level = np.nanmedian(y[-recent:] - profile[-recent:])
            profile = profile + (float(level) if np.isfinite(level) else 0.0)
        else:  # per phase, the newest cycle that observed it
            observed = np.isfinite(rows)
            newest = rows.shape[0] - 1 - np.argmax(observed[::-1], axis=0)
            profile = rows[newest, np.arange(season)]
        profile = np.where(np.isfinite(profile), profile, last)  # a phase never observed: the last value
        return np.resize(profile, h).astype(float)
    if model in ("mstl", "ets"):
        tail = y[np.flatnonzero(~seen)[-1] + 1 :]
        need = 2 * seasons.longest + seasons.k if model == "mstl" else 16 * seasons.k
        if tail.size < need:
            raise GapError(f"{model}: {tail.size} points after the last gap, needs {need}")
        return _smooth_forecast(model, tail, h, seasons)
    raise ValueError(f"unknown model {model!r}; known: {', '.join(MODELS)}")


def point_forecast(model: str, y: np.ndarray, h: int, seasons: Seasons) -> np.ndarray:
    """Mean forecast of `model` for the `h` steps after `y` (native step); `a+b` is the mean of two. A
    history with gaps left missing (NaN) goes to the gap-tolerant versions (`_gappy_forecast`)."""
    if ENSEMBLE in model:
        first, second = model.split(ENSEMBLE, 1)
        return (point_forecast(first, y, h, seasons) + point_forecast(second, y, h, seasons)) / 2
    if np.isnan(y).any():
        return _gappy_forecast(model, y, h, seasons)
    if model == "naive":
        return np.full(h, float(y[-1]))
    if model == "seasonal_naive":
        cycle = y[-(seasons.daily or seasons.weekly) :]
        return np.resize(cycle, h).astype(float)
    if model == "seasonal_median":
        return seasonal_median(y, h, seasons.daily or seasons.weekly)
    if model == "weekly_naive":  # sub-daily series with two weeks of history: last week's same hour
        return np.resize(y[-seasons.weekly :], h).astype(float)
    if model in ("mstl", "ets"):
        return _smooth_forecast(model, y, h, seasons)
    raise ValueError(f"unknown model {model!r}; known: {', '.join(MODELS)}")


SEASONAL = ("seasonal_naive", "seasonal_median", "weekly_naive", "mstl")


def is_seasonal(model: str) -> bool:
    """A seasonal model, or an ensemble with one."""
    return any(part in SEASONAL for part in model.split(ENSEMBLE))


def candidates(seasons: Seasons) -> list[str]:
    if seasons.daily and seasons.weekly:
        return list(MODELS)
    if seasons.daily or seasons.weekly:
        return [m for m in MODELS if m != "weekly_naive"]
    return ["naive", "ets"]


# ------------------------------------------------------------------------------------------------ fit
@dataclass
class Forecast:
    """The chosen model's forecast with calibrated intervals, at the series' own step."""

    model: str
    mean: np.ndarray
    lo: dict[int, np.ndarray]
    hi: dict[int, np.ndarray]
    cv_mae: dict[str, float]
    cv_mase: float
    seasons: Seasons
    cv_horizon: int
    cv_windows: int
    notes: list[str] = field(default_factory=list)

    def frame(self, start: datetime | pd.Timestamp, step_seconds: float) -> pd.DataFrame:
        """`timestamp, mean, lo_80, hi_80, lo_95, hi_95`, the first row one step after `start`."""
        index = pd.Timestamp(start) + pd.to_timedelta(np.arange(1, self.mean.size + 1) * step_seconds, "s")
        data: dict[str, Any] = {"timestamp": index, "mean": self.mean}
        for level in LEVELS:
            data[f"lo_{level}"] = self.lo[level]
            data[f"hi_{level}"] = self.hi[level]
        return pd.DataFrame(data)


def cv_plan(n: int, h: int, step_seconds: float, windows: int = CV_WINDOWS) -> tuple[int, int, int]:
    """(cv horizon, step between origins, windows): held-out windows that leave at least 2 days (or 2/3
    of the series) to train on, at most `h` long; origins half a window apart."""
    daily = _period(step_seconds, DAY) or 1
    min_train = min(2 * daily if daily > 1 else n // 2, (2 * n) // 3)
    min_train = max(min_train, 8)
    cv_h = min(h, max(1, n // 6))
    while cv_h > 1 and n - cv_h - (windows - 1) * max(1, cv_h // 2) < min_train:
        cv_h = max(1, cv_h // 2)
    step = max(1, cv_h // 2)
    while windows > 1 and n - cv_h - (windows - 1) * step < min_train:
        windows -= 1
    if n - cv_h - (windows - 1) * step < 8:
        raise ForecastError(f"{n} points are too few to cross-validate a forecast")
    return cv_h, step, windows


def _conformal_quantile(errors: np.ndarray, level: int) -> float:
    m = errors.size
    if m == 0:
        return float("nan")
    q = min(1.0, math.ceil((m + 1) * level / 100) / m)
    return float(np.quantile(errors, q, method="higher"))


def calibrated_widths(residuals: np.ndarray, h: int, level: int) -> np.ndarray:
    """Half-widths for steps 1..h from CV residuals (windows x cv_h): conformal quantile of |error| per
    horizon bucket, made non-decreasing, and beyond the cross-validated horizon grown in proportion to the
    step (trend uncertainty grows linearly; no residual says how fast it really grows there, so the
    conservative choice, for capacity decisions an early warning beats a late one)."""
    cv_h = residuals.shape[1]
    abs_err = np.abs(residuals)
    buckets = np.array_split(np.arange(cv_h), min(INTERVAL_BUCKETS, cv_h))
    width_cv = np.empty(cv_h)
    everywhere = abs_err[np.isfinite(abs_err)]  # a bucket whose actuals were all missing (a gap left)
    for idx in buckets:
        errors = abs_err[:, idx].ravel()
        errors = errors[np.isfinite(errors)]
        width_cv[idx] = _conformal_quantile(errors if errors.size else everywhere, level)
    width_cv = np.maximum.accumulate(width_cv)
    if h <= cv_h:
        return width_cv[:h]
    beyond = width_cv[-1] * np.arange(cv_h + 1, h + 1) / cv_h
    return np.concatenate([width_cv, beyond])


def forecast_series(
    values: Sequence[float] | np.ndarray,
    step_seconds: float,
    horizon: int,
    *,
    models: Sequence[str] | None = None,
    bounds: tuple[float | None, float | None] | None = None,
    windows: int = CV_WINDOWS,
    ensemble: bool = True,
) -> Forecast:
    """Choose a model by rolling-origin CV (lowest MAE) among the candidates and the mean of the two best
    (`ensemble`), refit it on everything, forecast `horizon` steps with 80%/95% intervals calibrated on
    the CV residuals; clip to `bounds`. The naive forecasts are candidates: on the CV windows the choice
    is never worse than them."""
    y = np.asarray(values, dtype=float)
    if y.ndim != 1 or y.size < 16:
        raise ForecastError(f"need at least 16 points, got {y.size}")
    if np.isinf(y).any() or np.isnan(y[-1]) or np.isfinite(y).sum() < 16:
        raise ForecastError(
            "values must be finite, the last one observed and at least 16 observed (gaps left missing as NaN "
            "are tolerated; repair first)"
        )
    if horizon < 1:
        raise ForecastError("horizon must be at least one step")
    cv_h, cv_step, windows = cv_plan(y.size, horizon, step_seconds, windows)
    min_train = y.size - cv_h - (windows - 1) * cv_step
    seasons = choose_seasons(step_seconds, min_train)
    pool = [m for m in (models or candidates(seasons)) if m in candidates(seasons)] or ["naive"]
    origins = [min_train + w * cv_step for w in range(windows)]
    residuals: dict[str, np.ndarray] = {}
    notes: list[str] = []
    for model in pool:
        try:
            rows = [
                y[origin : origin + cv_h] - point_forecast(model, y[:origin], cv_h, seasons)
                for origin in origins
            ]
        except GapError as exc:  # gaps left: a model that needs more gap-free history sits this one out
            notes.append(f"not a candidate: {exc}")
            continue
        residuals[model] = np.vstack(rows)
    if not any(np.isfinite(r).any() for r in residuals.values()):
        raise ForecastError("the gaps left cover every cross-validation window: nothing to choose a model on")
    pool = list(residuals)
    # gaps left: the errors where something was observed
    cv_mae = {m: float(np.nanmean(np.abs(r))) for m, r in residuals.items()}
    if ensemble and len(pool) >= 2:
        # the two best candidates' mean forecast has the mean of their residuals: it costs no fit
        first, second = sorted(pool, key=lambda m: (cv_mae[m], MODELS.index(m)))[:2]
        pair = ENSEMBLE.join(sorted((first, second), key=MODELS.index))
        residuals[pair] = (residuals[first] + residuals[second]) / 2
        cv_mae[pair] = float(np.mean(np.abs(residuals[pair])))
    # lowest CV MAE; on a tie the simpler model (single before ensemble, in MODELS order)
    best = min(cv_mae, key=lambda m: (cv_mae[m], ENSEMBLE in m, MODELS.index(m.split(ENSEMBLE)[0])))
    steps = np.abs(np.diff(y[:min_train]))
    scale = float(np.mean(steps[np.isfinite(steps)])) if np.isfinite(steps).any() else 1.0
    scale = scale or 1.0
    mean = point_forecast(best, y, horizon, seasons)
    lo: dict[int, np.ndarray] = {}
    hi: dict[int, np.ndarray] = {}
    for level in LEVELS:
        width = calibrated_widths(residuals[best], horizon, level)
        lo[level], hi[level] = mean - width, mean + width
    if bounds is not None:
        low, high = bounds
        low = -np.inf if low is None else low
        high = np.inf if high is None else high
        mean = np.clip(mean, low, high)
        for level in LEVELS:
            lo[level] = np.clip(lo[level], low, high)
            hi[level] = np.clip(hi[level], low, high)
    return Forecast(
        model=best,
        mean=mean,
        lo=lo,
        hi=hi,
        cv_mae=cv_mae,
        cv_mase=cv_mae[best] / scale,
        seasons=seasons,
        cv_horizon=cv_h,
        cv_windows=windows,
        notes=notes,
    )


MODEL_NAMES = {
    "naive": "naive",
    "seasonal_naive": "seasonal naive",
    "seasonal_median": "seasonal median",
    "weekly_naive": "weekly naive",
}


def explain(fc: Forecast) -> str:
    """Why this model: its CV error beside the baselines' (and the other candidates')."""
    chosen = fc.cv_mae[fc.model]
    others = ", ".join(
        f"{MODEL_NAMES.get(m, m)} {e:.4g}"
        for m, e in sorted(fc.cv_mae.items(), key=lambda x: x[1])
        if m != fc.model
    )
    return (
        f"{fc.model}: lowest CV MAE {chosen:.4g} over {fc.cv_windows} windows of {fc.cv_horizon} steps "
        f"(others: {others or 'none'})"
    )


def _forecast_job(job: dict[str, Any]) -> Forecast | str:
    """One series; what it cannot survive is its own failure, never the run's. statsforecast raises a
    bare Exception ("no model able to be fitted") on values such as 1e308, numpy LinAlgError and
    FloatingPointError on others: each becomes this series' error message."""
    try:
        return forecast_series(**job)
    except Exception as exc:  # isolate the series: report its error by name
        return f"{type(exc).__name__}: {exc}"


def forecast_many(
    jobs: Iterable[dict[str, Any]],
    *,
    workers: int = 1,
    progress: Callable[[int, int], None] | None = None,
    dask_address: str | None = None,
) -> list[Forecast | str]:
    """`forecast_series(**job)` for every job, in `workers` processes when more than one, or on the
    workers of the Dask cluster at `dask_address` (they need scaleops installed); a job that cannot be
    forecast yields its error message instead of a Forecast.

    `jobs` may be a generator: with workers, each job is handed to them as soon as it is produced, so
    the caller's own work per series (repair, validation) overlaps the fits instead of preceding them all
    (`progress` then counts against the jobs produced so far)."""
    results: list[Forecast | str] = []
    if dask_address:
        from distributed import Client

        batch = list(jobs)
        if not batch:
            return results
        with Client(dask_address) as client:
            futures = client.map(_forecast_job, batch, pure=False)
            for i, future in enumerate(futures):
                results.append(future.result())
                if progress:
                    progress(i + 1, len(batch))
        return results
    if workers <= 1 or (isinstance(jobs, Sequence) and len(jobs) <= 1):
        batch = list(jobs)
        for i, job in enumerate(batch):
            results.append(_forecast_job(job))
            if progress:
                progress(i + 1, len(batch))
        return results
    import multiprocessing

    # spawn, not fork: the caller may run threads (Prefect does), and fork copies their locks
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=workers, mp_context=context) as executor:
        submitted = [executor.submit(_forecast_job, job) for job in jobs]
        for i, future in enumerate(submitted):
            results.append(future.result())
            if progress:
                progress(i + 1, len(submitted))
    return results


# ------------------------------------------------------------------------------------------------ breach
@dataclass
class Breach:
    breach_at: datetime | None  # mean forecast crosses
    breach_at_upper: datetime | None  # upper 95% crosses: the earliest plausible date
    breach_at_lower: datetime | None  # lower 95% crosses: by then it is almost certain
    peak_upper: float  # highest upper-95% value over the horizon
    peak_mean: float


def first_crossing(
    timestamps: Sequence[datetime] | pd.DatetimeIndex,
    values: np.ndarray,
    threshold: float,
    direction: str = "above",
) -> datetime | None:
    """The first timestamp whose value is at or above (`direction="below"`: at or under) `threshold`."""
    values = np.asarray(values)
    hits = np.flatnonzero(values >= threshold if direction == "above" else values <= threshold)
    if hits.size == 0:
        return None
    return pd.Timestamp(timestamps[int(hits[0])]).round("s").to_pydatetime()


def breach(frame: pd.DataFrame, threshold: float, direction: str = "above") -> Breach:
    """Crossing dates of the mean and of the 95% band for a forecast frame (see `Forecast.frame`).

    `direction="above"` (usage, load): the upper 95% crosses first (`breach_at_upper`, the earliest
    plausible date), the lower 95% last. `"below"` (free space, headroom): the bands swap roles, and
    `breach_at_upper` is still the earliest plausible date, `peak_upper` the plausible extreme (lowest).
    """
    ts = pd.DatetimeIndex(frame["timestamp"])
    early, late = ("hi_95", "lo_95") if direction == "above" else ("lo_95", "hi_95")
    extreme = frame[early].max() if direction == "above" else frame[early].min()
    return Breach(
        breach_at=first_crossing(ts, frame["mean"].to_numpy(), threshold, direction),
        breach_at_upper=first_crossing(ts, frame[early].to_numpy(), threshold, direction),
        breach_at_lower=first_crossing(ts, frame[late].to_numpy(), threshold, direction),
        peak_upper=float(extreme),
        peak_mean=float(frame["mean"].max() if direction == "above" else frame["mean"].min()),
    )


@dataclass
class Recommendation:
    units: int
    amount: float
    monthly_cost: float | None
    text: str


def recommend(
    peak_upper: float,
    threshold: float,
    *,
    capacity_per_unit: float | None,
    unit_cost_per_month: float | None,
    unit: str = "",
    headroom: float = 0.0,
    direction: str = "above",
) -> Recommendation | None:
    """Units of capacity that keep the upper-95% peak (plus `headroom` as a fraction) under the
    threshold, VPA-style: the recommendation covers the plausible peak, not the mean. With
    `direction="below"` the plausible trough (lower 95%) is kept above the threshold instead."""
    if not capacity_per_unit or capacity_per_unit <= 0:
        return None
    if direction == "above":
        needed = peak_upper * (1 + headroom) - threshold
    else:
        needed = threshold - peak_upper * (1 - headroom)
    units = max(0, math.ceil(needed / capacity_per_unit - 1e-9))
    amount = units * capacity_per_unit
    cost = units * unit_cost_per_month if unit_cost_per_month is not None else None
    if units == 0:
        text = "no change needed within the horizon"
    else:
        text = f"add {units} x {capacity_per_unit:g} {unit}".rstrip() + f" (= {amount:g} {unit})".rstrip()
        if cost is not None:
            text += f", about {cost:,.2f} USD/month more"
    return Recommendation(units=units, amount=amount, monthly_cost=cost, text=text)


# ------------------------------------------------------------------------------------------------ data
@dataclass
class SeriesData:
    """What a source returns for one series: epoch-second timestamps and values, or why it could not."""

    name: str
    timestamps: list[float] = field(default_factory=list)
    values: list[float] = field(default_factory=list)
    step_seconds: float | None = None  # the source's cadence when it has one (Prometheus step, CW period)
    error: str | None = None
