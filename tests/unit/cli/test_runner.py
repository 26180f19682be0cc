"""`scaleops run`: parameter parsing and the 2-for-bad-input contract, without services."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from scaleops.cli.app import app
from scaleops.cli.runner import BadInput, check_params, parse_params
from scaleops.core.duties import all_duties, get_duty


def test_parse_params_reads_json_values() -> None:
    assert parse_params(["limit=10", "dry_run=false", "name=abc", "xs=[1,2]", "empty="]) == {
        "limit": 10,
        "dry_run": False,
        "name": "abc",
        "xs": [1, 2],
        "empty": "",
    }


@pytest.mark.parametrize("pair", ["novalue", "=3"])
def test_parse_params_rejects_malformed(pair: str) -> None:
    with pytest.raises(BadInput, match="key=value"):
        parse_params([pair])


def test_every_registered_duty_loads_a_flow() -> None:
    for duty in all_duties().values():
        flow = duty.load()
        assert flow.name == duty.name


def test_unknown_and_mistyped_parameters_are_named() -> None:
    flow = get_duty("preflight").load()
    with pytest.raises(BadInput, match="unknown parameter.*nonsense"):
        check_params(flow, "preflight", {"nonsense": 1})
    with pytest.raises(BadInput, match="systems"):
        check_params(flow, "preflight", {"systems": ["not_a_system"]})
    check_params(flow, "preflight", {"systems": ["redis_standalone"]})


def test_cli_exit_2_for_bad_input() -> None:
    runner = CliRunner()
    unknown = runner.invoke(app, ["run", "no-such-duty"])
    assert unknown.exit_code == 2
    assert "unknown duty" in unknown.stderr
    bad = runner.invoke(app, ["run", "preflight", "--param", "bogus=1"])
    assert bad.exit_code == 2
    assert "bogus" in bad.stderr


def test_help_lists_commands() -> None:
    result = CliRunner().invoke(app, ["--help"])
    assert result.exit_code == 0
    for command in ("config", "sandbox", "run", "duties", "demo"):
        assert command in result.stdout
