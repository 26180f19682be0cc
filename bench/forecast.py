"""Capacity forecasting on real public series: scaleops' forecaster beside bare statsforecast.

For every NAB realKnownCause series (../shared/data/nab-realKnownCause when it is there, else the three
shipped in bench/data/nab-realKnownCause-small, or --data DIR), repaired as
`scaleops forecast` repairs it (tasks/capacity/repair.py), up to `--windows` held-out days at the end of
the series that contain no labelled anomaly window and at most a fifth of interpolated points: train on
the (at most `--max-points`) points before the origin, forecast one day, and score
- MASE (scale: in-sample one-step naive MAE) of scaleops' choice, of naive, of seasonal naive (daily),
- 80%-interval coverage of scaleops' calibrated interval,
- seconds per series, beside bare statsforecast (one `StatsForecast.forecast` of MSTL with a daily
  season and an AutoETS trend, level 80, on the same training data: what an expert would write first).

The summary gives the issue's goal metrics: share of windows at or below the better baseline, median
MASE ratio to it, 80% coverage. `--cli RUNS` also times `scaleops forecast` on the 4,032-point
ec2_request_latency file (new process per run, /usr/bin/time -v); `--synthetic N [--workers W]` times only
the flow's per-series work (repair, great-expectations, CV forecast) on N synthetic hourly series.

A second data set, kept out of tuning: `--taylor-wheel pmdarima-2.1.1-*.whl --data /tmp/taylor --windows 14`
writes Taylor's half-hourly electricity demand (shipped inside pmdarima's wheel) to /tmp/taylor and
evaluates the last 14 days of it the same way.

`python -m bench forecast` or `.venv/bin/python bench/forecast.py [--data DIR] [--windows N] [--cli 3]`.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = ROOT.parent / "shared" / "data" / "nab-realKnownCause"
# three of the seven series, shipped (MIT, see its README): a clone without ../shared still has data
SHIPPED_DATA = ROOT / "bench" / "data" / "nab-realKnownCause-small"
DEFAULT_DATA = SHARED_DATA if SHARED_DATA.is_dir() else SHIPPED_DATA

# NAB labels/combined_windows.json (numenta/NAB), the realKnownCause entries.
ANOMALY_WINDOWS: dict[str, list[tuple[str, str]]] = {
    "ambient_temperature_system_failure": [
        ("2013-12-15 07:00:00", "2013-12-30 09:00:00"),
        ("2014-03-29 15:00:00", "2014-04-20 22:00:00"),
    ],
    "cpu_utilization_asg_misconfiguration": [("2014-07-10 12:29:00", "2014-07-15 17:19:00")],
    "ec2_request_latency_system_failure": [
        ("2014-03-14 03:31:00", "2014-03-14 14:41:00"),
        ("2014-03-18 17:06:00", "2014-03-19 04:16:00"),
        ("2014-03-20 21:26:00", "2014-03-21 03:41:00"),
    ],
    "machine_temperature_system_failure": [
        ("2013-12-15 09:55:00", "2013-12-18 00:55:00"),
        ("2014-01-27 06:25:00", "2014-01-29 21:25:00"),
        ("2014-02-07 07:00:00", "2014-02-09 22:00:00"),
    ],
    "nyc_taxi": [
        ("2014-10-30 15:30:00", "2014-11-03 22:30:00"),
        ("2014-11-25 12:00:00", "2014-11-29 19:00:00"),
        ("2014-12-23 11:30:00", "2014-12-27 18:30:00"),
        ("2014-12-29 21:30:00", "2015-01-03 04:30:00"),
        ("2015-01-24 20:30:00", "2015-01-29 03:30:00"),
    ],
    "rogue_agent_key_hold": [
        ("2014-07-15 04:35:00", "2014-07-15 13:25:00"),
        ("2014-07-17 05:50:00", "2014-07-18 06:45:00"),
    ],
    "rogue_agent_key_updown": [
        ("2014-07-14 17:00:00", "2014-07-15 15:00:00"),
        ("2014-07-16 21:50:00", "2014-07-17 19:50:00"),
    ],
}


def load_regular(path: Path) -> tuple[pd.Series, float, np.ndarray]:
    """The series as `scaleops forecast` sees it: read, repaired (sort, merge duplicates, DST, snap,
    fill gaps up to a day, cut at a longer one); returns it, its step and which points were filled."""
    from tasks.capacity.repair import min_points_for, repair_series, robust_step
    from tasks.capacity.sources.files import read_series_csv

    stamps, values = read_series_csv(path)
    fixed = repair_series(stamps, values, min_points=min_points_for(robust_step(stamps)))
    index = pd.to_datetime(fixed.timestamps, unit="s")
    return pd.Series(fixed.values, index=index), fixed.step_seconds, fixed.filled


def overlaps(start: pd.Timestamp, end: pd.Timestamp, windows: list[tuple[str, str]]) -> bool:
    return any(start <= pd.Timestamp(b) and pd.Timestamp(a) <= end for a, b in windows)


def held_out(series: pd.Series, h: int, name: str, count: int, filled: np.ndarray) -> list[int]:
    """Origins (index of the first held-out point), newest first, one day apart, anomaly-free, and with
    at most a fifth of the held-out day interpolated by the repair (scored against what happened)."""
    origins: list[int] = []
    origin = len(series) - h
    while origin > h and len(origins) < count:
        start, end = series.index[origin], series.index[min(origin + h, len(series)) - 1]
        if (
            not overlaps(start, end, ANOMALY_WINDOWS.get(name, []))
            and filled[origin : origin + h].mean() <= 0.2
        ):
            origins.append(origin)
        origin -= h
    return origins


def mase(actual: np.ndarray, forecast: np.ndarray, scale: float) -> float:
    return float(np.mean(np.abs(actual - forecast)) / scale)


def bare_statsforecast(train: pd.Series, h: int, step: float, daily: int) -> tuple[np.ndarray, np.ndarray]:
    from statsforecast import StatsForecast
    from statsforecast.models import MSTL, AutoETS

    frame = pd.DataFrame({"unique_id": "s", "ds": train.index, "y": train.to_numpy()})
    model = MSTL(season_length=[daily], trend_forecaster=AutoETS(model="ZZN")) if daily else AutoETS()
    sf = StatsForecast(
        models=[model], freq=pd.tseries.frequencies.to_offset(pd.Timedelta(seconds=step)), n_jobs=1
    )
    out = sf.forecast(df=frame, h=h, level=[80])
    name = "MSTL" if daily else "AutoETS"
    return out[name].to_numpy(), np.vstack([out[f"{name}-lo-80"], out[f"{name}-hi-80"]])


def run(data: Path, windows: int, max_points: int) -> list[dict[str, object]]:
    from tasks.capacity.models import DAY, forecast_series, point_forecast

    rows: list[dict[str, object]] = []
    warmed = False
    for path in sorted(data.glob("*.csv")):
        name = path.stem
        series, step, filled = load_regular(path)
        h = max(1, round(DAY / step))
        daily = h if h >= 2 else 0
        for origin in held_out(series, h, name, windows, filled):
            train = series.iloc[max(0, origin - max_points) : origin]
            actual = series.iloc[origin : origin + h].to_numpy()
            y = train.to_numpy()
            if not warmed:  # numba JIT compile happens once per process: keep it out of the timings
                forecast_series(y, step, h)
                bare_statsforecast(train, h, step, daily)
                warmed = True
            started, cpu = time.perf_counter(), time.process_time()
            fc = forecast_series(y, step, h)
            ours_seconds, ours_cpu = time.perf_counter() - started, time.process_time() - cpu
            started, cpu = time.perf_counter(), time.process_time()
            bare_mean, bare_band = bare_statsforecast(train, h, step, daily)
            bare_seconds, bare_cpu = time.perf_counter() - started, time.process_time() - cpu
            scale = float(np.mean(np.abs(np.diff(y)))) or 1.0
            seasons = fc.seasons
            naive = point_forecast("naive", y, h, seasons)
            snaive = point_forecast("seasonal_naive", y, h, seasons) if seasons.daily else naive
            inside = (actual >= fc.lo[80]) & (actual <= fc.hi[80])
            bare_inside = (actual >= bare_band[0]) & (actual <= bare_band[1])
            rows.append(
                {
                    "series": name,
                    "origin": str(series.index[origin]),
                    "points": len(y),
                    "h": h,
                    "model": fc.model,
                    "mase": mase(actual, fc.mean, scale),
                    "mase_naive": mase(actual, naive, scale),
                    "mase_snaive": mase(actual, snaive, scale),
                    "mase_bare": mase(actual, bare_mean, scale),
                    "cov80": float(inside.mean()),
                    "cov80_bare": float(bare_inside.mean()),
                    "sec": ours_seconds,
                    "sec_bare": bare_seconds,
                    "cpu": ours_cpu,
                    "cpu_bare": bare_cpu,
                }
            )
            print(
                f"  {name:40s} {rows[-1]['origin']} n={len(y):5d} h={h:3d} {fc.model:15s} "
                f"MASE {rows[-1]['mase']:.2f} (naive {rows[-1]['mase_naive']:.2f}, "
                f"snaive {rows[-1]['mase_snaive']:.2f}, bare {rows[-1]['mase_bare']:.2f}) "
                f"cov80 {rows[-1]['cov80']:.2f} {ours_seconds:.2f}s vs {bare_seconds:.2f}s "
                f"(cpu {ours_cpu:.2f}s vs {bare_cpu:.2f}s)",
                flush=True,
            )
    return rows


def summarise(rows: list[dict[str, object]]) -> str:
    frame = pd.DataFrame(rows)
    better = frame[["mase_naive", "mase_snaive"]].min(axis=1)
    at_or_below = int((frame["mase"] <= better + 1e-9).sum())
    within_5pct = int((frame["mase"] <= better * 1.05).sum())
    ratio = frame["mase"] / better
    per_series = frame.assign(better=better).groupby("series")[["mase", "better"]].mean()
    series_below = int((per_series["mase"] <= per_series["better"] + 1e-9).sum())
    lines = [
        f"windows: {len(frame)} held-out days on {frame['series'].nunique()} series",
        f"goal metrics: at or below the better baseline on {at_or_below / len(frame):.0%} of windows "
        f"({series_below}/{len(per_series)} series on their mean), median MASE ratio to the better baseline "
        f"{ratio.median():.3f} (mean {ratio.mean():.3f}), 80% coverage {frame['cov80'].mean():.3f}",
        "models chosen: " + ", ".join(f"{m} {c}" for m, c in frame["model"].value_counts().items()),
        f"median MASE: scaleops {frame['mase'].median():.3f}, naive {frame['mase_naive'].median():.3f}, "
        f"seasonal naive {frame['mase_snaive'].median():.3f}, bare statsforecast MSTL "
        f"{frame['mase_bare'].median():.3f}",
        f"scaleops at or below the better baseline: {at_or_below}/{len(frame)} windows "
        f"(within 5%: {within_5pct}/{len(frame)})",
        f"80% coverage: scaleops mean {frame['cov80'].mean():.3f} (median {frame['cov80'].median():.3f}); "
        f"bare statsforecast mean {frame['cov80_bare'].mean():.3f}",
        f"seconds per series: scaleops {frame['sec'].mean():.3f} (max {frame['sec'].max():.3f}, "
        f"points <= {frame['points'].max()}), bare statsforecast {frame['sec_bare'].mean():.3f}; "
        f"ratio scaleops/bare {frame['sec'].mean() / frame['sec_bare'].mean():.2f}",
        f"CPU seconds per series (less sensitive to a shared machine): scaleops {frame['cpu'].mean():.3f} "
        f"(max {frame['cpu'].max():.3f}), bare statsforecast {frame['cpu_bare'].mean():.3f}; "
        f"ratio {frame['cpu'].mean() / frame['cpu_bare'].mean():.2f}",
        "per series (mean over its windows): "
        + ", ".join(
            f"{name} MASE {g['mase'].mean():.2f} vs best baseline {better[g.index].mean():.2f}, "
            f"cov80 {g['cov80'].mean():.2f}"
            for name, g in frame.groupby("series")
        ),
    ]
    return "\n".join(lines)


def cli_run(path: Path, runs: int) -> str:
    """`scaleops forecast` on one file as a user runs it: a new process each time, under /usr/bin/time -v
    (wall, CPU, peak RSS); the first run also fills numba's on-disk cache."""
    import re
    import subprocess
    import tempfile

    scaleops = ROOT / ".venv" / "bin" / "scaleops"
    lines = []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(runs):
            done = subprocess.run(
                ["/usr/bin/time", "-v", str(scaleops), "forecast", "--input", str(path), "--horizon", "1d"]
                + ["--output", f"{tmp}/o.csv"],
                capture_output=True,
                text=True,
                check=False,
            )
            fields = dict(re.findall(r"^\s*(.+?): (.+)$", done.stderr, re.MULTILINE))
            wall = fields.get("Elapsed (wall clock) time (h:mm:ss or m:ss)", "?")
            cpu = float(fields.get("User time (seconds)", "nan")) + float(
                fields.get("System time (seconds)", "nan")
            )
            rss = int(fields.get("Maximum resident set size (kbytes)", "0")) / 1024
            lines.append(
                f"cli run {i + 1}: exit {done.returncode}, wall {wall}, cpu {cpu:.2f}s, peak {rss:.0f} MB"
            )
    return "\n".join(lines)


