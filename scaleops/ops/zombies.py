"""Zombie runs: the automation that marks a flow run Crashed when its heartbeats stop.

Prefect 3.9 flow runs emit `prefect.flow-run.heartbeat` every `PREFECT_FLOWS_HEARTBEAT_FREQUENCY`
(180 s by default). Prefect Cloud ships a managed "unresponsive run detection"; the open-source server
needs the automation created by hand: a proactive trigger that fires when a run sent a heartbeat and
then neither another heartbeat nor a terminal state within `within` seconds, with the action
"change the flow run's state to Crashed" (which frees its deployment's concurrency slot).
`ensure_zombie_automation` creates it once (by name), or updates its window. `prefect deploy` creates
it: prefect.yaml's build step `scaleops.ops.zombies.deploy_step` runs on every deploy (the README's
`prefect --no-prompt deploy --all`, `scaleops demo`, the e2e tests). `scaleops backfill --reprocess` has
its own check (`scaleops.ops.backfill`), for servers without this automation.

What it needs of the flow runs' side (keep this in mind when tuning Prefect's per-run overhead):
- heartbeats ON where flow runs execute (the worker's and the flow-run pods' environment):
  PREFECT_FLOWS_HEARTBEAT_FREQUENCY (alias PREFECT_RUNNER_HEARTBEAT_FREQUENCY) must not be unset to
  None/empty. A run that never sends a heartbeat is never crashed by this automation (the trigger
  starts at a run's first heartbeat), so turning heartbeats off silently turns zombie detection off;
- the window (`within_seconds`, 600 by default) well above that frequency (Prefect's minimum is 30 s,
  its default 180 s): at least 2 missed heartbeats, or live runs are crashed. A lower frequency to cut
  the heartbeat thread's cost is fine as long as the window stays above ~3x it;
- a frequency change therefore goes with the window in prefect.yaml's build step and with
  `scaleops.ops.backfill.DEFAULT_STALE_AFTER` (what `backfill --reprocess` counts as stale).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

AUTOMATION_NAME = "scaleops: crash zombie flow runs"
DEFAULT_WITHIN = timedelta(minutes=10)  # > 3 missed heartbeats at Prefect's default 180 s
MIN_WITHIN = timedelta(seconds=60)  # two of Prefect's shortest heartbeat interval (30 s)
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
    """Create the automation unless one of that name exists (then bring its window to `within`);
    return its id (sync Prefect client)."""
    wanted = zombie_automation(within)
    existing = client.read_automations_by_name(AUTOMATION_NAME)
    if not existing:
        return client.create_automation(wanted)
    found = existing[0]
    if getattr(found.trigger, "within", None) != within or not found.enabled:
        client.update_automation(found.id, wanted)
    return found.id


def deploy_step(within_seconds: int | str = int(DEFAULT_WITHIN.total_seconds())) -> dict[str, str]:
    """prefect.yaml build step: create (or update) the automation on the server `prefect deploy` deploys
    to (PREFECT_API_URL). `prefect deploy --all` runs build steps once per deployment: it is idempotent.

    Args:
        within_seconds: a run that sent a heartbeat and then nothing (no heartbeat, no final state) for
            this long is marked Crashed; at least 60 and well above PREFECT_FLOWS_HEARTBEAT_FREQUENCY.
    """
    from prefect.client.orchestration import get_client

    within = timedelta(seconds=int(within_seconds))
    if within < MIN_WITHIN:
        raise ValueError(
            f"within_seconds {within_seconds}: at least {int(MIN_WITHIN.total_seconds())} "
            "(two heartbeats at Prefect's shortest interval), or live runs are crashed"
        )
    with get_client(sync_client=True) as client:
        automation_id = ensure_zombie_automation(client, within)
    print(
        f"zombie-run automation {AUTOMATION_NAME!r} ({automation_id}): within {int(within.total_seconds())} s"
    )
    return {"zombie_automation_id": str(automation_id)}
