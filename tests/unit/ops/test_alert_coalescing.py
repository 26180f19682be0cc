"""Alert storms in the bridge (in-process, an in-memory store): alerts for one duty within its window
start one run; the others are emitted as scaleops.alert.coalesced, attached to the first one's window.
The PostgreSQL store (two replicas, a restart) is tested in tests/integration/ops/test_alert_windows.py."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from scaleops.core.settings import Settings
from scaleops.ops.alert_bridge import (
    BridgeMetrics,
    Coalescing,
    Window,
    create_app,
    default_prefect_file,
    duty_routes,
)
from tests.bridge_sinks import RecordingSink, ReportingSink

TOKEN = "coalesce-test-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
ROUTES = duty_routes(default_prefect_file())


class MemoryStore:
    """The Dedupe protocol with windows, in memory (one open window per duty until it closes)."""

    def __init__(self, windows_down: bool = False) -> None:
        self.emitted: set[str] = set()
        self.claimed: set[str] = set()
        self.open: dict[str, tuple[Window, str]] = {}  # duty -> (window, lead event id)
        self.windows_down = windows_down
        self.clock = datetime(2026, 11, 26, 10, tzinfo=UTC)

    async def start(self) -> None:
        return None

    async def claim(self, emissions: list[Any], source: str) -> set[str]:
        fresh = {e.event_id for e in emissions} - self.emitted - self.claimed
        self.claimed |= fresh
        return fresh

    async def confirm(self, ids: list[str]) -> None:
        self.emitted |= set(ids)
        self.claimed -= set(ids)

    async def release(self, ids: list[str]) -> None:
        self.claimed -= set(ids)
        self.open = {d: (w, lead) for d, (w, lead) in self.open.items() if lead not in ids}

    async def windows(
        self, alerts: list[tuple[str, str]], seconds: float, reported: Any = None
    ) -> dict[str, Window]:
        if self.windows_down:
            raise ConnectionError("store unreachable")
        placed = {}
        for event, duty in alerts:
            current = self.open.get(duty)
            if current is None or current[0].closes_at <= self.clock:
                window = Window(
                    str(uuid.uuid4()), duty, self.clock, self.clock + timedelta(seconds=seconds), lead=True
                )
                self.open[duty] = (window, event)
                placed[event] = window
            elif (
                current[0].follows is None
                and reported
                and await reported(current[0].id, current[0].opened_at)
            ):
                window = Window(
                    str(uuid.uuid4()), duty, self.clock, current[0].closes_at, True, current[0].id
                )
                self.open[duty] = (window, event)
                placed[event] = window
            else:
                placed[event] = Window(**{**current[0].__dict__, "lead": False})
        return placed

    async def close(self) -> None:
        return None


def alert(name: str, status: str = "firing", **labels: str) -> dict[str, Any]:
    return {
        "status": status,
        "labels": {"alertname": name, **labels},
        "startsAt": "2026-11-26T10:00:00Z",
        "fingerprint": uuid.uuid4().hex[:16],
    }


def webhook(*alerts: dict[str, Any]) -> dict[str, Any]:
    return {"version": "4", "status": alerts[0]["status"], "receiver": "scaleops", "alerts": list(alerts)}


def bridge(sink: RecordingSink, store: MemoryStore, seconds: float = 600) -> TestClient:
    app = create_app(
        sink,  # type: ignore[arg-type]
        token=TOKEN,
        dedupe=store,
        metrics=BridgeMetrics(),
        coalescing=Coalescing(ROUTES, seconds),
    )
    return TestClient(app)


def test_the_routes_come_from_the_alert_triggers_in_prefect_yaml() -> None:
    assert ROUTES["BackupMissing"] == ROUTES["ReplicationLagHigh"] == "backup-verification"
    assert ROUTES["ScaleopsTargetDown"] == "preflight"
    assert ROUTES["DiskFillingUp"] == "capacity-forecast"


def test_an_alertname_two_deployments_start_on_is_refused(tmp_path: Path) -> None:
    trigger = {"expect": ["scaleops.alert.firing"], "match": {"alertname": ["X"]}}
    (tmp_path / "prefect.yaml").write_text(
        f"deployments:\n  - name: a\n    triggers: [{trigger}]\n  - name: b\n    triggers: [{trigger}]\n"
    )
    with pytest.raises(ValueError, match="starts both a and b"):
        duty_routes(tmp_path / "prefect.yaml")


def test_an_alert_storm_starts_one_run_and_attaches_the_others() -> None:
    """The issue's case: three ReplicationLagHigh (three instances) and one BackupMissing."""
    sink, store = RecordingSink(), MemoryStore()
    client = bridge(sink, store)
    lag = [alert("ReplicationLagHigh", instance=f"pg-{i}:9187") for i in range(3)]
    assert client.post("/alertmanager", json=webhook(*lag), headers=AUTH).status_code == 202
    missing = alert("BackupMissing", database="app")
    assert client.post("/alertmanager", json=webhook(missing), headers=AUTH).status_code == 202

    names = [e["event"] for e in sink.events]
    assert names == ["scaleops.alert.firing"] + ["scaleops.alert.coalesced"] * 3
    windows = {e["payload"]["window"]["id"] for e in sink.events}
    assert len(windows) == 1
    (window,) = windows
    assert [e["payload"]["window"]["lead"] for e in sink.events] == [True, False, False, False]
    for event in sink.events:
        (related,) = event["related"]
        assert related["prefect.resource.id"] == f"scaleops.alert-window.{window}"
        assert event["payload"]["window"]["duty"] == "backup-verification"
    assert 'scaleops_alerts_coalesced_total{duty="backup-verification"} 3.0' in client.get("/metrics").text


