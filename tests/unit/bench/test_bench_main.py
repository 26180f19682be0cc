"""`python -m bench`: names, then options for the named benchmark; the forecast bench's shipped data."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.__main__ import main, split_args


def test_options_after_the_names_go_to_the_benchmark() -> None:
    assert split_args(["forecast", "--data", "d", "--windows", "2"]) == (
        ["forecast"],
        ["--data", "d", "--windows", "2"],
    )
    assert split_args(["a", "b"]) == (["a", "b"], [])
    assert split_args([]) == ([], [])


def test_forecast_reads_its_data_option(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "nowhere"
    assert main(["forecast", "--data", str(missing)]) == 2  # forecast's own answer, not "unknown benchmark"
    err = capsys.readouterr().err
    assert f"no data at {missing}" in err
    assert "unknown benchmark" not in err


def test_options_without_a_name_and_unknown_names_are_refused(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--data", "x"]) == 2
    assert "need a benchmark name" in capsys.readouterr().err
    assert main(["nosuch", "--data", "x"]) == 2
    assert "unknown benchmark(s): nosuch" in capsys.readouterr().err


def test_forecast_data_ships_with_the_repository() -> None:
    from bench.forecast import SHIPPED_DATA, load_regular

    files = sorted(p.name for p in SHIPPED_DATA.glob("*.csv"))
    assert "ec2_request_latency_system_failure.csv" in files  # the file --cli times
    assert len(files) >= 3
    assert (SHIPPED_DATA / "LICENSE.txt").is_file()
    series, step, _ = load_regular(SHIPPED_DATA / "ec2_request_latency_system_failure.csv")
    assert len(series) > 4000 and step == 300
