"""Repair a real metric export before it is validated: plain numpy, no Prefect, no great-expectations.

Real exports (CloudWatch, Prometheus, NAB, a CSV someone saved) have repeated and out-of-order
timestamps, a daylight-saving change recorded in local time, 4:59/5:01 jitter, gaps of an hour or a day.
None of that makes a series unusable. `repair_series` turns it into a regular grid, in this order:

1. newest-first files are turned round; missing values (NaN, inf) become missing points;
2. a **DST fold** (local time going back by an hour less a step: the hour recorded twice) shifts the
   points before it back by an hour, a **DST gap** recorded as a run of points clamped to the end of
   the skipped hour is spread back over that hour, and a forward jump of exactly an hour plus a step
   shifts the points before it forward by an hour (all anchored on the newest point, so the end keeps
   its timestamps; `dst=False` turns this off);
3. the points are sorted, and repeated timestamps merged (`mean`, `max` or `last`);
4. jittered timestamps are snapped to the grid of the series' step (phase: the median offset);
5. gaps up to `max_fill_seconds` are filled: linearly up to `linear_steps` steps, beyond that by
   seasonal interpolation (the same time a day earlier and later, bent to meet both edges: not a
   straight line across a night);
6. longer gaps: the history is cut at the last one when what remains holds `min_points`; otherwise they
   are left missing (NaN in `values`, counted in `gaps_left` and `points_missing`) and the forecast uses
   models that tolerate them (tasks/capacity/models.py: the naive ones on what was observed, the smooth
   ones on the stretch after the last gap).

Every repair is counted (`Repairs`) and the filled points are marked, so the report and the chart show
them. Only what cannot be repaired raises `Unusable`.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Literal

import numpy as np

DAY = 86_400
HOUR = 3_600
Aggregate = Literal["mean", "max", "last"]
AGGREGATES: tuple[Aggregate, ...] = ("mean", "max", "last")
# exporters' usual cadences (seconds): a median step within 2% of one of them is taken to be it
CADENCES = (1, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, DAY)
LINEAR_STEPS = 3  # gaps up to this many steps are filled by a straight line


def min_points_for(step_seconds: float) -> int:
    """Two cycles of the longest season that can be used: two days of points for sub-daily series."""
    if step_seconds <= DAY / 2:
        return max(16, math.ceil(2 * DAY / step_seconds))
    return 16


class Unusable(ValueError):
    """The series cannot be repaired into something to forecast; the message says why."""


@dataclass
class Repairs:
    """What was done to one series, counted (all zero: the export was clean)."""

    duplicates_merged: int = 0  # points merged into another with the same (or the same snapped) time
    points_reordered: int = 0  # points that were not in time order in the file
    points_snapped: int = 0  # jittered timestamps moved onto the grid
    dst_changes: int = 0  # daylight-saving folds and gaps undone
    points_filled: int = 0  # grid points with no observation, interpolated
    gaps_left: int = 0  # gaps longer than the fill limit left missing (cutting there left too little)
    points_missing: int = 0  # grid points in those gaps: NaN in the repaired values
    history_cut: int = 0  # observed points dropped before the last gap longer than the fill limit

    def as_dict(self) -> dict[str, int]:
        return asdict(self)

    def total(self) -> int:
        return sum(self.as_dict().values())

    def describe(self) -> str:
        """'3 duplicates merged, 12 points filled' (only what happened), or 'none'."""
        words = {
            "duplicates_merged": "duplicates merged",
            "points_reordered": "points reordered",
            "points_snapped": "timestamps snapped to the step",
            "dst_changes": "daylight-saving changes undone",
            "points_filled": "missing points interpolated",
            "gaps_left": "long gaps left missing",
            "points_missing": "points missing in them",
            "history_cut": "points cut before the last long gap",
        }
        done = [f"{count} {words[name]}" for name, count in self.as_dict().items() if count]
        return ", ".join(done) or "none"


@dataclass
class Repaired:
    """A regular series (epoch seconds, one step apart), which of its points were filled, and the repairs."""

    timestamps: np.ndarray
    values: np.ndarray
    filled: np.ndarray  # bool per point: True where no observation was there and a value was interpolated
    step_seconds: float
    repairs: Repairs = field(default_factory=Repairs)
    notes: list[str] = field(default_factory=list)

    def for_validation(self, max_gap_steps: int) -> tuple[np.ndarray, np.ndarray, int]:
        """(timestamps, values, max_gap_steps) for the expectation suite: the observed and filled points;
        the long gaps the repair left missing on purpose (counted in `repairs`) are no cadence failure."""
        if not self.repairs.gaps_left:
            return self.timestamps, self.values, max_gap_steps
        seen = np.isfinite(self.values)
        t = self.timestamps[seen]
        longest = int(round(float(np.max(np.diff(t))) / self.step_seconds)) if t.size > 1 else 0
        return t, self.values[seen], max(max_gap_steps, longest)


def robust_step(timestamps: np.ndarray | list[float]) -> float:
    """The series' cadence: the median positive distance between its sorted timestamps."""
    t = np.asarray(timestamps, dtype=float)
    diffs = np.diff(np.sort(t))
    diffs = diffs[diffs > 0]
    if diffs.size == 0:
        raise Unusable("every point has the same timestamp: not a time series")
    step = float(np.median(diffs))
    for nice in CADENCES:  # a jittered 5:01 is a 5-minute cadence, or the grid drifts a minute a step
        if abs(step - nice) <= 0.02 * nice:
            return float(nice)
    return float(round(step)) if step >= 2 else step


