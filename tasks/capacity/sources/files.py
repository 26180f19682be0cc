"""Metric series in files: a CSV with a `timestamp,value` header (ISO 8601 or epoch seconds; naive
times are UTC). Malformed input fails with the line and the column named.

No Prefect here (`scaleops forecast` reads files through this module and must start fast): the thin
task is `tasks/capacity/sources/file_fetch.py`."""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from scaleops.core.settings import SeriesSettings
from tasks.capacity.models import SeriesData, epoch_seconds


class MalformedFile(ValueError):
    """The file is not a `timestamp,value` CSV; the message names the line and the column."""


def _parse_time(raw: str) -> float | None:
    text = raw.strip()
    if not text:
        return None
    try:
        value = float(text)  # epoch seconds
        return value if math.isfinite(value) else None
    except ValueError:
        pass
    try:
        stamp = pd.Timestamp(text)
    except (ValueError, TypeError):
        return None
    if stamp is pd.NaT:
        return None
    return float(epoch_seconds([stamp])[0])


def _parse_times(raw: list[str], lines: list[int], path: Path) -> list[float]:
    """Epoch seconds for every raw timestamp: numbers as they are, ISO 8601 text parsed in one
    vectorised call (per-row parsing costs ~0.4 ms a row), anything else row by row; the first
    unparseable one raises naming its line."""
    out = np.full(len(raw), np.nan)
    text_rows: list[int] = []
    for i, cell in enumerate(raw):
        try:
            out[i] = float(cell)
        except ValueError:
            text_rows.append(i)
    if text_rows:
        texts = [raw[i].strip() for i in text_rows]
        try:
            parsed = np.asarray(
                epoch_seconds(pd.to_datetime(texts, utc=True, format="ISO8601", errors="coerce"))
            )
        except (ValueError, TypeError, OverflowError):
            parsed = np.full(len(texts), np.nan)
        out[text_rows] = parsed
    for i in np.flatnonzero(~np.isfinite(out)).tolist():
        value = _parse_time(raw[i])
        if value is None:
            raise MalformedFile(
                f"{path}: line {lines[i]}, column 'timestamp': {raw[i]!r} is not a time "
                "(ISO 8601 or epoch seconds)"
            )
        out[i] = value
    return out.tolist()


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
        raw_times: list[str] = []
        lines: list[int] = []
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
                try:
                    value = float(row[vi])
                except ValueError:
                    raise MalformedFile(
                        f"{path}: line {line}, column 'value': {row[vi]!r} is not a number"
                    ) from None
                raw_times.append(row[ti])
                lines.append(line)
                values.append(value)
        except (csv.Error, UnicodeDecodeError) as exc:
            raise MalformedFile(f"{path}: line {reader.line_num}: not a CSV ({exc})") from None
    if not raw_times:
        raise MalformedFile(f"{path}: line 2: no data rows after the header")
    return _parse_times(raw_times, lines, path), values


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
