"""Metric series in files: a CSV with a `timestamp,value` header (ISO 8601 or epoch seconds; naive
times are UTC). Malformed input fails with the line and the column named."""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from scaleops.core.retry import io_task
from scaleops.core.settings import SeriesSettings
from tasks.capacity.models import SeriesData, epoch_seconds


class MalformedFile(ValueError):
    """The file is not a `timestamp,value` CSV; the message names the line and the column."""


def _parse_time(raw: str) -> float | None:
    text = raw.strip()
    if not text:
        return None
    try:
        return float(text)  # epoch seconds
    except ValueError:
        pass
    try:
        stamp = pd.Timestamp(text)
    except (ValueError, TypeError):
        return None
    if stamp is pd.NaT:
        return None
    return float(epoch_seconds([stamp])[0])


def read_series_csv(path: str | Path) -> tuple[list[float], list[float]]:
    """(epoch-second timestamps, values) in file order; raises MalformedFile naming line and column."""
    path = Path(path)
    try:
        handle = path.open(newline="", encoding="utf-8")
    except OSError as exc:
        raise MalformedFile(f"{path}: cannot read ({exc.strerror or exc})") from None
    with handle:
        reader = csv.reader(handle)
        try:
            header = next(reader)
        except StopIteration:
            raise MalformedFile(
                f"{path}: line 1: the file is empty (expected a timestamp,value header)"
            ) from None
        except (csv.Error, UnicodeDecodeError) as exc:
            raise MalformedFile(f"{path}: line 1: not a CSV ({exc})") from None
        names = [h.strip().lower() for h in header]
        for column in ("timestamp", "value"):
            if column not in names:
                raise MalformedFile(f"{path}: line 1, column '{column}': missing from the header {header}")
        ti, vi = names.index("timestamp"), names.index("value")
        timestamps: list[float] = []
        values: list[float] = []
        try:
            for row in reader:
                line = reader.line_num
                if not row or all(not cell.strip() for cell in row):
                    continue
                if len(row) != len(header):
                    raise MalformedFile(
                        f"{path}: line {line}: {len(row)} columns, the header has {len(header)}"
                    )
                stamp = _parse_time(row[ti])
                if stamp is None:
                    raise MalformedFile(
                        f"{path}: line {line}, column 'timestamp': {row[ti]!r} is not a time "
                        "(ISO 8601 or epoch seconds)"
                    )
                try:
                    value = float(row[vi])
                except ValueError:
                    raise MalformedFile(
                        f"{path}: line {line}, column 'value': {row[vi]!r} is not a number"
                    ) from None
                timestamps.append(stamp)
                values.append(value)
        except (csv.Error, UnicodeDecodeError) as exc:
            raise MalformedFile(f"{path}: line {reader.line_num}: not a CSV ({exc})") from None
    if not timestamps:
        raise MalformedFile(f"{path}: line 2: no data rows after the header")
    return timestamps, values


def load_csv_series(specs: Sequence[SeriesSettings], start: float, end: float) -> list[SeriesData]:
    """Each spec's CSV, cut to [start, end]; a malformed or missing file is that series' error."""
    out = []
    for spec in specs:
        try:
            stamps, values = read_series_csv(spec.path or "")
        except MalformedFile as exc:
            out.append(SeriesData(spec.name, error=str(exc)))
            continue
        kept = [(t, v) for t, v in zip(stamps, values, strict=True) if start <= t <= end]
        out.append(SeriesData(spec.name, timestamps=[t for t, _ in kept], values=[v for _, v in kept]))
    return out


@io_task(task_run_name="csv-read-{count}-series")
def csv_fetch(specs: list[SeriesSettings], start: float, end: float, count: int) -> list[SeriesData]:
    return load_csv_series(specs, start, end)
