"""Report publishing against the sandbox's real Prefect server: one artifact under a stable key, one
event `scaleops.<namespace>.<outcome>`, a failure event from the state hook, and no secret in either."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from prefect import flow

from scaleops.core.duties import duty
from scaleops.core.redaction import Redactor, protect
from scaleops.core.reporting import DutyReport, artifact_key, publish_report

pytestmark = pytest.mark.e2e
SECRET = "e2e-secret-value-123"


class ProbeReport(DutyReport):
    duty: str = "e2e-probe"
    marker: str = ""
    leaked: str = ""


@flow(name="e2e-publish")
def publishing_flow(marker: str) -> dict[str, Any]:
    report = ProbeReport(marker=marker, leaked=f"postgresql://u:{SECRET}@db/x and {SECRET}")
    report.problem(f"found drift ({SECRET})")
    return publish_report(
        report.finish(),
        namespace="e2eprobe",
        outcome="drift",
        resource_id=f"scaleops.e2e.{marker}",
        table=[{"key": "a", "state": "missing", "note": SECRET}],
        redactor=Redactor([SECRET]),
    )


@duty("e2e-fails", namespace="e2eprobe", report=DutyReport, summary="a duty that fails (test)")
def failing_flow(settings: Any) -> DutyReport:
    protect([SECRET])
    raise RuntimeError(f"cannot reach the database: token {SECRET} refused")


def events(
    api: str,
    name: str,
    resource_id: str | None = None,
    match: Callable[[dict[str, Any]], bool] = lambda _e: True,
    timeout: float = 30,
) -> list[dict[str, Any]]:
    """Events named `name` (and about `resource_id`) that `match`, polling until one arrives."""
    body: dict[str, Any] = {
        "filter": {"event": {"name": [name]}, "occurred": {"since": "2020-01-01T00:00:00Z"}}
    }
    if resource_id:
        body["filter"]["resource"] = {"id": [resource_id]}
    deadline = time.monotonic() + timeout
    while True:
        found = [
            e for e in httpx.post(f"{api}/events/filter", json=body, timeout=10).json()["events"] if match(e)
        ]
        if found or time.monotonic() > deadline:
            return found
        time.sleep(0.5)


def test_one_artifact_and_one_event(sandbox_env: dict[str, str]) -> None:
    api = sandbox_env["PREFECT_API_URL"]
    marker = uuid.uuid4().hex[:12]
    published = publishing_flow(marker)
    assert published["event"] == "scaleops.e2eprobe.drift"

    key = artifact_key("e2e-probe")
    latest = httpx.get(f"{api}/artifacts/{key}/latest", timeout=10).json()
    assert marker in latest["data"]
    assert SECRET not in latest["data"]
    tables = httpx.post(
        f"{api}/artifacts/filter",
        json={"artifacts": {"key": {"any_": [artifact_key("e2e-probe", "table")]}}},
        timeout=10,
    ).json()
    assert tables and all(SECRET not in str(t["data"]) for t in tables)

    found = events(api, "scaleops.e2eprobe.drift", f"scaleops.e2e.{marker}")
    assert len(found) == 1
    event = found[0]
    assert event["payload"]["marker"] == marker and event["payload"]["ok"] is False
    assert SECRET not in str(event)
    # the event is tied to the flow run that produced it
    assert any(r.get("prefect.resource.role") == "flow-run" for r in event["related"])


def test_failed_run_emits_failed_event(sandbox_env: dict[str, str]) -> None:
    api = sandbox_env["PREFECT_API_URL"]
    state = failing_flow(return_state=True)
    assert state.is_failed()
    run_id = str(state.state_details.flow_run_id)
    ours = events(api, "scaleops.e2eprobe.failed", match=lambda e: e["payload"]["flow_run_id"] == run_id)
    assert len(ours) == 1
    assert SECRET not in str(ours[0])
    assert "****" in ours[0]["payload"]["message"]
    # what the server stored about the run: state message and logs
    run = httpx.get(f"{api}/flow_runs/{run_id}", timeout=10).json()
    assert "cannot reach the database" in run["state"]["message"]
    assert SECRET not in str(run)
    logs = httpx.post(
        f"{api}/logs/filter", json={"logs": {"flow_run_id": {"any_": [run_id]}}}, timeout=10
    ).json()
    assert logs and SECRET not in str(logs)
