"""Alert windows in the sandbox's PostgreSQL: two bridge replicas posting one storm at once start one
run per duty, a restarted bridge keeps the open window, a closed window opens anew, and a window whose
first alert never reached Prefect is opened again by the sender's retry."""

from __future__ import annotations

import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from starlette.testclient import TestClient

from scaleops.ops.alert_bridge import (
    BridgeMetrics,
    Coalescing,
    PostgresDedupe,
    create_app,
    default_prefect_file,
    duty_routes,
)
from tests.bridge_sinks import RecordingSink, ReportingSink

TOKEN = "windows-test-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
ROUTES = duty_routes(default_prefect_file())


def bridge(sink: RecordingSink, dsn: str, seconds: float = 600) -> TestClient:
    """A bridge replica: entering the client runs its start-up (migrate, open the pool)."""
    app = create_app(
        sink,  # type: ignore[arg-type]
        token=TOKEN,
        dedupe=PostgresDedupe(dsn),
        metrics=BridgeMetrics(),
        coalescing=Coalescing(ROUTES, seconds),
    )
    return TestClient(app)


def webhook(name: str, **labels: str) -> dict[str, Any]:
    alert = {
        "status": "firing",
        "labels": {"alertname": name, **labels},
        "startsAt": "2026-11-26T10:00:00Z",
        "fingerprint": uuid.uuid4().hex[:16],
    }
    return {"version": "4", "status": "firing", "receiver": "scaleops", "alerts": [alert]}


def storm() -> list[dict[str, Any]]:
    """The issue's case: three ReplicationLagHigh for three instances plus one BackupMissing."""
    lag = [webhook("ReplicationLagHigh", instance=f"pg-{i}:9187") for i in range(3)]
    return [*lag, webhook("BackupMissing", database="app")]


def windows(dsn: str) -> list[tuple[Any, ...]]:
    import psycopg

    with psycopg.connect(dsn) as conn:
        return conn.execute("select duty, state, alerts from alert_windows order by opened_at").fetchall()


def test_two_replicas_posting_one_storm_at_once_start_one_run(store_dsn: str) -> None:
    sink = RecordingSink()
    with bridge(sink, store_dsn) as one, bridge(sink, store_dsn) as two:
        hooks = storm() * 2  # every alert delivered to both replicas (Alertmanager HA sends twice)
        with ThreadPoolExecutor(8) as pool:
            answers = list(
                pool.map(
                    lambda i: (one, two)[i % 2].post("/alertmanager", json=hooks[i], headers=AUTH),
                    range(len(hooks)),
                )
            )
    assert all(a.status_code == 202 for a in answers)
    names = sorted(e["event"] for e in sink.events)
    assert names == ["scaleops.alert.coalesced"] * 3 + ["scaleops.alert.firing"]
    assert len({e["payload"]["window"]["id"] for e in sink.events}) == 1
    assert windows(store_dsn) == [("backup-verification", "emitted", 4)]


def test_a_restarted_bridge_keeps_the_open_window(store_dsn: str) -> None:
    sink = RecordingSink()
    with bridge(sink, store_dsn) as first:
        first.post("/alertmanager", json=webhook("BackupMissing", database="app"), headers=AUTH)
    with bridge(sink, store_dsn) as restarted:
        restarted.post("/alertmanager", json=webhook("ReplicationLagHigh", instance="pg-1"), headers=AUTH)
        restarted.post("/alertmanager", json=webhook("ScaleopsTargetDown", job="redis"), headers=AUTH)
    assert [e["event"] for e in sink.events] == [
        "scaleops.alert.firing",
        "scaleops.alert.coalesced",
        "scaleops.alert.firing",  # another duty: its own window
    ]


def test_a_closed_window_opens_anew(store_dsn: str) -> None:
    sink = RecordingSink()
    with bridge(sink, store_dsn, seconds=1) as client:
        client.post("/alertmanager", json=webhook("ReplicationLagHigh", instance="pg-1"), headers=AUTH)
        client.post("/alertmanager", json=webhook("ReplicationLagHigh", instance="pg-2"), headers=AUTH)
        time.sleep(1.2)
        client.post("/alertmanager", json=webhook("ReplicationLagHigh", instance="pg-3"), headers=AUTH)
    assert [e["event"] for e in sink.events] == [
        "scaleops.alert.firing",
        "scaleops.alert.coalesced",
        "scaleops.alert.firing",
    ]
    assert len({e["payload"]["window"]["id"] for e in sink.events}) == 2


def test_a_window_whose_lead_never_reached_prefect_is_opened_by_the_retry(store_dsn: str) -> None:
    lead = webhook("BackupMissing", database="app")
    with bridge(RecordingSink(fail=True), store_dsn) as down:
        assert down.post("/alertmanager", json=lead, headers=AUTH).status_code == 503
    assert windows(store_dsn) == []
    sink = RecordingSink()
    with bridge(sink, store_dsn) as up:
        assert up.post("/alertmanager", json=lead, headers=AUTH).status_code == 202
        up.post("/alertmanager", json=webhook("ReplicationLagHigh", instance="pg-1"), headers=AUTH)
    assert [e["event"] for e in sink.events] == ["scaleops.alert.firing", "scaleops.alert.coalesced"]


def test_alerts_after_the_storms_run_reported_start_one_follow_up(store_dsn: str) -> None:
    sink = ReportingSink()
    with bridge(sink, store_dsn) as client:
        client.post("/alertmanager", json=webhook("BackupMissing", database="app"), headers=AUTH)
        first = sink.events[0]["payload"]["window"]["id"]
        sink.reported.add(first)
        late = webhook("ReplicationLagHigh", instance="pg-1")
        # the follow-up's lead does not reach Prefect: the storm's window is open again for the retry
        failing = ReportingSink(fail=True)
        failing.reported = sink.reported
        with bridge(failing, store_dsn) as down:
            assert down.post("/alertmanager", json=late, headers=AUTH).status_code == 503
        assert client.post("/alertmanager", json=late, headers=AUTH).status_code == 202
        client.post("/alertmanager", json=webhook("ReplicationLagHigh", instance="pg-2"), headers=AUTH)
        follow_up = sink.events[1]["payload"]["window"]
        sink.reported.add(follow_up["id"])
        client.post("/alertmanager", json=webhook("ReplicationLagHigh", instance="pg-3"), headers=AUTH)
    assert [e["event"] for e in sink.events] == [
        "scaleops.alert.firing",
        "scaleops.alert.firing",  # the one follow-up
        "scaleops.alert.coalesced",
        "scaleops.alert.coalesced",  # the follow-up reported too: no follow-up of a follow-up
    ]
    assert follow_up["follows"] == first and follow_up["lead"]
    assert {e["payload"]["window"]["id"] for e in sink.events[1:]} == {follow_up["id"]}
    assert windows(store_dsn) == [
        ("backup-verification", "emitted", 1),
        ("backup-verification", "emitted", 3),
    ]
