"""The cases of tests/unit/cli/test_bad_input.py's table that need the sandbox's Prefect server (with the
project's deployments): bad `backfill --param`s exit 2 before any flow run is created."""

from __future__ import annotations

import os

import httpx
import pytest

from tests.e2e.test_operations import deploy_all
from tests.unit.cli.test_bad_input import CASES, Case, run_case

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def deployed(sandbox_env: dict[str, str]) -> dict[str, str]:
    result = deploy_all(sandbox_env["PREFECT_API_URL"])
    assert result.returncode == 0, result.stdout + result.stderr
    return sandbox_env


def backfill_params(api: str, deployment: str) -> list[dict[str, object]]:
    """The parameters of every backfill run of `deployment` (others use the shared server too)."""
    body = {
        "deployments": {"name": {"any_": [deployment]}},
        "flow_runs": {"tags": {"all_": ["backfill"]}},
        "limit": 200,
        "sort": "EXPECTED_START_TIME_DESC",
    }
    return [r["parameters"] for r in httpx.post(f"{api}/flow_runs/filter", json=body, timeout=10).json()]


@pytest.mark.parametrize("case", [c for c in CASES if c.service == "prefect"], ids=lambda c: c.name)
def test_bad_input_exits_2_naming_it(case: Case, deployed: dict[str, str]) -> None:
    run_case(case, dict(os.environ))
    deployment, bad = case.args[1], case.names.removeprefix("--param ")
    # no run was created with the bad parameter (the worker would have crashed every one)
    assert not [p for p in backfill_params(deployed["PREFECT_API_URL"], deployment) if bad in p]
