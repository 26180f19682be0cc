"""Alerts against the sandbox's real bridge, Prefect server and worker: an alert storm (three
ReplicationLagHigh for three instances plus one BackupMissing) starts one backup-verification run whose
report names every alert; the alert's `database` label arrives as the run's `first` parameter; a
resolved alert starts nothing; alerts after the storm's run reported start one follow-up run."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.alert_windows import close_alert_windows
from tests.e2e.test_operations import deploy_all, deployment_id, runs_of, wait_for
from tests.polling import holds_for

pytestmark = pytest.mark.e2e
TERMINAL = ("COMPLETED", "FAILED", "CRASHED", "CANCELLED")


@pytest.fixture(scope="module")
def deployed(sandbox_env: dict[str, str]) -> dict[str, str]:
    result = deploy_all(sandbox_env["PREFECT_API_URL"])
    assert result.returncode == 0, result.stdout + result.stderr
    return sandbox_env


@pytest.fixture(scope="module")
def this_bridge(deployed: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A second bridge replica running this checkout's code (the sandbox's may have started before it),
    with the sandbox's settings: same PostgreSQL, so it shares the sandbox bridge's windows."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    log = tmp_path_factory.mktemp("bridge") / "bridge.log"
    command = [
        sys.executable,
        "-m",
        "scaleops.cli",
        "alerts",
        "serve",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]
    root = Path(__file__).resolve().parents[2]
    with log.open("wb") as out:
        process = subprocess.Popen(command, cwd=root, env={**os.environ, **deployed}, stdout=out, stderr=out)
    url = f"http://127.0.0.1:{port}"

    def healthy() -> bool:
        assert process.poll() is None, log.read_text()
        try:
            return httpx.get(f"{url}/healthz", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_for(healthy, 60, "this checkout's bridge")
        yield url
    finally:
        process.terminate()
        process.wait(timeout=20)


def post(env: dict[str, str], *alerts: dict[str, Any], bridge: str | None = None) -> None:
    status = alerts[0]["status"]
    webhook = {"version": "4", "status": status, "receiver": "scaleops", "alerts": list(alerts)}
    auth = {"Authorization": f"Bearer {env['SCALEOPS_ALERTS__TOKEN']}"}
    url = bridge or env["SCALEOPS_ALERTS__URL"]
    answer = httpx.post(f"{url}/alertmanager", json=webhook, headers=auth, timeout=10)
    assert answer.status_code == 202, answer.text


def alert(name: str, status: str = "firing", **labels: str) -> dict[str, Any]:
    return {
        "status": status,
        "labels": {"alertname": name, **labels},
        "annotations": {"summary": f"e2e storm: {name}"},
        "startsAt": datetime.now(UTC).replace(microsecond=0).isoformat(),
        "fingerprint": uuid.uuid4().hex[:16],
    }


def started_by(api: str, dep_id: str, fingerprints: set[str]) -> list[dict[str, Any]]:
    """Runs an automation started for any of these alerts (their `alert` parameter)."""
    return [
        r
        for r in runs_of(api, dep_id)
        if (r.get("created_by") or {}).get("type") == "AUTOMATION"
        and (r["parameters"].get("alert") or {}).get("fingerprint") in fingerprints
    ]


def events(api: str, body: dict[str, Any]) -> list[dict[str, Any]]:
    body = {"filter": {"occurred": {"since": "2020-01-01T00:00:00Z"}, **body}, "limit": 50}
    return list(httpx.post(f"{api}/events/filter", json=body, timeout=10).json()["events"])


def test_an_alert_storm_starts_one_run_that_names_every_alert(deployed: dict[str, str]) -> None:
    api = deployed["PREFECT_API_URL"]
    close_alert_windows(deployed, "backup-verification")
    tag = uuid.uuid4().hex[:8]
    missing = alert("BackupMissing", database="scaleops_sample", severity="critical")
    lag = [alert("ReplicationLagHigh", instance=f"pg-{tag}-{i}:9187", severity="warning") for i in range(3)]
    post(deployed, missing)
    post(deployed, *lag)  # Alertmanager groups by alertname: the three come in one webhook
    storm = {a["fingerprint"] for a in [missing, *lag]}

    dep_id = deployment_id(api, "backup-verification")
    (run,) = wait_for(lambda: started_by(api, dep_id, storm), 60, "the run the storm starts")
    # the lead's run appeared within seconds; one for the others would too: watch, fail when it comes
    holds_for(lambda: len(started_by(api, dep_id, storm)) == 1, 10, what="one run for four alerts")
    assert run["parameters"]["alert"]["fingerprint"] == missing["fingerprint"]
    assert run["parameters"]["first"] == "scaleops_sample"  # the alert's database label, mapped

    # the other three reached Prefect as scaleops.alert.coalesced, related to the lead's window
    window = run["parameters"]["alert"]["window"]
    assert window["lead"] and window["duty"] == "backup-verification"
    attached = events(
        api,
        {
            "event": {"name": ["scaleops.alert.coalesced"]},
            "related": {"id": [f"scaleops.alert-window.{window['id']}"]},
        },
    )
    assert {e["payload"]["fingerprint"] for e in attached} == {a["fingerprint"] for a in lag}

    def finished() -> dict[str, Any] | None:
        now = httpx.get(f"{api}/flow_runs/{run['id']}", timeout=10).json()
        return now if now["state_type"] in TERMINAL else None

    done = wait_for(finished, 600, "the worker to finish the storm's run")
    assert done["state_type"] in ("COMPLETED", "FAILED"), done["state"]  # it ran and reported
    (published,) = wait_for(
        lambda: events(
            api,
            {
                "event": {"prefix": ["scaleops.backup."]},
                "related": {"id": [f"prefect.flow-run.{run['id']}"]},
            },
        ),
        60,
        "the run's report event",
    )
    report = published["payload"]
    assert report["triggered_by"]["fingerprint"] == missing["fingerprint"]
    assert report["triggered_by"]["labels"]["database"] == "scaleops_sample"
    assert sorted(a["fingerprint"] for a in report["coalesced_alerts"]) == sorted(
        a["fingerprint"] for a in lag
    )
    assert {a["labels"]["instance"] for a in report["coalesced_alerts"]} == {
        a["labels"]["instance"] for a in lag
    }
    assert report["databases"][0] == "scaleops_sample"  # checked first
    (artifact,) = httpx.post(
        f"{api}/artifacts/filter",
        json={
            "artifacts": {"key": {"any_": ["scaleops-backup-verification-report"]}},
            "flow_runs": {"id": {"any_": [run["id"]]}},
        },
        timeout=10,
    ).json()
    markdown = artifact["data"]
    assert markdown.startswith("# ") and markdown.splitlines()[2] == "## Started by"  # under the title
    assert "`BackupMissing` database=scaleops_sample" in markdown and "3 more alert(s)" in markdown
    assert all(a["labels"]["instance"] in markdown for a in lag)


def test_a_resolved_alert_starts_nothing(deployed: dict[str, str]) -> None:
    api = deployed["PREFECT_API_URL"]
    dep_id = deployment_id(api, "preflight")
    down = alert("ScaleopsTargetDown", job="redis", instance=f"e2e-{uuid.uuid4().hex[:8]}")
    close_alert_windows(deployed, "preflight")
    post(deployed, down)
    wait_for(lambda: started_by(api, dep_id, {down["fingerprint"]}), 60, "the firing alert's run")

    close_alert_windows(deployed, "preflight")  # so that a firing alert now would start a run
    post(deployed, {**down, "status": "resolved", "endsAt": datetime.now(UTC).isoformat()})
    resolved = wait_for(
        lambda: events(
            api,
            {
                "event": {"name": ["scaleops.alert.resolved"]},
                "resource": {"id": [f"scaleops.alert.ScaleopsTargetDown.{down['fingerprint']}"]},
            },
        ),
        30,
        "the resolved event in Prefect",
    )
    assert resolved[0]["payload"]["status"] == "resolved"
    holds_for(
        lambda: len(started_by(api, dep_id, {down["fingerprint"]})) == 1, 10, what="no run for the resolution"
    )


def test_alerts_after_the_storms_run_reported_start_one_follow_up(
    deployed: dict[str, str], this_bridge: str
) -> None:
    api = deployed["PREFECT_API_URL"]
    dep_id = deployment_id(api, "backup-verification")
    close_alert_windows(deployed, "backup-verification")
    first = alert("BackupMissing", database="postgres")
    post(deployed, first, bridge=this_bridge)
    (run,) = wait_for(lambda: started_by(api, dep_id, {first["fingerprint"]}), 60, "the storm's run")
    window = run["parameters"]["alert"]["window"]
    # its report event names the window: the bridge asks Prefect for it
    wait_for(
        lambda: events(
            api,
            {
                "event": {"prefix": ["scaleops.backup."]},
                "related": {"id": [f"scaleops.alert-window.{window['id']}"]},
            },
        ),
        600,
        "the storm's run to report",
    )
    late, later = (alert("ReplicationLagHigh", instance=f"pg-late-{uuid.uuid4().hex[:6]}") for _ in range(2))
    post(deployed, late, bridge=this_bridge)
    (follow_up,) = wait_for(lambda: started_by(api, dep_id, {late["fingerprint"]}), 60, "the follow-up run")
    assert follow_up["parameters"]["alert"]["window"]["follows"] == window["id"]
    post(deployed, later)  # through the sandbox's bridge: the other replica shares the windows
    holds_for(
        lambda: not started_by(api, dep_id, {later["fingerprint"]}), 10, what="no run after the follow-up"
    )

    (published,) = wait_for(
        lambda: events(
            api,
            {
                "event": {"prefix": ["scaleops.backup."]},
                "related": {"id": [f"prefect.flow-run.{follow_up['id']}"]},
            },
        ),
        600,
        "the follow-up's report",
    )
    assert [a["fingerprint"] for a in published["payload"]["coalesced_alerts"]] == [later["fingerprint"]]
