"""The zombie automation on the sandbox's real Prefect server: a run whose heartbeats stop is marked
Crashed by the server itself (watching only this test's run, so other runs on the server are safe)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from scaleops.ops.backfill import HEARTBEAT_EVENT
from scaleops.ops.zombies import zombie_automation
from tests.polling import holds_for, wait_until


@pytest.fixture
def client(sandbox_env: dict[str, str]) -> Iterator[Any]:
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as prefect:
        yield prefect


def beat(client: Any, run_id: Any) -> None:
    event = {
        "id": str(uuid.uuid4()),
        "occurred": datetime.now(UTC).isoformat(),
        "event": HEARTBEAT_EVENT,
        "resource": {"prefect.resource.id": f"prefect.flow-run.{run_id}"},
        "payload": {},
        "related": [],
    }
    client.request("POST", "/events", json=[event])


def test_a_run_whose_heartbeats_stop_is_crashed_by_the_server(client: Any) -> None:
    from prefect.states import Running

    flow_id = client.create_flow_from_name(f"zombie-automation-{uuid.uuid4().hex[:8]}")
    from prefect.client.schemas.actions import FlowRunCreate

    created = client.request(
        "POST", "/flow_runs/", json=FlowRunCreate(flow_id=flow_id).model_dump(mode="json")
    )
    zombie_id = uuid.UUID(created.json()["id"])
    client.set_flow_run_state(zombie_id, Running(), force=True)
    automation = zombie_automation(
        timedelta(seconds=15), runs=f"prefect.flow-run.{zombie_id}", name=f"zombie-test-{zombie_id}"
    )
    automation_id = client.create_automation(automation)
    try:
        # the triggers service reloads automations on its 5 s periodic pass: an event before that is
        # not seen by the new automation (nothing to poll for it, so wait two passes)
        time.sleep(10)
        beat(client, zombie_id)  # the worker was alive once ...
        state = lambda: client.read_flow_run(zombie_id).state_type.value  # noqa: E731
        holds_for(lambda: state() == "RUNNING", 5, what="a run that just beat stays RUNNING")
        # ... then died: no heartbeat for 15 s, and the server marks it Crashed
        wait_until(lambda: state() == "CRASHED", 60, interval=1, what="the automation to crash the zombie")
        assert "no heartbeat" in (client.read_flow_run(zombie_id).state.message or "")
    finally:
        client.delete_automation(automation_id)
        client.delete_flow(flow_id)
