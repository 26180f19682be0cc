"""`scaleops demo` runs every duty through its deployment on the sandbox's Prefect server (issue 12,
section 4): each demo run belongs to its deployment (the deployment's page in the UI lists it), was run
by the sandbox's worker, and ended in a final state the demo's summary reports."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime

import httpx
import pytest

from scaleops.core.duties import all_duties

pytestmark = pytest.mark.e2e


@pytest.mark.timeout(1500)  # the sandbox, a deploy and seven runs on 2 shared cores
def test_the_demo_runs_each_duty_through_its_deployment(sandbox_env: dict[str, str]) -> None:
    api = sandbox_env["PREFECT_API_URL"]
    since = datetime.now(UTC).isoformat()
    result = subprocess.run(
        [sys.executable, "-m", "scaleops.cli", "demo", "--timeout", "600"],
        env={**os.environ, **sandbox_env},
        capture_output=True,
        text=True,
        timeout=1500,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    deployments = {
        d["name"]: d["id"] for d in httpx.post(f"{api}/deployments/filter", json={}, timeout=10).json()
    }
    body = {
        "flow_runs": {"tags": {"all_": ["demo"]}, "expected_start_time": {"after_": since}},
        "limit": 200,
    }
    runs = httpx.post(f"{api}/flow_runs/filter", json=body, timeout=10).json()
    by_deployment = {r["deployment_id"]: r for r in runs}
    for duty in all_duties():
        run = by_deployment.get(deployments[duty])
        assert run is not None, f"{duty}: no demo run of deployment {duty} ({len(runs)} demo runs found)"
        assert run["work_queue_name"] and run["state"]["type"] in ("COMPLETED", "FAILED"), run["state"]
        assert run["start_time"], f"{duty}: the worker never started it"
    assert all(r["deployment_id"] for r in runs)  # none unattached (another demo may run meanwhile)
    for duty in all_duties():  # the summary names every duty
        assert duty in result.stdout
