"""Zombie runs against the sandbox's real Prefect server: a RUNNING run whose worker died (no heartbeat)
is found stale through Prefect's event API, marked Crashed, and `--reprocess failed` reruns its partition;
a run that still sends heartbeats is left alone."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from scaleops.ops.backfill import HEARTBEAT_EVENT, Backfiller, execute, plan
from tests.polling import wait_until

STALE_AFTER = timedelta(seconds=10)  # longer than the server takes to store an event


@pytest.fixture
def client(sandbox_env: dict[str, str]) -> Iterator[Any]:
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as prefect:
        yield prefect


@pytest.fixture
def deployment(client: Any) -> Iterator[Any]:
    """A deployment of its own with no work pool: nothing but the test moves its runs."""
    name = f"zombie-test-{uuid.uuid4().hex[:8]}"
    flow_id = client.create_flow_from_name(name)
    deployment_id = client.create_deployment(flow_id=flow_id, name=name, paused=True)
    yield deployment_id
    client.delete_deployment(deployment_id)
    client.delete_flow(flow_id)


def running_run(client: Any, deployment_id: Any, as_of: datetime) -> str:
    from prefect.states import Running

    run = client.create_flow_run_from_deployment(deployment_id, parameters={"as_of": as_of.isoformat()})
    client.set_flow_run_state(run.id, Running(), force=True)
    return str(run.id)


def heartbeat(client: Any, run_id: str) -> None:
    """What the flow engine of a live run sends every PREFECT_FLOWS_HEARTBEAT_FREQUENCY seconds."""
    event = {
        "id": str(uuid.uuid4()),
        "occurred": datetime.now(UTC).isoformat(),
        "event": HEARTBEAT_EVENT,
        "resource": {"prefect.resource.id": f"prefect.flow-run.{run_id}"},
        "payload": {},
        "related": [],
    }
    client.request("POST", "/events", json=[event])


def state_of(client: Any, run_id: str) -> str:
    return str(client.read_flow_run(uuid.UUID(run_id)).state_type.value)


def test_a_run_without_heartbeats_is_crashed_and_its_partition_reruns(client: Any, deployment: Any) -> None:
    day1, day2 = datetime(2026, 11, 1, tzinfo=UTC), datetime(2026, 11, 2, tzinfo=UTC)
    zombie = running_run(client, deployment, day1)  # its worker was killed: it will never beat again
    alive = running_run(client, deployment, day2)
    time.sleep(STALE_AFTER.total_seconds() + 0.5)  # both started before the window
    heartbeat(client, alive)
    backfiller = Backfiller(client, stale_after=STALE_AFTER)
    wait_until(
        lambda: backfiller.heartbeats_since([uuid.UUID(alive)], datetime.now(UTC) - STALE_AFTER),
        15,
        what="the heartbeat event to be stored",
    )

    existing = backfiller.existing_runs(deployment, [day1, day2])
    assert [r.stale for r in existing[day1]] == [True]
    assert [r.stale for r in existing[day2]] == [False]

    assert [i.action for i in plan("zombie-test", [day1, day2], existing, {}, "none", "asc")] == [
        "skip-failed",
        "skip-active",
    ]
    items = plan("zombie-test", [day1, day2], existing, {}, "failed", "asc")
    assert [i.action for i in items] == ["rerun", "skip-active"]
    created = execute(backfiller, deployment, items, {}, "zombie-test", max_active=None, wait=False)

    assert state_of(client, zombie) == "CRASHED"  # its concurrency slot is free again
    assert state_of(client, alive) == "RUNNING"
    (new_run,) = created
    assert client.read_flow_run(uuid.UUID(new_run)).parameters["as_of"] == day1.isoformat()
    # the next plan sees the crashed run as failed and the new one as the partition's latest
    again = backfiller.existing_runs(deployment, [day1])
    assert [r.state for r in again[day1]][0] == "CRASHED"
