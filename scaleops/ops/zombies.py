"""Zombie runs: the automation that marks a flow run Crashed when its heartbeats stop.

Prefect 3.9 flow runs emit `prefect.flow-run.heartbeat` every `PREFECT_FLOWS_HEARTBEAT_FREQUENCY`
(180 s by default). Prefect Cloud ships a managed "unresponsive run detection"; the open-source server
needs the automation created by hand: a proactive trigger that fires when a run sent a heartbeat and
then neither another heartbeat nor a terminal state within `within` seconds, with the action
"change the flow run's state to Crashed" (which frees its deployment's concurrency slot).
`ensure_zombie_automation` creates it once (by name). `scaleops backfill --reprocess` has its own
check (`scaleops.ops.backfill`), for servers without this automation.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

AUTOMATION_NAME = "scaleops: crash zombie flow runs"
DEFAULT_WITHIN = timedelta(minutes=10)  # > 3 missed heartbeats at Prefect's default 180 s
TERMINAL_EVENTS = (
    "prefect.flow-run.Completed",
    "prefect.flow-run.Failed",
    "prefect.flow-run.Cancelled",
    "prefect.flow-run.Crashed",
)


def zombie_automation(
    within: timedelta = DEFAULT_WITHIN, *, runs: str = "prefect.flow-run.*", name: str = AUTOMATION_NAME
) -> Any:
    """The automation (an `AutomationCore`): `runs` narrows which flow runs it watches."""
    from prefect.automations import AutomationCore
    from prefect.client.schemas.objects import StateType
    from prefect.events.actions import ChangeFlowRunState
    from prefect.events.schemas.automations import EventTrigger, Posture
    from prefect.events.schemas.events import ResourceSpecification

    return AutomationCore(
        name=name,
        description="Mark a flow run Crashed when its heartbeats stop (its worker or pod is gone).",
        trigger=EventTrigger(
            after={"prefect.flow-run.heartbeat"},
            expect={"prefect.flow-run.heartbeat", *TERMINAL_EVENTS},
            match=ResourceSpecification({"prefect.resource.id": [runs]}),
            for_each={"prefect.resource.id"},
            posture=Posture.Proactive,
            threshold=1,
            within=within,
        ),
        actions=[
            ChangeFlowRunState(
                name=None,
                state=StateType.CRASHED,
                message=f"no heartbeat for {int(within.total_seconds())} s: its worker is gone",
                force=False,
            )
        ],
    )


def ensure_zombie_automation(client: Any, within: timedelta = DEFAULT_WITHIN) -> Any:
    """Create the automation unless one of that name exists; return its id (sync Prefect client)."""
    existing = client.read_automations_by_name(AUTOMATION_NAME)
    if existing:
        return existing[0].id
    return client.create_automation(zombie_automation(within))
