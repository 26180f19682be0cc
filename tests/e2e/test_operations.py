"""Operations against real Prefect servers, a process worker, a real Alertmanager and the bridge:
deploy on a fresh server, alert -> run completed by the worker, repeats start nothing, auth and bad
payloads refused while the bridge stays up, and backfills that are idempotent."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from scaleops.core.settings import Settings
from scaleops.ops.zombies import AUTOMATION_NAME
from scaleops.sandbox.manager import Sandbox
from tests.e2e.alert_windows import close_alert_windows
from tests.polling import holds_for

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]
DEPLOYMENTS = [d["name"] for d in yaml.safe_load((ROOT / "prefect.yaml").read_text())["deployments"]]


def deploy_all(api_url: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PREFECT_API_URL": api_url}
    return subprocess.run(
        [sys.executable, "-m", "prefect", "--no-prompt", "deploy", "--all"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def wait_for(check: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.5)


@pytest.fixture(scope="module")
def fresh_sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sandbox]:
    sandbox = Sandbox(Settings(), tmp_path_factory.mktemp("fresh") / ".sandbox")
    sandbox.up(["prefect"])
    yield sandbox
    sandbox.down(purge=True)


@pytest.fixture(scope="module")
def fresh_prefect(fresh_sandbox: Sandbox) -> str:
    return fresh_sandbox.env()["PREFECT_API_URL"]


def test_deploy_all_on_a_fresh_server(fresh_prefect: str) -> None:
    result = deploy_all(fresh_prefect)
    assert result.returncode == 0, result.stdout + result.stderr
    found = httpx.post(f"{fresh_prefect}/deployments/filter", json={}, timeout=10).json()
    assert sorted(d["name"] for d in found) == sorted(DEPLOYMENTS)
    for dep in found:
        assert dep["work_pool_name"] == "scaleops"
        assert dep["schedules"] and all(s["schedule"]["timezone"] for s in dep["schedules"])
        assert dep["concurrency_options"]["collision_strategy"] == "ENQUEUE"
    automations = httpx.post(f"{fresh_prefect}/automations/filter", json={}, timeout=10).json()
    assert {a["name"] for a in automations} >= {
        AUTOMATION_NAME,  # prefect.yaml's build step: the zombie-run automation comes with every deploy
        "preflight on ScaleopsTargetDown",
        "backup-verification on BackupMissing|ReplicationLagHigh",
        "backup-verification when no verified backup for 26h",
    }


def test_worker_restarts_when_the_sandbox_it_points_at_changed(fresh_sandbox: Sandbox) -> None:
    worker = fresh_sandbox.service("worker")
    first = fresh_sandbox.up(["worker"])["worker"]
    assert first["healthy"] and not worker.outdated()
    assert fresh_sandbox.up(["worker"])["worker"]["pids"] == first["pids"]  # unchanged: left alone
    worker.env_fingerprint.write_text("the environment of an older sandbox")
    assert worker.outdated()
    again = fresh_sandbox.up(["worker"])["worker"]
    assert again["healthy"] and again["pids"] != first["pids"]


@pytest.fixture(scope="module")
def deployed(sandbox_env: dict[str, str]) -> dict[str, str]:
    result = deploy_all(sandbox_env["PREFECT_API_URL"])
    assert result.returncode == 0, result.stdout + result.stderr
    return sandbox_env


def deployment_id(api: str, name: str) -> str:
    found = httpx.post(
        f"{api}/deployments/filter", json={"deployments": {"name": {"any_": [name]}}}, timeout=10
    )
    return str(found.json()[0]["id"])


def runs_of(api: str, dep_id: str, **flow_run_filter: Any) -> list[dict[str, Any]]:
    body = {"deployments": {"id": {"any_": [dep_id]}}, "flow_runs": flow_run_filter, "limit": 200}
    return httpx.post(f"{api}/flow_runs/filter", json=body, timeout=10).json()


def triggered_runs(api: str, dep_id: str, starts: str) -> list[dict[str, Any]]:
    """Runs an automation started for the alert that started at `starts` (its `alert` parameter)."""
    wanted = datetime.fromisoformat(starts)
    return [
        r
        for r in runs_of(api, dep_id)
        if (r.get("created_by") or {}).get("type") == "AUTOMATION"
        and (r["parameters"].get("alert") or {}).get("startsAt")
        and datetime.fromisoformat(r["parameters"]["alert"]["startsAt"]) == wanted
    ]


def test_alertmanager_alert_starts_the_mapped_deployment(deployed: dict[str, str]) -> None:
    api, am = deployed["PREFECT_API_URL"], deployed["SCALEOPS_ALERTMANAGER__URL"]
    close_alert_windows(deployed, "preflight")  # an earlier preflight alert's window would attach this one
    starts = datetime.now(UTC).replace(microsecond=0).isoformat()
    alert = {
        "labels": {"alertname": "ScaleopsTargetDown", "severity": "critical", "instance": uuid.uuid4().hex},
        "annotations": {"summary": "e2e: a target is down"},
        "startsAt": starts,
    }
    assert httpx.post(f"{am}/api/v2/alerts", json=[alert], timeout=10).status_code == 200
    dep_id = deployment_id(api, "preflight")
    runs = wait_for(lambda: triggered_runs(api, dep_id, starts), 60, "the alert-triggered run")
    assert len(runs) == 1
    run_id = runs[0]["id"]

    def finished() -> dict[str, Any] | None:
        run = httpx.get(f"{api}/flow_runs/{run_id}", timeout=10).json()
        return run if run["state_type"] in ("COMPLETED", "FAILED", "CRASHED") else None

    run = wait_for(finished, 180, "the worker to finish the triggered run")
    assert run["state_type"] == "COMPLETED", run["state"]
    # an alert-started run works on now (no as_of from the alert) and records the alert as its context
    assert run["parameters"].get("as_of") is None
    assert run["parameters"]["alert"]["alertname"] == "ScaleopsTargetDown"
    body = {
        "filter": {
            "event": {"name": ["scaleops.preflight.passed", "scaleops.preflight.problems"]},
            "related": {"id": [f"prefect.flow-run.{run_id}"]},
        }
    }
    published = wait_for(
        lambda: httpx.post(f"{api}/events/filter", json=body, timeout=10).json()["events"], 30, "its event"
    )
    context = published[0]["payload"]["triggered_by"]
    assert (
        context["alertname"] == "ScaleopsTargetDown"
        and context["labels"]["instance"] == alert["labels"]["instance"]
    )
    assert context["startsAt"] and context["fingerprint"]


def test_a_repeated_alert_starts_no_second_run(deployed: dict[str, str]) -> None:
    api, bridge = deployed["PREFECT_API_URL"], deployed["SCALEOPS_ALERTS__URL"]
    auth = {"Authorization": f"Bearer {deployed['SCALEOPS_ALERTS__TOKEN']}"}
    close_alert_windows(deployed, "preflight")
    starts = datetime.now(UTC).replace(microsecond=0).isoformat()
    webhook = {
        "version": "4",
        "status": "firing",
        "receiver": "scaleops",
        "alerts": [
            {
                "status": "firing",
                "labels": {"alertname": "ScaleopsTargetDown", "instance": uuid.uuid4().hex},
                "startsAt": starts,
                "fingerprint": uuid.uuid4().hex[:16],
            }
        ],
    }
    first = httpx.post(f"{bridge}/alertmanager", json=webhook, headers=auth, timeout=10)
    assert first.status_code == 202
    dep_id = deployment_id(api, "preflight")
    wait_for(lambda: triggered_runs(api, dep_id, starts), 60, "the first run")
    second = httpx.post(f"{bridge}/alertmanager", json=webhook, headers=auth, timeout=10)
    assert second.status_code == 202 and second.json() == first.json()  # same event id
    # the first run appeared within 6 s; a second would too: watch for one that long, fail when it comes
    holds_for(lambda: len(triggered_runs(api, dep_id, starts)) == 1, 6, what="one triggered run, no second")


def test_bridge_refuses_bad_requests_and_stays_up(deployed: dict[str, str]) -> None:
    bridge = deployed["SCALEOPS_ALERTS__URL"]
    auth = {"Authorization": f"Bearer {deployed['SCALEOPS_ALERTS__TOKEN']}"}
    ok = {
        "version": "4",
        "status": "firing",
        "alerts": [
            {"status": "firing", "labels": {"alertname": "Unmapped"}, "startsAt": "2026-01-01T00:00:00Z"}
        ],
    }
    assert httpx.post(f"{bridge}/alertmanager", json=ok, timeout=10).status_code == 401
    assert (
        httpx.post(f"{bridge}/alertmanager", json=ok, headers={"Authorization": "Bearer x"}).status_code
        == 401
    )
    big = httpx.post(f"{bridge}/alertmanager", content=b"{" + b" " * (1024 * 1024 + 10) + b"}", headers=auth)
    assert big.status_code == 413
    rng = random.Random(7)
    for _ in range(40):
        junk = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 200)))
        assert httpx.post(f"{bridge}/grafana", content=junk, headers=auth, timeout=10).status_code == 400
    missing = httpx.post(f"{bridge}/alertmanager", json={"version": "4", "status": "firing"}, headers=auth)
    assert missing.status_code == 400 and "alerts" in missing.json()["error"]
    assert httpx.get(f"{bridge}/healthz", timeout=10).status_code == 200
    assert httpx.post(f"{bridge}/alertmanager", json=ok, headers=auth, timeout=10).status_code == 202
    metrics = httpx.get(f"{bridge}/metrics", timeout=10).text
    assert 'reason="unauthorized"' in metrics and 'reason="too_large"' in metrics


def backfill(env: dict[str, str], *args: str) -> dict[str, Any]:
    result = subprocess.run(
        [sys.executable, "-m", "scaleops.cli", "backfill", *args, "--yes", "--json"],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_three_day_backfill_is_idempotent(deployed: dict[str, str]) -> None:
    api = deployed["PREFECT_API_URL"]
    # a random past window, so reruns of the suite against a kept sandbox start from nothing
    first = date(2000, 1, 1) + timedelta(days=random.randrange(0, 9000))
    args = ["preflight", "--from", first.isoformat(), "--to", (first + timedelta(days=2)).isoformat()]
    planned = backfill(deployed, *args, "--dry-run")
    assert planned["to_create"] == 3 and all(p["action"] == "create" for p in planned["plan"])

    created = backfill(deployed, *args)
    assert created["created"] == 3 and created["backfill_id"] == planned["backfill_id"]
    tagged = httpx.post(
        f"{api}/flow_runs/filter",
        json={"flow_runs": {"tags": {"all_": [f"backfill:{created['backfill_id']}"]}}},
        timeout=10,
    ).json()
    as_of = sorted(datetime.fromisoformat(r["parameters"]["as_of"]) for r in tagged)
    expected = [
        datetime(first.year, first.month, first.day, tzinfo=UTC) + timedelta(days=i) for i in range(3)
    ]
    assert as_of == expected
    assert all("backfill" in r["tags"] for r in tagged)

    again = backfill(deployed, *args)
    assert again["to_create"] == 0
    assert "created" not in again
    count = httpx.post(
        f"{api}/flow_runs/count",
        json={"flow_runs": {"tags": {"all_": [f"backfill:{created['backfill_id']}"]}}},
        timeout=10,
    ).json()
    assert count == 3


def test_the_proactive_backup_trigger_fires(deployed: dict[str, str]) -> None:
    """The prefect.yaml trigger 'no scaleops.backup.verified for 26 h', with a 10 s window and a
    resource of its own: the server notices the silence and starts backup-verification."""
    api = deployed["PREFECT_API_URL"]
    (dep,) = [
        d
        for d in yaml.safe_load((ROOT / "prefect.yaml").read_text())["deployments"]
        if d["name"] == "backup-verification"
    ]
    (proactive,) = [t for t in dep["triggers"] if t.get("posture") == "Proactive"]
    assert proactive["expect"] == ["scaleops.backup.verified"] and proactive["within"] == 26 * 3600
    resource = f"scaleops.backup.e2e-{uuid.uuid4().hex[:8]}"
    trigger = {k: v for k, v in proactive.items() if k not in ("enabled", "parameters")}
    trigger.update(match={"prefect.resource.id": resource}, within=10)
    dep_id = deployment_id(api, "backup-verification")
    automation = httpx.post(
        f"{api}/automations/",
        json={
            "name": f"e2e-proactive-{resource}",
            "trigger": trigger,
            # the same action a deployment trigger has; a dry run that takes no backup keeps it light
            "actions": [
                {
                    "type": "run-deployment",
                    "source": "selected",
                    "deployment_id": dep_id,
                    "parameters": {"take_backup": False, "restore_test": False, "deep_sample": 0.0},
                }
            ],
        },
        timeout=10,
    )
    assert automation.status_code == 201, automation.text
    automation_id = automation.json()["id"]
    try:

        def fired() -> list[dict[str, Any]]:
            body = {
                "filter": {
                    "event": {"name": ["prefect.automation.triggered"]},
                    "resource": {"id": [f"prefect.automation.{automation_id}"]},
                    "occurred": {"since": "2020-01-01T00:00:00Z"},
                }
            }
            return httpx.post(f"{api}/events/filter", json=body, timeout=10).json()["events"]

        wait_for(fired, 90, "the proactive trigger to fire")

        def started() -> list[dict[str, Any]]:
            return [r for r in runs_of(api, dep_id) if (r.get("created_by") or {}).get("id") == automation_id]

        (run,) = wait_for(started, 60, "the run the trigger starts")
        assert run["parameters"]["take_backup"] is False
    finally:
        httpx.delete(f"{api}/automations/{automation_id}", timeout=10)