def _undo_dst(t: np.ndarray, step: float) -> int:
    """Undo local-time DST changes in file order, in place; returns how many were found."""
    if step * 2 > HOUR:
        return 0  # hourly or coarser: a fold is a repeated timestamp, a gap one missing point
    tol = step / 4
    changes = 0
    i = 0
    while i < t.size - 1:
        d = t[i + 1] - t[i]
        if abs(d + HOUR - step) <= tol:  # fold: the clock went back an hour
            t[: i + 1] -= HOUR
            changes += 1
        elif abs(d - HOUR) <= step and i + 2 < t.size and t[i + 2] == t[i + 1]:
            run = 1
            while i + 1 + run < t.size and t[i + 1 + run] == t[i + 1]:
                run += 1
            if run * step <= d + tol:  # the skipped hour's points, clamped to its end: spread them back
                t[i + 1 : i + 1 + run] = t[i] + step * np.arange(1, run + 1)
                changes += 1
                i += run
                continue
        elif abs(d - HOUR - step) <= tol:  # gap: the clock jumped an hour ahead
            t[: i + 1] += HOUR
            changes += 1
        i += 1
    return changes


def _merge(t: np.ndarray, v: np.ndarray, how: Aggregate) -> tuple[np.ndarray, np.ndarray]:
    """Merge equal timestamps of a sorted series (stable order kept for `last`)."""
    unique, start = np.unique(t, return_index=True)
    if unique.size == t.size:
        return t, v
    if how == "mean":
        sums = np.add.reduceat(v, start)
        counts = np.diff(np.append(start, t.size))
        return unique, sums / counts
    if how == "max":
        return unique, np.maximum.reduceat(v, start)
    last = np.append(start[1:], t.size) - 1
    return unique, v[last]


def _season(step: float, size: int) -> int:
    ratio = DAY / step
    if ratio >= 2 and abs(ratio - round(ratio)) < 1e-6 and size > round(ratio):
        return int(round(ratio))
    return 0


def _template(observed: np.ndarray, index: np.ndarray, season: int) -> np.ndarray:
    """Mean of the observed values one (else two) seasons before and after each index; NaN when none."""
    out = np.full(index.size, np.nan)
    for cycles in (1, 2):
        todo = np.isnan(out)
        if not todo.any():
            break
        picks = []
        for sign in (-1, 1):
            j = index[todo] + sign * cycles * season
            ok = (j >= 0) & (j < observed.size)
            value = np.full(j.size, np.nan)
            value[ok] = observed[j[ok]]
            picks.append(value)
        both = np.vstack(picks)
        have = ~np.isnan(both)
        total = np.where(have, both, 0.0).sum(axis=0)
        count = have.sum(axis=0)
        out[todo] = np.where(count > 0, total / np.maximum(count, 1), np.nan)
    return out


def fill_gap(y: np.ndarray, observed: np.ndarray, a: int, b: int, season: int) -> None:
    """Fill y[a:b] (missing; y[a-1] and y[b] known) in place: linear for short gaps or without a season,
    else the seasonal template offset so that it meets both edges."""
    length = b - a
    left, right = y[a - 1], y[b]
    line = left + (right - left) * np.arange(1, length + 1) / (length + 1)
    if length <= LINEAR_STEPS or not season:
        y[a:b] = line
        return
    index = np.arange(a - 1, b + 1)
    tpl = _template(observed, index, season)
    if np.isnan(tpl[0]) or np.isnan(tpl[-1]):
        y[a:b] = line
        return
    d_left, d_right = left - tpl[0], right - tpl[-1]
    offset = d_left + (d_right - d_left) * np.arange(1, length + 1) / (length + 1)
    seasonal = tpl[1:-1] + offset
    y[a:b] = np.where(np.isnan(seasonal), line, seasonal)


