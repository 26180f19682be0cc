"""CloudWatch: metric statistics through GetMetricData, up to 500 series per call."""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import boto3  # noqa: F401 - imported once here, not first inside concurrent task threads

from scaleops.core.clients import cloudwatch_client
from scaleops.core.retry import io_task, is_transient
from scaleops.core.settings import SeriesSettings, Settings
from tasks.capacity.models import SeriesData, parse_duration

DEFAULT_PERIOD = "1h"
MAX_QUERIES_PER_CALL = 500


def _query(i: int, spec: SeriesSettings) -> dict[str, Any]:
    period = int(parse_duration(spec.step or DEFAULT_PERIOD))
    return {
        "Id": f"s{i}",
        "Label": spec.name,
        "MetricStat": {
            "Metric": {
                "Namespace": spec.namespace,
                "MetricName": spec.metric,
                "Dimensions": [{"Name": k, "Value": v} for k, v in sorted(spec.dimensions.items())],
            },
            "Period": period,
            "Stat": spec.stat,
        },
        "ReturnData": True,
    }


def fetch_cloudwatch_series(
    client: Any, specs: Sequence[SeriesSettings], start: float, end: float
) -> list[SeriesData]:
    """GetMetricData for every series (batches of 500, every page), timestamps ascending. The window is
    aligned to the longest period (CloudWatch labels a period by its start, and aligns it like this)."""
    longest = max((parse_duration(s.step or DEFAULT_PERIOD) for s in specs), default=3600)
    start = math.floor(start / longest) * longest
    found: dict[str, SeriesData] = {
        spec.name: SeriesData(spec.name, step_seconds=parse_duration(spec.step or DEFAULT_PERIOD))
        for spec in specs
    }
    for offset in range(0, len(specs), MAX_QUERIES_PER_CALL):
        chunk = list(specs[offset : offset + MAX_QUERIES_PER_CALL])
        queries = [_query(offset + i, spec) for i, spec in enumerate(chunk)]
        by_id = {q["Id"]: spec.name for q, spec in zip(queries, chunk, strict=True)}
        points: dict[str, list[tuple[float, float]]] = {name: [] for name in by_id.values()}
        kwargs: dict[str, Any] = {
            "MetricDataQueries": queries,
            "StartTime": datetime.fromtimestamp(start, UTC),
            "EndTime": datetime.fromtimestamp(end, UTC),
            "ScanBy": "TimestampAscending",
        }
        try:
            while True:
                page = client.get_metric_data(**kwargs)
                for result in page.get("MetricDataResults", []):
                    name = by_id[result["Id"]]
                    stamps = [ts.timestamp() for ts in result.get("Timestamps", [])]
                    points[name].extend(zip(stamps, result.get("Values", []), strict=True))
                if not page.get("NextToken"):
                    break
                kwargs["NextToken"] = page["NextToken"]
        except Exception as exc:
            if is_transient(exc):
                raise
            for name in points:
                found[name].error = f"CloudWatch GetMetricData failed: {exc}"
            continue
        for name, pairs in points.items():
            pairs.sort()
            found[name].timestamps = [t for t, _ in pairs]
            found[name].values = [float(v) for _, v in pairs]
            if not pairs:
                found[name].error = "CloudWatch returned no data points for this metric and dimensions"
    return [found[spec.name] for spec in specs]


@io_task(task_run_name="cloudwatch-fetch-{count}-series")
def cloudwatch_fetch(
    settings: Settings, specs: list[SeriesSettings], start: float, end: float, count: int
) -> list[SeriesData]:
    return fetch_cloudwatch_series(cloudwatch_client(settings), specs, start, end)
