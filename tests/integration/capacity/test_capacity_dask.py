"""capacity-forecast with its fits on a Dask cluster (SCALEOPS_CAPACITY__DASK_ADDRESS): the flow runs
against the sandbox's Prefect server, the series are fitted by the workers of a local Dask cluster."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from flows.capacity_forecast import capacity_forecast

pytestmark = pytest.mark.integration
FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"


@pytest.fixture
def dask_client() -> Iterator[Any]:
    from distributed import Client, LocalCluster

    with (
        LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=None) as cluster,
        Client(cluster) as client,
    ):
        yield client


def test_flow_fits_its_series_on_a_local_dask_cluster(
    sandbox_env: dict[str, str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path, dask_client: Any
) -> None:
    from distributed import get_task_stream

    now = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    taxi = pd.read_csv(FIXTURES / "nyc_taxi_16days.csv", parse_dates=["timestamp"])
    taxi["timestamp"] = taxi["timestamp"] + (pd.Timestamp(now).tz_localize(None) - taxi["timestamp"].iloc[-1])
    series = []
    for i in range(3):
        path = tmp_path / f"taxi-{i}.csv"
        shifted = taxi.assign(value=taxi["value"] * (1 + i / 10))
        shifted.to_csv(path, index=False)
        series.append({"name": f"taxi-{i}", "source": "csv", "path": str(path), "threshold": 1e6})
    monkeypatch.setenv("SCALEOPS_CAPACITY__SERIES", json.dumps(series))
    monkeypatch.setenv("SCALEOPS_CAPACITY__DASK_ADDRESS", dask_client.scheduler.address)
    with get_task_stream(dask_client) as stream:
        report = capacity_forecast(horizon="1d", charts=False)
    assert [s.status for s in report.series] == ["ok", "ok", "ok"], report.series
    assert all(s.model and s.why for s in report.series)
    fitted = [t for t in stream.data if t["key"].startswith("_forecast_job")]
    assert len(fitted) == 3  # every series was fitted by the cluster's worker
