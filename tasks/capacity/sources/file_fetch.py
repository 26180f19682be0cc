"""The thin task over `files.load_csv_series` (kept apart so that reading a CSV needs no Prefect)."""

from __future__ import annotations

from scaleops.core.retry import io_task
from scaleops.core.settings import SeriesSettings
from tasks.capacity.models import SeriesData
from tasks.capacity.sources.files import load_csv_series


@io_task(task_run_name="csv-read-{count}-series")
def csv_fetch(specs: list[SeriesSettings], start: float, end: float, count: int) -> list[SeriesData]:
    return load_csv_series(specs, start, end)
