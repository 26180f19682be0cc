"""A worker killed mid-run (issue 18.4), on a Prefect server of the test's own: `prefect deploy` creates the
zombie-run automation (prefect.yaml's build step), a process worker runs a flow that sends heartbeats,
the worker and its flow-run process are SIGKILLed, the server marks the orphaned run Crashed, and
`scaleops backfill --reprocess failed` runs its partition again.

The server is a private one because the test deploys the automation with a 60 s window (at
PREFECT_FLOWS_HEARTBEAT_FREQUENCY=30, Prefect's shortest): on the shared server that window would
crash other engineers' runs, whose heartbeats come every 180 s."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from scaleops.core.settings import Settings
from scaleops.ops.zombies import AUTOMATION_NAME
from scaleops.sandbox.manager import Sandbox
from tests.polling import wait_until

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]
WITHIN = 60  # the automation's window: two heartbeats at the 30 s below
HEARTBEAT = 30
POOL = DEPLOYMENT = "zombie-e2e"
PARTITION = "2026-11-01"

FLOW = '''
import time

from prefect import flow


@flow(name="zombie-e2e")
def sleeper(as_of: str | None = None) -> None:
    """Sleeps long enough for its worker to be killed under it.

    Args:
        as_of: the partition (set by the backfill).
    """
    time.sleep(900)
'''

PREFECT_YAML = f"""
name: zombie-e2e
prefect-version: 3.9.1
build:
  - scaleops.ops.zombies.deploy_step:
      within_seconds: {WITHIN}
deployments:
  - name: {DEPLOYMENT}
    entrypoint: sleeper.py:sleeper
    parameters: {{}}
    work_pool:
      name: {POOL}
      work_queue_name: default
"""


@pytest.fixture(scope="module")
def prefect_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    sandbox = Sandbox(Settings(), tmp_path_factory.mktemp("zombies") / ".sandbox")
    try:
        sandbox.up(["prefect"])
        yield sandbox.env()["PREFECT_API_URL"]
    finally:
        sandbox.down(purge=True)


def cli_env(api: str) -> dict[str, str]:
    keep = {k: v for k, v in os.environ.items() if not k.startswith(("SCALEOPS_", "PREFECT_"))}
    return {**keep, "PREFECT_API_URL": api, "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}


def run(args: list[str], api: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=cwd, env=cli_env(api), capture_output=True, text=True, timeout=300)


def descendants(pid: int) -> list[int]:
    """Every process below `pid` (read from /proc, children before the walk goes on)."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    found, frontier = [], [pid]
    while frontier:
        children = [p for p, parent in parents.items() if parent in frontier]
        found += children
        frontier = children
    return found


def kill_tree(process: subprocess.Popen[Any]) -> None:
    """SIGKILL a process this test started and every process below it: no handler runs, nothing is told."""
    for pid in [*descendants(process.pid), process.pid]:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    process.wait(timeout=30)


def runs(api: str) -> list[dict[str, Any]]:
    body = {"deployments": {"name": {"any_": [DEPLOYMENT]}}, "sort": "EXPECTED_START_TIME_ASC"}
    return list(httpx.post(f"{api}/flow_runs/filter", json=body, timeout=10).json())


def heartbeats(api: str, run_id: str) -> int:
    body = {
        "filter": {
            "event": {"name": ["prefect.flow-run.heartbeat"]},
            "resource": {"id": [f"prefect.flow-run.{run_id}"]},
            "occurred": {"since": (datetime.now(UTC) - timedelta(hours=1)).isoformat()},
        },
        "limit": 50,
    }
    return len(httpx.post(f"{api}/events/filter", json=body, timeout=10).json()["events"])


def backfill(api: str, *extra: str) -> dict[str, Any]:
    args = ["backfill", DEPLOYMENT, "--from", PARTITION, "--to", PARTITION, "--yes", "--json", *extra]
    result = run([sys.executable, "-m", "scaleops.cli", *args], api)
    assert result.returncode == 0, result.stdout + result.stderr
    return dict(json.loads(result.stdout))


def test_a_run_whose_worker_is_killed_is_crashed_and_reprocessed(prefect_api: str, tmp_path: Path) -> None:
    api = prefect_api
    (tmp_path / "sleeper.py").write_text(FLOW)
    (tmp_path / "prefect.yaml").write_text(PREFECT_YAML)
    pool = run([sys.executable, "-m", "prefect", "work-pool", "create", POOL, "--type", "process"], api)
    assert pool.returncode == 0, pool.stdout + pool.stderr
    deployed = run([sys.executable, "-m", "prefect", "--no-prompt", "deploy", "--all"], api, cwd=tmp_path)
    assert deployed.returncode == 0, deployed.stdout + deployed.stderr

    # the deploy created the automation, with the build step's window
    automations = httpx.post(f"{api}/automations/filter", json={}, timeout=10).json()
    (zombie,) = [a for a in automations if a["name"] == AUTOMATION_NAME]
    assert zombie["enabled"] and zombie["trigger"]["within"] == WITHIN
    assert zombie["actions"] == [
        {**zombie["actions"][0], "type": "change-flow-run-state", "state": "CRASHED"}
    ]

    created = backfill(api)
    assert created["created"] == 1
    log = (tmp_path / "worker.log").open("w")
    worker = subprocess.Popen(
        [sys.executable, "-m", "prefect", "worker", "start", "--pool", POOL, "--type", "process"],
        cwd=tmp_path,
        env={**cli_env(api), "PREFECT_FLOWS_HEARTBEAT_FREQUENCY": str(HEARTBEAT)},
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        (first,) = runs(api)
        wait_until(
            lambda: runs(api)[0]["state_type"] == "RUNNING",
            120,
            interval=1,
            what="the worker to start the run",
        )
        wait_until(lambda: heartbeats(api, first["id"]), 60, interval=1, what="the run's first heartbeat")
        # the worker's machine dies: the worker and the flow-run process under it, without a word
        kill_tree(worker)
        killed_at = time.monotonic()

        def state() -> str:
            return str(httpx.get(f"{api}/flow_runs/{first['id']}", timeout=10).json()["state_type"])

        assert state() == "RUNNING"  # nothing else would ever end it
        wait_until(lambda: state() == "CRASHED", WITHIN + 90, interval=2, what="the automation to crash it")
        assert time.monotonic() - killed_at < WITHIN + 90
        message = httpx.get(f"{api}/flow_runs/{first['id']}", timeout=10).json()["state"]["message"]
        assert "no heartbeat" in message

        # a plain backfill leaves the crashed partition alone; --reprocess failed runs it again
        assert backfill(api)["to_create"] == 0
        again = backfill(api, "--reprocess", "failed")
        assert again["created"] == 1
        newest = [r for r in runs(api) if r["id"] != first["id"]]
        assert [r["parameters"]["as_of"][:10] for r in newest] == [PARTITION]
    finally:
        if worker.poll() is None:
            kill_tree(worker)
        log.close()
