"""capacity-forecast sources without the sandbox: CloudWatch against moto (in process), the
`scaleops forecast` command on good and malformed CSV files."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import boto3
import pandas as pd
import pytest
from moto import mock_aws
from typer.testing import CliRunner

from scaleops.cli.app import app
from scaleops.core.settings import SeriesSettings
from tasks.capacity.sources.cloudwatch import fetch_cloudwatch_series

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")


def test_cloudwatch_series_are_fetched_in_one_batch_ascending(aws_env: None) -> None:
    end = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    start = end - timedelta(hours=48)
    with mock_aws():
        client = boto3.client("cloudwatch", region_name="us-east-1")
        for hour in range(48):
            stamp = start + timedelta(hours=hour, minutes=10)
            client.put_metric_data(
                Namespace="AWS/RDS",
                MetricData=[
                    {
                        "MetricName": "FreeStorageSpace",
                        "Dimensions": [{"Name": "DBInstanceIdentifier", "Value": "db-1"}],
                        "Timestamp": stamp,
                        "Value": 1000.0 - hour,
                    }
                ],
            )
        specs = [
            SeriesSettings(
                name="rds-free-db-1",
                source="cloudwatch",
                namespace="AWS/RDS",
                metric="FreeStorageSpace",
                dimensions={"DBInstanceIdentifier": "db-1"},
                step="1h",
                threshold=100,
            ),
            SeriesSettings(
                name="missing",
                source="cloudwatch",
                namespace="AWS/RDS",
                metric="Nope",
                step="1h",
                threshold=1,
            ),
        ]
        found = fetch_cloudwatch_series(client, specs, start.timestamp(), end.timestamp() + 3600)
    first, missing = found
    assert first.name == "rds-free-db-1" and first.error is None
    assert first.step_seconds == 3600
    assert len(first.values) == 48
    assert first.timestamps == sorted(first.timestamps)
    assert first.values[0] == 1000.0 and first.values[-1] == 953.0
    assert missing.error and "no data points" in missing.error


def test_forecast_command_writes_the_forecast(tmp_path: Path) -> None:
    out = tmp_path / "out.csv"
    result = CliRunner().invoke(
        app,
        [
            "forecast",
            "--input",
            str(FIXTURES / "nyc_taxi_16days.csv"),
            "--horizon",
            "1d",
            "--output",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "model: " in result.output and "cv_mase: " in result.output
    frame = pd.read_csv(out)
    assert list(frame.columns) == ["timestamp", "mean", "lo_80", "hi_80", "lo_95", "hi_95"]
    assert len(frame) == 48  # one day of 30-minute steps
    assert frame["timestamp"].iloc[0] == "2014-07-17T00:00:00Z"
    assert (frame["lo_95"] <= frame["lo_80"]).all() and (frame["hi_80"] <= frame["hi_95"]).all()


def test_forecast_command_threshold_and_steps(tmp_path: Path) -> None:
    out = tmp_path / "out.csv"
    result = CliRunner().invoke(
        app,
        [
            "forecast",
            "--input",
            str(FIXTURES / "nyc_taxi_16days.csv"),
            "--horizon",
            "12",
            "--output",
            str(out),
            "--threshold",
            "1",
        ],
    )
    assert result.exit_code == 1, result.output  # crossed: the taxi count is far above 1
    assert "breach_at: 2014-07-17T00:00:00+00:00" in result.output
    assert len(pd.read_csv(out)) == 12


def test_forecast_command_malformed_file_exits_2_naming_line_and_column(tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("timestamp,value\n2024-01-01T00:00:00Z,1.5\n2024-01-01T01:00:00Z,n/a\n")
    result = CliRunner().invoke(
        app, ["forecast", "--input", str(bad), "--horizon", "6h", "--output", str(tmp_path / "o.csv")]
    )
    assert result.exit_code == 2
    assert "line 3, column 'value'" in result.output
    assert not (tmp_path / "o.csv").exists()


def test_forecast_command_bad_horizon_and_invalid_series_exit_2(tmp_path: Path) -> None:
    out = tmp_path / "o.csv"
    fixture = str(FIXTURES / "nyc_taxi_16days.csv")
    result = CliRunner().invoke(
        app, ["forecast", "--input", fixture, "--horizon", "soon", "--output", str(out)]
    )
    assert result.exit_code == 2 and "--horizon" in result.output
    short = tmp_path / "short.csv"
    short.write_text("timestamp,value\n" + "".join(f"2024-01-01T{h:02d}:00:00Z,{h}\n" for h in range(10)))
    result = CliRunner().invoke(
        app, ["forecast", "--input", str(short), "--horizon", "3", "--output", str(out)]
    )
    assert result.exit_code == 2 and "enough_history" in result.output


def test_forecast_command_exits_2_naming_a_series_it_cannot_forecast(tmp_path: Path) -> None:
    """One value of 1e308 makes statsforecast raise a bare Exception: exit 2 and a message, no traceback."""
    data = tmp_path / "extreme.csv"
    rows = [f"{1_700_000_000 + i * 3600},{10.0 + (i % 24) / 10}" for i in range(24 * 8)]
    rows[50] = f"{1_700_000_000 + 50 * 3600},1e308"
    data.write_text("timestamp,value\n" + "\n".join(rows) + "\n")
    result = CliRunner().invoke(
        app, ["forecast", "--input", str(data), "--horizon", "1d", "--output", str(tmp_path / "o.csv")]
    )
    assert result.exit_code == 2, result.output
    assert f"{data}: the series cannot be forecast" in result.stderr
    assert "Traceback" not in result.output
