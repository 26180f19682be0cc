"""The alert bridge in-process (Starlette test client, a recording sink): mapping, auth, limits, fuzz."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.testclient import TestClient

from scaleops.ops.alert_bridge import BridgeMetrics, PrefectUnavailable, create_app, event_id

TOKEN = "bridge-test-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}

ALERTMANAGER = {
    "version": "4",
    "groupKey": '{}:{alertname="BackupMissing"}',
    "truncatedAlerts": 0,
    "status": "firing",
    "receiver": "scaleops",
    "groupLabels": {"alertname": "BackupMissing"},
    "commonLabels": {"alertname": "BackupMissing", "severity": "critical"},
    "commonAnnotations": {"summary": "no backup for 26h"},
    "externalURL": "http://alertmanager:9093",
    "alerts": [
        {
            "status": "firing",
            "labels": {"alertname": "BackupMissing", "severity": "critical", "database": "app"},
            "annotations": {"summary": "no backup for 26h"},
            "startsAt": "2026-11-26T10:00:00Z",
            "endsAt": "0001-01-01T00:00:00Z",
            "generatorURL": "http://prometheus:9090/graph",
            "fingerprint": "c0ffee1234567890",
        }
    ],
}

GRAFANA = {
    "receiver": "scaleops",
    "status": "firing",
    "orgId": 1,
    "alerts": [
        {
            "status": "firing",
            "labels": {"alertname": "CacheHitRateLow", "grafana_folder": "cache"},
            "annotations": {"description": "hit rate 41%"},
            "startsAt": "2026-11-26T11:00:00Z",
            "endsAt": "0001-01-01T00:00:00Z",
            "generatorURL": "http://grafana/alerting/1/edit",
            "fingerprint": "abc123",
            "values": {"B": 0.41},
        }
    ],
    "groupLabels": {},
    "commonLabels": {"alertname": "CacheHitRateLow"},
    "commonAnnotations": {},
    "externalURL": "http://grafana/",
    "version": "1",
    "groupKey": "{}:{}",
    "truncatedAlerts": 0,
    "title": "[FIRING:1] CacheHitRateLow",
    "state": "alerting",
    "message": "...",
}


class RecordingSink:
    def __init__(self, fail: bool = False):
        self.batches: list[list[dict[str, Any]]] = []
        self.fail = fail

    async def send(self, events: list[dict[str, Any]]) -> None:
        if self.fail:
            raise PrefectUnavailable("Prefect API unreachable: ConnectError")
        self.batches.append(events)

    async def close(self) -> None:
        return None


@pytest.fixture
def sink() -> RecordingSink:
    return RecordingSink()


@pytest.fixture
def client(sink: RecordingSink) -> TestClient:
    return TestClient(create_app(sink, token=TOKEN, max_body_bytes=64 * 1024))  # type: ignore[arg-type]


def test_alertmanager_alert_becomes_one_event(client: TestClient, sink: RecordingSink) -> None:
    response = client.post("/alertmanager", json=ALERTMANAGER, headers=AUTH)
    assert response.status_code == 202
    (event,) = sink.batches[0]
    assert event["event"] == "scaleops.alert.firing"
    resource = event["resource"]
    assert resource["prefect.resource.id"] == "scaleops.alert.BackupMissing.c0ffee1234567890"
    assert resource["alertname"] == "BackupMissing" and resource["severity"] == "critical"
    assert resource["database"] == "app"
    assert event["payload"]["annotations"] == {"summary": "no backup for 26h"}
    assert event["payload"]["startsAt"].startswith("2026-11-26T10:00:00")
    assert event["payload"]["endsAt"] is None  # Alertmanager's 0001-01-01 means "still firing"
    assert response.json() == {"events": [event["id"]]}


def test_repeats_share_an_id_and_resolution_does_not(client: TestClient, sink: RecordingSink) -> None:
    client.post("/alertmanager", json=ALERTMANAGER, headers=AUTH)
    client.post("/alertmanager", json=ALERTMANAGER, headers=AUTH)
    resolved = copy.deepcopy(ALERTMANAGER)
    resolved["status"] = resolved["alerts"][0]["status"] = "resolved"
    resolved["alerts"][0]["endsAt"] = "2026-11-26T12:00:00Z"
    client.post("/alertmanager", json=resolved, headers=AUTH)
    ids = [batch[0]["id"] for batch in sink.batches]
    assert ids[0] == ids[1] != ids[2]
    assert sink.batches[2][0]["event"] == "scaleops.alert.resolved"


def test_grafana_webhook(client: TestClient, sink: RecordingSink) -> None:
    assert client.post("/grafana", json=GRAFANA, headers=AUTH).status_code == 202
    (event,) = sink.batches[0]
    assert event["resource"]["alertname"] == "CacheHitRateLow"
    assert event["resource"]["severity"] == "none"
    assert event["payload"]["source"] == "grafana" and event["payload"]["values"] == {"B": 0.41}


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}])
def test_token_is_required(client: TestClient, sink: RecordingSink, headers: dict[str, str]) -> None:
    response = client.post("/alertmanager", json=ALERTMANAGER, headers=headers)
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == "Bearer"
    assert sink.batches == []


def test_insecure_mode_accepts_without_token(sink: RecordingSink) -> None:
    insecure = TestClient(create_app(sink, token=None))  # type: ignore[arg-type]
    assert insecure.post("/alertmanager", json=ALERTMANAGER).status_code == 202


def test_body_limit(client: TestClient) -> None:
    big = copy.deepcopy(ALERTMANAGER)
    big["commonAnnotations"] = {"blob": "x" * 70_000}
    assert client.post("/alertmanager", json=big, headers=AUTH).status_code == 413


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (lambda p: p.pop("alerts"), "alerts"),
        (lambda p: p.update(version="3"), "version"),
        (lambda p: p["alerts"][0]["labels"].pop("alertname"), "alerts.0.labels"),
        (lambda p: p["alerts"][0].update(status="weird"), "alerts.0.status"),
        (lambda p: p["alerts"][0].update(startsAt="yesterday"), "alerts.0.startsAt"),
        (lambda p: p["alerts"][0]["labels"].update({"bad-name": "x"}), "alerts.0.labels"),
        (lambda p: p.update(alerts=[]), "alerts"),
    ],
)
def test_bad_payload_is_400_naming_the_field(client: TestClient, mutate: Any, field: str) -> None:
    payload = copy.deepcopy(ALERTMANAGER)
    mutate(payload)
    response = client.post("/alertmanager", json=payload, headers=AUTH)
    assert response.status_code == 400
    assert response.json()["error"].startswith(field)


def test_not_json_is_400(client: TestClient) -> None:
    response = client.post("/alertmanager", content=b"{not json", headers=AUTH)
    assert response.status_code == 400 and "JSON" in response.json()["error"]


def test_prefect_down_is_503_so_the_sender_retries() -> None:
    down = TestClient(create_app(RecordingSink(fail=True), token=TOKEN))  # type: ignore[arg-type]
    response = down.post("/alertmanager", json=ALERTMANAGER, headers=AUTH)
    assert response.status_code == 503 and response.headers["Retry-After"]


def test_metrics_count_received_emitted_rejected(sink: RecordingSink) -> None:
    metrics = BridgeMetrics()
    client = TestClient(create_app(sink, token=TOKEN, metrics=metrics))  # type: ignore[arg-type]
    client.post("/alertmanager", json=ALERTMANAGER, headers=AUTH)
    client.post("/alertmanager", json=ALERTMANAGER)
    text = client.get("/metrics").text
    assert 'scaleops_alerts_received_total{source="alertmanager"} 1.0' in text
    assert 'scaleops_alerts_emitted_total{source="alertmanager",status="firing"} 1.0' in text
    assert 'scaleops_alerts_rejected_total{reason="unauthorized",source="alertmanager"} 1.0' in text
    assert client.get("/healthz").json() == {"ok": True}


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=20,
)


@settings(max_examples=150, suppress_health_check=[HealthCheck.function_scoped_fixture], deadline=None)
@given(body=json_values, path=st.sampled_from(["/alertmanager", "/grafana"]))
def test_fuzzed_payloads_never_get_a_5xx(client: TestClient, body: Any, path: str) -> None:
    response = client.post(path, content=json.dumps(body).encode(), headers=AUTH)
    assert response.status_code in (202, 400)


@settings(max_examples=100, suppress_health_check=[HealthCheck.function_scoped_fixture], deadline=None)
@given(raw=st.binary(max_size=300))
def test_fuzzed_bytes_never_get_a_5xx(client: TestClient, raw: bytes) -> None:
    assert client.post("/alertmanager", content=raw, headers=AUTH).status_code == 400


def test_event_id_is_stable() -> None:
    from scaleops.ops.alert_bridge import Alert

    alert = Alert.model_validate(ALERTMANAGER["alerts"][0])
    assert event_id(alert) == event_id(Alert.model_validate(copy.deepcopy(ALERTMANAGER["alerts"][0])))
