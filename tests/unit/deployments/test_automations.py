"""deployments/prefect/automations.yaml: valid for `prefect automation create`, and its triggers fire on
what the duties really emit (every duty's `.failed` event, the "Problems found" flow-run state)."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from uuid import uuid4

import pytest
import yaml
from prefect.events.schemas.automations import AutomationCore, EventTrigger
from prefect.server.events.schemas.automations import EventTrigger as ServerEventTrigger

from scaleops.core.duties import all_duties
from scaleops.core.reporting import PROBLEMS_FOUND

ROOT = Path(__file__).resolve().parents[3]
TEXT = (ROOT / "deployments" / "prefect" / "automations.yaml").read_text()


def automations() -> dict[str, AutomationCore]:
    """What `prefect automation create --from-file` builds, once the block id is filled in."""
    data = yaml.safe_load(TEXT.replace("NOTIFY_BLOCK_ID", str(uuid4())))
    return {a["name"]: AutomationCore.model_validate(a) for a in data["automations"]}


def server_trigger(automation: AutomationCore) -> Any:
    assert isinstance(automation.trigger, EventTrigger)
    return ServerEventTrigger.model_validate(automation.trigger.model_dump())


def test_the_file_is_what_prefect_accepts_and_every_action_notifies() -> None:
    found = automations()
    assert set(found) == {"scaleops-duty-failed", "scaleops-problems-found"}
    for automation in found.values():
        assert automation.enabled
        assert [action.type for action in automation.actions] == ["send-notification"]
    assert TEXT.count("NOTIFY_BLOCK_ID") >= 2  # the one thing an operator fills in


@pytest.mark.parametrize("namespace", sorted({d.namespace for d in all_duties().values()}))
def test_every_duty_failure_event_fires(namespace: str) -> None:
    trigger = server_trigger(automations()["scaleops-duty-failed"])
    assert trigger.expects(f"scaleops.{namespace}.failed")
    assert not trigger.expects(f"scaleops.{namespace}.verified")
    assert not trigger.expects("scaleops.alert.firing")


def test_problems_found_runs_fire_for_scaleops_flow_runs_only() -> None:
    trigger = server_trigger(automations()["scaleops-problems-found"])
    assert trigger.expects(f"prefect.flow-run.{PROBLEMS_FOUND}")
    assert not trigger.expects("prefect.flow-run.Completed")
    (related,) = trigger.match_related if isinstance(trigger.match_related, list) else [trigger.match_related]
    assert related.get("prefect.resource.id") == ["prefect.tag.scaleops"]
    deployments = yaml.safe_load((ROOT / "prefect.yaml").read_text())["deployments"]
    assert all("scaleops" in d["tags"] for d in deployments)  # flow runs carry their deployment's tags
