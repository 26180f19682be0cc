"""Alert labels -> run parameters: every alert trigger's parameters in prefect.yaml, rendered the way the
Prefect server renders them (its own template upgrade and hydration) for a real alert event, name
parameters the duty has, and a label the alert lacks renders as none, not as an error."""

from __future__ import annotations

import copy
import inspect
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from scaleops.core.duties import get_duty

ROOT = Path(__file__).resolve().parents[3]
DEPLOYMENTS = yaml.safe_load((ROOT / "prefect.yaml").read_text())["deployments"]
ALERT_TRIGGERS = [
    (d["name"], t)
    for d in DEPLOYMENTS
    for t in d.get("triggers") or []
    if "scaleops.alert.firing" in (t.get("expect") or [])
]


def render(parameters: dict[str, Any], labels: dict[str, str]) -> dict[str, Any]:
    from prefect.server.events.actions import RunDeployment
    from prefect.server.events.schemas.events import ReceivedEvent
    from prefect.utilities.schema_tools.hydration import HydrationContext, hydrate

    event = ReceivedEvent.model_validate(
        dict(
            id=uuid.uuid4(),
            occurred=datetime.now(UTC),
            event="scaleops.alert.firing",
            resource={"prefect.resource.id": f"scaleops.alert.{labels['alertname']}.f00"},
            payload={"alertname": labels["alertname"], "labels": labels, "startsAt": "2026-11-26T10:00Z"},
        )
    )
    upgraded = copy.deepcopy(parameters)
    RunDeployment._upgrade_v1_templates(upgraded)
    context = HydrationContext(raise_on_error=True, render_jinja=True, jinja_context={"event": event})
    return dict(hydrate(upgraded, context))


@pytest.mark.parametrize(
    ("deployment", "trigger"), ALERT_TRIGGERS, ids=[t["name"] for _, t in ALERT_TRIGGERS]
)
def test_every_alert_trigger_renders_parameters_its_duty_has(
    deployment: str, trigger: dict[str, Any]
) -> None:
    accepted = set(inspect.signature(get_duty(deployment).load().fn).parameters)
    for alertname in trigger["match"]["alertname"]:
        rendered = render(trigger["parameters"], {"alertname": alertname})  # no other label at all
        assert rendered["alert"]["alertname"] == alertname
        assert set(rendered) <= accepted, f"{deployment}: no parameter {set(rendered) - accepted}"


def test_backup_missing_names_the_database_to_check_first() -> None:
    (trigger,) = [t for name, t in ALERT_TRIGGERS if name == "backup-verification"]
    named = render(trigger["parameters"], {"alertname": "BackupMissing", "database": "app"})
    assert named["first"] == "app"
    unnamed = render(trigger["parameters"], {"alertname": "ReplicationLagHigh", "instance": "pg-1:9187"})
    assert unnamed["first"] is None and unnamed["alert"]["labels"]["instance"] == "pg-1:9187"


def test_first_named_moves_the_alerts_database_to_the_front() -> None:
    from tasks.backup.dump import first_named

    assert first_named(["a", "b", "c"], "c") == ["c", "a", "b"]
    assert first_named(["a", "b"], "elsewhere") == ["a", "b"]  # a database not backed up here
    assert first_named(["a", "b"], None) == ["a", "b"]