def synthetic_run(count: int, workers: int) -> str:
    """The flow's per-series work (repair, great-expectations suite, CV forecast in `workers` processes)
    on `count` synthetic hourly series of 28 days (the default lookback), without Prefect."""
    from scaleops.core.settings import CapacitySettings, SeriesSettings
    from tasks.capacity.analysis import validate_and_forecast
    from tasks.capacity.models import SeriesData

    rng = np.random.default_rng(0)
    end = 1_800_000_000.0
    n = 28 * 24
    t = end - (n - 1 - np.arange(n)) * 3600.0
    specs, fetched = [], []
    for i in range(count):
        level, growth, amp = rng.uniform(20, 60), rng.uniform(-0.02, 0.05), rng.uniform(2, 10)
        v = level + growth * np.arange(n) + amp * np.sin(2 * np.pi * np.arange(n) / 24) + rng.normal(0, 1, n)
        keep = rng.random(n) > 0.01  # a few scrape gaps
        specs.append(SeriesSettings(name=f"s{i}", source="csv", path=Path("x.csv"), threshold=100))
        fetched.append(
            SeriesData(f"s{i}", timestamps=t[keep].tolist(), values=v[keep].tolist(), step_seconds=3600)
        )
    import datetime as dt
    import os
    import resource

    settings = CapacitySettings(workers=workers)
    load = os.getloadavg()[0]
    started, cpu = time.perf_counter(), time.process_time()
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    results, _ = validate_and_forecast(
        specs,
        fetched,
        as_of=dt.datetime.fromtimestamp(end, dt.UTC),
        horizon_seconds=30 * 86400,
        capacity=settings,
        charts=False,
    )
    wall, cpu = time.perf_counter() - started, time.process_time() - cpu
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    workers_cpu = (after.ru_utime + after.ru_stime) - (children.ru_utime + children.ru_stime)
    parent_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    ok = sum(r.status in ("ok", "breach-within-lead-time") for r in results)
    return (
        f"synthetic: {count} hourly series of 28 days, {workers} workers: {ok} forecast, wall {wall:.1f}s "
        f"({wall / count:.3f}s per series) at load {load:.1f}; CPU: flow process {cpu:.1f}s, workers "
        f"{workers_cpu:.1f}s ({(cpu + workers_cpu) / count:.3f}s per series); peak RSS: flow process "
        f"{parent_peak:.0f} MB, largest worker {after.ru_maxrss / 1024:.0f} MB"
    )


