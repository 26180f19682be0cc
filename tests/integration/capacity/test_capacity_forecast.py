"""capacity-forecast against the sandbox: the Prometheus path (history loaded by promtool), PostgreSQL
and CSV sources beside a failing series, the artifacts and the breach-forecast event."""

from __future__ import annotations

import json
import shutil
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import psycopg
import pytest

from flows.capacity_forecast import capacity_forecast
from scaleops.core.reporting import PROBLEMS_FOUND, artifact_key, report_of
from scaleops.core.settings import load_settings
from tasks.capacity.models import MODELS, is_seasonal
from tasks.capacity.sources.prometheus import fetch_prometheus_series

pytestmark = pytest.mark.integration
FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"


def prefect_api(env: dict[str, str]) -> str:
    return env["PREFECT_API_URL"].rstrip("/")


def find_events(env: dict[str, str], name: str, resource_id: str, since: datetime) -> list[dict[str, Any]]:
    body = {
        "filter": {
            "occurred": {"since": since.isoformat()},
            "event": {"name": [name]},
            "resource": {"id": [resource_id]},
        },
        "limit": 10,
    }
    deadline = time.monotonic() + 20
    while True:
        response = httpx.post(f"{prefect_api(env)}/events/filter", json=body, timeout=10)
        response.raise_for_status()
        events = response.json().get("events", [])
        if events or time.monotonic() > deadline:
            return list(events)
        time.sleep(0.5)


def test_prometheus_history_is_served(sandbox_env: dict[str, str]) -> None:
    settings = load_settings()
    spec = next(s for s in settings.capacity.series if s.name == "disk-db-1")
    end = time.time()
    with httpx.Client(base_url=sandbox_env["SCALEOPS_CAPACITY__PROMETHEUS_URL"], timeout=30) as client:
        (data,) = fetch_prometheus_series(client, [spec], end - 28 * 86400, end)
    assert data.error is None
    assert data.step_seconds == 3600
    assert 600 <= len(data.values) <= 673  # 28 days of hours, less a scrape gap
    assert data.timestamps[-1] <= end and end - data.timestamps[-1] < 2 * 3600
    assert data.values[-1] > data.values[0] + 80  # the disk grows ~4 GB a day


def test_flow_forecasts_sandbox_prometheus_and_warns_of_the_disk(sandbox_env: dict[str, str]) -> None:
    since = datetime.now(UTC) - timedelta(seconds=5)
    report = capacity_forecast(series=["disk-db-1", "memory-cache-1"])
    by_name = {s.name: s for s in report.series}
    disk, memory = by_name["disk-db-1"], by_name["memory-cache-1"]
    assert disk.status == "breach-within-lead-time", disk
    assert disk.model and all(part in MODELS for part in disk.model.split("+"))  # a candidate or two's mean
    assert disk.why and disk.why.startswith(disk.model) and "naive" in disk.why  # beside the baselines
    assert disk.repairs["points_filled"] >= 1  # the generated scrape gap
    assert disk.breach_at_upper is not None and disk.breach_at is not None
    assert disk.breach_at_upper <= disk.breach_at
    # ~750 GB now, +4 GB a day: 800 GB is about 12 days away
    assert timedelta(days=5) < disk.breach_at - report.as_of < timedelta(days=20)
    assert disk.recommended_units and disk.recommended_units >= 1
    assert disk.monthly_cost == disk.recommended_units * 8.0
    assert any("interpolated" in note for note in disk.notes)  # the generated scrape gap
    assert disk.event_emitted
    assert memory.status == "ok" and memory.breach_at is None and not memory.event_emitted
    assert report.ok and report.status == "warnings"  # a breach weeks ahead is a warning: Completed
    assert any(w.startswith("disk-db-1: may cross 800") for w in report.warnings) and not report.problems

    events = find_events(sandbox_env, "scaleops.capacity.breach-forecast", "disk-db-1", since)
    assert events and events[0]["payload"]["name"] == "disk-db-1"
    assert events[0]["payload"]["breach_at_upper"]
    response = httpx.get(
        f"{prefect_api(sandbox_env)}/artifacts/{artifact_key('capacity-forecast')}/latest", timeout=10
    )
    response.raise_for_status()
    markdown = response.json()["data"]
    assert "## disk-db-1 (prometheus): breach-within-lead-time" in markdown
    assert markdown.count("data:image/png;base64,") == 2
    table = httpx.get(
        f"{prefect_api(sandbox_env)}/artifacts/{artifact_key('capacity-forecast', 'table')}/latest",
        timeout=10,
    ).json()["data"]
    rows = json.loads(table) if isinstance(table, str) else table
    assert {r["series"] for r in rows} == {"disk-db-1", "memory-cache-1"}