def _runs(missing: np.ndarray) -> list[tuple[int, int]]:
    """[start, end) of every run of True."""
    if not missing.any():
        return []
    edges = np.diff(np.concatenate([[0], missing.astype(np.int8), [0]]))
    return list(zip(np.flatnonzero(edges == 1).tolist(), np.flatnonzero(edges == -1).tolist(), strict=True))


def repair_series(
    timestamps: np.ndarray | list[float],
    values: np.ndarray | list[float],
    *,
    step_seconds: float | None = None,
    aggregate: Aggregate = "mean",
    max_fill_seconds: float = DAY,
    min_points: int = 16,
    dst: bool = True,
) -> Repaired:
    """Repair (epoch-second timestamps, values) into a regular series; see the module's docstring."""
    if aggregate not in AGGREGATES:
        raise ValueError(f"aggregate must be one of {', '.join(AGGREGATES)}, not {aggregate!r}")
    t = np.array(timestamps, dtype=float)
    v = np.array(values, dtype=float)
    if t.shape != v.shape or t.ndim != 1:
        raise Unusable("timestamps and values differ in length")
    if not np.all(np.isfinite(t)):
        raise Unusable("some timestamps are not finite")
    repairs = Repairs()
    notes: list[str] = []
    diffs = np.diff(t)
    if (diffs < 0).sum() > (diffs > 0).sum():  # a newest-first export
        t, v = t[::-1].copy(), v[::-1].copy()
        repairs.points_reordered += t.size
        notes.append("the file is newest first: turned round")
    finite = np.isfinite(v)
    t, v = t[finite], v[finite]  # a missing value is a missing point: filled below like any gap
    if t.size < 2:
        raise Unusable(f"{t.size} usable point(s): not a time series")
    step = float(step_seconds) if step_seconds else robust_step(t)
    if dst:
        repairs.dst_changes = _undo_dst(t, step)
    order = np.argsort(t, kind="stable")
    repairs.points_reordered += int((order != np.arange(t.size)).sum()) if not repairs.points_reordered else 0
    t, v = t[order], v[order]
    n = t.size
    t, v = _merge(t, v, aggregate)
    repairs.duplicates_merged += n - t.size
    if t.size < 2:
        raise Unusable("every point has the same timestamp: not a time series")
    # snap onto the grid through the newest point, shifted by the median offset (robust to a jittered end)
    offset = (t - t[-1]) / step
    phase = float(np.median(offset - np.round(offset)))
    end = t[-1] + phase * step
    slots = np.round((t - end) / step).astype(np.int64)
    grid_t = end + slots * step
    repairs.points_snapped = int((np.abs(grid_t - t) > 1e-6).sum())
    n = t.size
    slot_t, v = _merge(slots.astype(float), v, aggregate)
    repairs.duplicates_merged += n - slot_t.size
    slots = slot_t.astype(np.int64)
    size = int(slots[-1] - slots[0]) + 1
    y = np.full(size, np.nan)
    y[slots - slots[0]] = v
    observed = y.copy()
    missing = np.isnan(y)
    season = _season(step, size)
    max_fill = max(1, int(max_fill_seconds // step))
    runs = _runs(missing)
    long_runs = [(a, b) for a, b in runs if b - a > max_fill]
    start = 0
    if long_runs:
        a, b = long_runs[-1]
        if size - b >= min_points:
            start = b
            repairs.history_cut = int((~missing[:b]).sum())
            notes.append(
                f"history cut at the last gap longer than {max_fill * step / 3600:g}h "
                f"({(b - a) * step / 3600:.1f}h): {repairs.history_cut} older points dropped"
            )
    y, observed, missing = y[start:], observed[start:], missing[start:]
    left = np.zeros(y.size, dtype=bool)  # long gaps left missing: cutting there would leave too little
    for a, b in _runs(missing):
        if b - a > max_fill:
            left[a:b] = True
            repairs.gaps_left += 1
        else:
            fill_gap(y, observed, a, b, season)
    if repairs.gaps_left:
        repairs.points_missing = int(left.sum())
        notes.append(
            f"{repairs.gaps_left} gap(s) longer than {max_fill * step / 3600:g}h left missing "
            f"({repairs.points_missing} points): cutting there would leave too little history; "
            "the forecast uses models that tolerate them"
        )
    missing &= ~left
    repairs.points_filled = int(missing.sum())
    if repairs.points_filled:
        how = "linearly" if not season else f"linearly up to {LINEAR_STEPS} steps, seasonally beyond"
        notes.append(f"interpolated {repairs.points_filled} missing points ({how})")
    grid = end + (slots[0] + start + np.arange(y.size)) * step
    return Repaired(
        timestamps=grid, values=y, filled=missing, step_seconds=step, repairs=repairs, notes=notes
    )