def taylor_csv(wheel: Path, out_dir: Path) -> Path:
    """A second public data set, kept out of tuning: Taylor's half-hourly electricity demand of England and
    Wales, Monday 5 June to Sunday 27 August 2000 (4,032 points, Taylor 2003; R's forecast::taylor), as
    pmdarima ships it inline in pmdarima/datasets/taylor.py. `wheel` is a pmdarima wheel (`pip download
    pmdarima==2.1.1 --no-deps`, nothing installed); writes `out_dir/taylor_electricity_demand.csv`."""
    import re
    import zipfile

    with zipfile.ZipFile(wheel) as archive:
        source = archive.read("pmdarima/datasets/taylor.py").decode()
    body = source[source.index("np.array([") + len("np.array([") :]
    values = [float(x) for x in re.findall(r"\d+(?:\.\d+)?", body[: body.index("])")])]
    if len(values) != 4032:
        raise ValueError(f"expected 4,032 values in {wheel}, found {len(values)}")
    stamps = pd.date_range("2000-06-05", periods=len(values), freq="30min")
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "taylor_electricity_demand.csv"
    pd.DataFrame({"timestamp": stamps.strftime("%Y-%m-%d %H:%M:%S"), "value": values}).to_csv(
        path, index=False
    )
    return path


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="bench/forecast.py", description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--windows", type=int, default=3, help="held-out days per series")
    parser.add_argument("--max-points", type=int, default=4000)
    parser.add_argument(
        "--cli", type=int, default=0, metavar="RUNS", help="also time `scaleops forecast` RUNS times"
    )
    parser.add_argument(
        "--synthetic", type=int, default=0, metavar="N", help="only time the flow's work on N series"
    )
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument(
        "--taylor-wheel",
        type=Path,
        metavar="WHEEL",
        help="evaluate on Taylor's electricity demand read from this pmdarima wheel instead "
        "(--data: where to write its CSV)",
    )
    args = parser.parse_args(argv)
    if args.taylor_wheel:
        print(f"wrote {taylor_csv(args.taylor_wheel, args.data)}")
    if args.synthetic:
        print(synthetic_run(args.synthetic, args.workers))
        return 0
    if not args.data.is_dir():
        print(f"no data at {args.data}: pass --data DIR with NAB realKnownCause CSVs", file=sys.stderr)
        return 2
    rows = run(args.data, args.windows, args.max_points)
    if not rows:
        print("no held-out window found", file=sys.stderr)
        return 1
    print(summarise(rows))
    if args.cli:
        print(cli_run(args.data / "ec2_request_latency_system_failure.csv", args.cli))
    return 0 if not math.isnan(float(pd.DataFrame(rows)["mase"].mean())) else 1


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    raise SystemExit(main(sys.argv[1:]))