def test_postgres_and_csv_sources_beside_a_failing_series(
    sandbox_env: dict[str, str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    now = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    hours = 24 * 8
    rng = np.random.default_rng(11)
    with psycopg.connect(sandbox_env["SCALEOPS_POSTGRES__DSN"], autocommit=True) as conn:
        conn.execute("drop table if exists capacity_test_connections")
        conn.execute("create table capacity_test_connections (ts timestamptz primary key, value float8)")
        with conn.cursor() as cur:
            cur.executemany(
                "insert into capacity_test_connections values (%s, %s)",
                [
                    (
                        now - timedelta(hours=hours - 1 - i),
                        40 + 0.05 * i + 5 * np.sin(i / 24 * 2 * np.pi) + rng.normal(),
                    )
                    for i in range(hours)
                ],
            )
    # the CSV source: the NAB taxi fixture, shifted so that it ends now (it ends in 2014)
    taxi = pd.read_csv(FIXTURES / "nyc_taxi_16days.csv", parse_dates=["timestamp"])
    taxi["timestamp"] = taxi["timestamp"] + (pd.Timestamp(now).tz_localize(None) - taxi["timestamp"].iloc[-1])
    fresh = tmp_path / "taxi.csv"
    taxi.to_csv(fresh, index=False)
    stale = tmp_path / "taxi-2014.csv"
    shutil.copy(FIXTURES / "nyc_taxi_16days.csv", stale)
    series = [
        {
            "name": "pg-connections",
            "source": "postgres",
            "query": "select ts, value from capacity_test_connections where ts between %(start)s and %(end)s "
            "order by ts",
            "threshold": 90,
            "bounds": [0, 100],
        },
        {"name": "taxi", "source": "csv", "path": str(fresh), "threshold": 50000},
        {"name": "taxi-2014", "source": "csv", "path": str(stale), "threshold": 50000},
        {"name": "bad-query", "source": "prometheus", "query": "sum(", "threshold": 1},
    ]
    monkeypatch.setenv("SCALEOPS_CAPACITY__SERIES", json.dumps(series))
    state = capacity_forecast(horizon="3d", charts=False, return_state=True)
    assert state.is_failed() and state.name == PROBLEMS_FOUND  # two series could not be forecast
    report = report_of(state)
    assert report is not None
    by_name = {s.name: s for s in report.series}
    assert by_name["pg-connections"].status == "ok", by_name["pg-connections"]
    assert by_name["pg-connections"].points == hours
    assert by_name["taxi"].status == "ok" and by_name["taxi"].step_seconds == 1800, by_name["taxi"]
    assert is_seasonal(by_name["taxi"].model or "")  # strong daily cycle
    # a CSV that ends in 2014 holds nothing in the last 28 days: not enough history, not forecast
    assert by_name["taxi-2014"].status == "invalid"
    assert any(f.startswith("enough_history") for f in by_name["taxi-2014"].failures)
    assert by_name["bad-query"].status == "fetch-failed"
    assert "Prometheus rejected the query" in by_name["bad-query"].failures[0]
    assert not report.ok and len(report.problems) == 2


def test_cloudwatch_series_through_the_flow_on_moto(
    sandbox_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The flow's CloudWatch path (client from settings, batch task) against moto in this process."""
    import boto3
    from moto import mock_aws

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    end = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    hours = 24 * 6
    series = [
        {
            "name": "rds-cpu-db-1",
            "source": "cloudwatch",
            "namespace": "AWS/RDS",
            "metric": "CPUUtilization",
            "dimensions": {"DBInstanceIdentifier": "db-1"},
            "step": "1h",
            "threshold": 60,
            "unit": "%",
            "bounds": [0, 100],
            "capacity_per_unit": 20,
            "unit_cost_per_month": 150,
        }
    ]
    monkeypatch.setenv("SCALEOPS_CAPACITY__SERIES", json.dumps(series))
    with mock_aws():
        client = boto3.client("cloudwatch", region_name="us-east-1")
        data = [
            {
                "MetricName": "CPUUtilization",
                "Dimensions": [{"Name": "DBInstanceIdentifier", "Value": "db-1"}],
                "Timestamp": end - timedelta(hours=hours - i) + timedelta(minutes=5),
                "Value": 30 + 0.2 * i + 5 * float(np.sin(i / 24 * 2 * np.pi)),
            }
            for i in range(hours)
        ]
        for chunk in range(0, hours, 20):
            client.put_metric_data(Namespace="AWS/RDS", MetricData=data[chunk : chunk + 20])
        report = capacity_forecast(horizon="7d", charts=False)
    (result,) = report.series
    assert result.status == "breach-within-lead-time", result.failures
    assert result.points == hours
    # ~58% now, +4.8 points a day: 60% within the next day or two
    assert result.breach_at_upper is not None and result.breach_at_upper - report.as_of < timedelta(days=3)
    assert result.recommended_units and result.monthly_cost == result.recommended_units * 150
