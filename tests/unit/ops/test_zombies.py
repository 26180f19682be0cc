"""The zombie automation's definition (its effect is tested on a real server in tests/integration/ops)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from scaleops.ops.zombies import (
    AUTOMATION_NAME,
    TERMINAL_EVENTS,
    deploy_step,
    ensure_zombie_automation,
    zombie_automation,
)


def test_the_automation_crashes_a_run_whose_heartbeats_stop() -> None:
    automation = zombie_automation()
    trigger = automation.trigger
    assert trigger.posture.value == "Proactive" and trigger.threshold == 1
    assert trigger.after == {"prefect.flow-run.heartbeat"}
    assert trigger.expect == {"prefect.flow-run.heartbeat", *TERMINAL_EVENTS}
    assert trigger.for_each == {"prefect.resource.id"}  # one bucket per flow run
    assert trigger.within == timedelta(minutes=10)  # > 3 missed beats at Prefect's default 180 s
    assert trigger.match.model_dump() == {"prefect.resource.id": ["prefect.flow-run.*"]}
    (action,) = automation.actions
    assert action.type == "change-flow-run-state" and action.state.value == "CRASHED"


class FakeClient:
    def __init__(self, existing: list[Any]):
        self.existing = existing
        self.created: list[Any] = []
        self.updated: list[tuple[Any, Any]] = []

    def read_automations_by_name(self, name: str) -> list[Any]:
        assert name == AUTOMATION_NAME
        return self.existing

    def create_automation(self, automation: Any) -> str:
        self.created.append(automation)
        return "new-id"

    def update_automation(self, automation_id: Any, automation: Any) -> None:
        self.updated.append((automation_id, automation))


def test_ensure_creates_it_once() -> None:
    from types import SimpleNamespace

    fresh = FakeClient([])
    assert ensure_zombie_automation(fresh) == "new-id" and len(fresh.created) == 1
    same = SimpleNamespace(id="old-id", enabled=True, trigger=SimpleNamespace(within=timedelta(minutes=10)))
    present = FakeClient([same])
    assert ensure_zombie_automation(present) == "old-id" and present.created == present.updated == []


def test_ensure_brings_an_existing_one_to_the_window_asked_for() -> None:
    from types import SimpleNamespace

    older = SimpleNamespace(id="old-id", enabled=True, trigger=SimpleNamespace(within=timedelta(minutes=30)))
    client = FakeClient([older])
    assert ensure_zombie_automation(client, timedelta(minutes=10)) == "old-id" and client.created == []
    ((automation_id, automation),) = client.updated
    assert automation_id == "old-id" and automation.trigger.within == timedelta(minutes=10)


def test_the_deploy_step_refuses_a_window_that_would_crash_live_runs() -> None:
    with pytest.raises(ValueError, match="at least 60"):
        deploy_step(within_seconds=30)  # Prefect's shortest heartbeat interval: one late beat = Crashed
