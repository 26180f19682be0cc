"""A real flow run on the sandbox's Prefect server, with scaleops' heartbeats installed (as every duty
runs), still sends `prefect.flow-run.heartbeat` for itself: what the zombie automation and
`scaleops backfill` read."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from scaleops.core import heartbeats
from scaleops.ops.backfill import HEARTBEAT_EVENT
from tests.polling import wait_until


@pytest.fixture
def client(sandbox_env: dict[str, str]) -> Iterator[Any]:
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as prefect:
        yield prefect


def test_a_flow_run_sends_its_heartbeat(client: Any) -> None:
    import prefect.flow_engine as engine
    from prefect import flow
    from prefect.events.worker import EventsWorker

    assert heartbeats.install() and engine._send_heartbeats is heartbeats.send_heartbeats

    @flow(name="heartbeat-check")
    def beating() -> str:
        from prefect.runtime import flow_run

        return str(flow_run.id)

    run_id = beating()
    EventsWorker.drain_all()
    query = {
        "filter": {
            "event": {"name": [HEARTBEAT_EVENT]},
            "any_resource": {"id": [f"prefect.flow-run.{run_id}"]},
        },
        "limit": 5,
    }

    def sent() -> list[Any]:
        return list(client.request("POST", "/events/filter", json=query).json()["events"])

    wait_until(sent, timeout=30, interval=0.5, what=f"a heartbeat event of flow run {run_id}")
