"""A wrong endpoint in any duty ends "could not check", exit 2, with one line naming the environment
variable that points at it (issue 12, section 5), through the real CLI against the sandbox.

Each duty gets one setting pointed at a closed port on loopback; `SCALEOPS_RETRIES=0` makes the retry
budget none, so each case takes the time of a run. preflight is the one duty whose finding a system
that does not answer *is*: it exits 1 naming the setting (tests/integration/preflight/test_preflight.py).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from scaleops.core.duties import all_duties
from scaleops.sandbox.procs import free_port

pytestmark = pytest.mark.integration


def dead(scheme: str) -> str:
    return f"{scheme}://127.0.0.1:{free_port()}"


# duty -> (the setting pointed at nothing, its value, what the message says it is)
CASES = {
    "backup-verification": ("SCALEOPS_S3__ENDPOINT_URL", lambda: dead("http"), "http://127.0.0.1:"),
    "cache-warming": ("SCALEOPS_REDIS__URL", lambda: dead("redis") + "/0", "redis://127.0.0.1:"),
    "l2-batch-posting": ("SCALEOPS_CHAINS__OPTIMISM__RPC_URL", lambda: dead("http"), "http://127.0.0.1:"),
    "capacity-forecast": ("SCALEOPS_CAPACITY__PROMETHEUS_URL", lambda: dead("http"), "http://127.0.0.1:"),
    "cost-cleanup": ("SCALEOPS_COST__AWS_ENDPOINT_URL", lambda: dead("http"), "http://127.0.0.1:"),
    # with nothing queued it never asks the gateway; the ledger lives in PostgreSQL
    "arweave-archival": (
        "SCALEOPS_POSTGRES__DSN",
        lambda: dead("postgresql") + "/postgres",
        "postgresql://127.0.0.1:",
    ),
}


def test_every_duty_but_preflight_has_a_case() -> None:
    assert set(CASES) == set(all_duties()) - {"preflight"}


@pytest.mark.parametrize("duty", sorted(CASES))
def test_a_dead_endpoint_is_could_not_check_naming_the_variable(
    sandbox_env: dict[str, str], duty: str
) -> None:
    variable, value, shown = CASES[duty]
    url = value()
    env = {**os.environ, **sandbox_env, variable: url, "SCALEOPS_RETRIES": "0"}
    result = subprocess.run(
        [sys.executable, "-m", "scaleops.cli", "run", duty, "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 2, result.stderr[-2000:]
    report = json.loads(result.stdout)
    port = url.rsplit(":", 1)[1].split("/")[0]
    wanted = f"{variable}: connection refused at {shown}{port}"
    assert report["failed_steps"], report
    assert all(wanted in step for step in report["failed_steps"]), report["failed_steps"]
    assert not report["problems"], report["problems"]  # not "problems found": nothing was judged
    assert "could not check: " in result.stderr and wanted in result.stderr