def test_alerts_after_the_run_reported_start_one_follow_up() -> None:
    sink, store = ReportingSink(), MemoryStore()
    client = bridge(sink, store)
    client.post("/alertmanager", json=webhook(alert("BackupMissing", database="app")), headers=AUTH)
    client.post("/alertmanager", json=webhook(alert("ReplicationLagHigh", instance="pg-1")), headers=AUTH)
    first = sink.events[0]["payload"]["window"]["id"]
    sink.reported.add(first)  # the storm's run published its report: later alerts are in no report
    late = [alert("ReplicationLagHigh", instance=f"pg-{i}") for i in (2, 3)]
    client.post("/alertmanager", json=webhook(*late), headers=AUTH)
    follow_up = sink.events[2]["payload"]["window"]
    assert follow_up["follows"] == first and follow_up["lead"]
    sink.reported.add(follow_up["id"])  # the follow-up reported too: no follow-up of a follow-up
    client.post("/alertmanager", json=webhook(alert("ReplicationLagHigh", instance="pg-4")), headers=AUTH)
    assert [e["event"].rsplit(".", 1)[1] for e in sink.events] == [
        "firing",
        "coalesced",
        "firing",  # the one follow-up run
        "coalesced",
        "coalesced",
    ]
    assert {e["payload"]["window"]["id"] for e in sink.events[2:]} == {follow_up["id"]}


def test_windows_are_per_duty_and_close() -> None:
    sink, store = RecordingSink(), MemoryStore()
    client = bridge(sink, store, seconds=600)
    client.post("/alertmanager", json=webhook(alert("BackupMissing", database="app")), headers=AUTH)
    client.post("/alertmanager", json=webhook(alert("ScaleopsTargetDown", job="redis")), headers=AUTH)
    assert [e["event"] for e in sink.events] == ["scaleops.alert.firing"] * 2  # two duties, two runs
    store.clock += timedelta(seconds=601)  # the window closed: the next storm starts a run again
    client.post("/alertmanager", json=webhook(alert("ReplicationLagHigh", instance="pg-1")), headers=AUTH)
    assert sink.events[-1]["event"] == "scaleops.alert.firing"


def test_resolved_and_unrouted_alerts_are_never_placed_in_a_window() -> None:
    sink, store = RecordingSink(), MemoryStore()
    client = bridge(sink, store)
    client.post("/alertmanager", json=webhook(alert("BackupMissing", "resolved", database="a")), headers=AUTH)
    client.post("/alertmanager", json=webhook(alert("SomethingElse")), headers=AUTH)
    client.post("/alertmanager", json=webhook(alert("SomethingElse")), headers=AUTH)
    assert [e["event"] for e in sink.events] == [
        "scaleops.alert.resolved",
        "scaleops.alert.firing",
        "scaleops.alert.firing",
    ]
    assert not any("window" in e["payload"] for e in sink.events)
    assert store.open == {}


def test_a_lead_that_never_reached_prefect_opens_no_window() -> None:
    store = MemoryStore()
    first = alert("BackupMissing", database="app")
    down = bridge(RecordingSink(fail=True), store)
    assert down.post("/alertmanager", json=webhook(first), headers=AUTH).status_code == 503
    assert store.open == {}
    sink = RecordingSink()
    up = bridge(sink, store)  # Alertmanager retries: the retry leads and starts the run
    assert up.post("/alertmanager", json=webhook(first), headers=AUTH).status_code == 202
    assert [e["event"] for e in sink.events] == ["scaleops.alert.firing"]


def test_without_windows_every_alert_starts_its_run() -> None:
    """A store that cannot place alerts: a repeated run is better than a missed alert."""
    sink = RecordingSink()
    client = bridge(sink, MemoryStore(windows_down=True))
    storm = [alert("ReplicationLagHigh", instance=f"pg-{i}") for i in range(3)]
    assert client.post("/alertmanager", json=webhook(*storm), headers=AUTH).status_code == 202
    assert [e["event"] for e in sink.events] == ["scaleops.alert.firing"] * 3
    assert "scaleops_alerts_dedupe_errors_total 1.0" in client.get("/metrics").text


def test_coalescing_comes_from_the_settings(tmp_path: Path) -> None:
    on = Coalescing.from_settings(Settings())
    assert on.seconds == 600 and on.routes == ROUTES
    off = Coalescing.from_settings(Settings.model_validate({"alerts": {"coalesce_seconds": 0}}))
    assert off.seconds == 0
    missing = Settings.model_validate({"alerts": {"prefect_file": str(tmp_path / "none.yaml")}})
    assert Coalescing.from_settings(missing).seconds == 0  # cannot read the routes: serve, uncoalesced
