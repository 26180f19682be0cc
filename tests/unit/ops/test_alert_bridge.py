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


# ------------------------------------------------------------------------- issue 18.3: poison payloads
def prefect_events_api(request: Any) -> Any:
    """`POST /api/events` as Prefect's server answers it: 422 for an event its model refuses."""
    import httpx
    from prefect.server.events.schemas.events import Event
    from pydantic import ValidationError

    try:
        for event in json.loads(request.content):
            Event.model_validate(event)
    except ValidationError as exc:
        return httpx.Response(422, json={"detail": str(exc)[:200]})
    return httpx.Response(204)


def prefect_like_sink() -> Any:
    """The real EventSink (httpx encodes the JSON: NaN or a lone surrogate fails there) over a transport
    that validates like Prefect's server (more than 500 labels: 422)."""
    import httpx

    from scaleops.ops.alert_bridge import EventSink

    sink = EventSink("http://prefect.invalid/api")
    sink.client = httpx.AsyncClient(transport=httpx.MockTransport(prefect_events_api))
    return sink


# Each of these answered 500 (and Alertmanager retries a 5xx for ever): now a 400 naming the field.
def _deep(levels: int) -> bytes:
    return (
        b'{"version": "4", "status": "firing", "alerts": [{"values": '
        + b"[" * levels
        + b"]" * levels
        + b"}]}"
    )


def _with(mutate: Any) -> bytes:
    payload = copy.deepcopy(ALERTMANAGER)
    mutate(payload)
    return json.dumps(payload).encode()


POISON = {
    "nesting 10k deep": (_deep(10_000), "body: nested deeper than"),
    "nesting 100 deep": (_deep(100), "alerts.0.values."),
    "NaN": (_with(lambda p: p["alerts"][0].update(values={"B": float("nan")})), "alerts.0.values.B"),
    "Infinity": (_with(lambda p: p["alerts"][0].update(values={"B": float("inf")})), "alerts.0.values.B"),
    "-Infinity": (_with(lambda p: p.update(truncatedAlerts=float("-inf"))), "truncatedAlerts"),
    "1e400": (
        json.dumps(ALERTMANAGER).replace('"truncatedAlerts": 0', '"truncatedAlerts": 1e400').encode(),
        "truncatedAlerts",
    ),
    "lone surrogate in a label": (
        json.dumps(ALERTMANAGER).replace('"database": "app"', '"database": "\\ud800"').encode(),
        "alerts.0.labels.database",
    ),
    "lone surrogate in a key": (
        json.dumps(ALERTMANAGER).replace('"summary": "no backup', '"\\udfff": "no backup', 1).encode(),
        "commonAnnotations",
    ),
    "600 labels": (
        _with(lambda p: p["alerts"][0]["labels"].update({f"l{i}": "x" for i in range(600)})),
        "alerts.0.labels: 603 labels",
    ),
    "a 10 kB label": (
        _with(lambda p: p["alerts"][0]["labels"].update(database="x" * 10_000)),
        "alerts.0.labels.database",
    ),
    "a 100 kB groupKey": (_with(lambda p: p.update(groupKey="k" * 100_000)), "groupKey"),
}


@pytest.mark.parametrize("name", sorted(POISON))
@pytest.mark.parametrize("path", ["/alertmanager", "/grafana"])
def test_poison_payload_is_400_naming_the_field(sink: RecordingSink, name: str, path: str) -> None:
    client = TestClient(create_app(sink, token=TOKEN))  # type: ignore[arg-type]  # default 1 MiB limit
    body, field = POISON[name]
    if path == "/grafana":
        body = body.replace(b'"version": "4", ', b"")
    response = client.post(path, content=body, headers=AUTH)
    assert response.status_code == 400, (name, response.text)
    if path == "/alertmanager":
        assert response.json()["error"].startswith(field), response.json()
    # the connection and the bridge are fine afterwards
    assert client.post("/alertmanager", json=ALERTMANAGER, headers=AUTH).status_code == 202


def test_limits_are_settings(sink: RecordingSink) -> None:
    from scaleops.ops.alert_bridge import PayloadLimits

    tight = PayloadLimits(max_depth=4, max_labels=3, max_label_bytes=64)
    client = TestClient(create_app(sink, token=TOKEN, limits=tight))  # type: ignore[arg-type]
    # the sample alert has 3 labels and nests 4 deep (alerts.0.labels.database): just inside
    assert client.post("/alertmanager", json=ALERTMANAGER, headers=AUTH).status_code == 202
    cases = {
        "alerts.0.labels: 4 labels, more than 3": lambda p: p["alerts"][0]["labels"].update(x="1"),
        "alerts.0.labels.database: 68 bytes": lambda p: p["alerts"][0]["labels"].update(database="d" * 60),
        "alerts.0.values.B: nested deeper than 4": lambda p: p["alerts"][0].update(values={"B": [1]}),
    }
    for error, mutate in cases.items():
        response = client.post("/alertmanager", content=_with(mutate), headers=AUTH)
        assert response.status_code == 400 and response.json()["error"].startswith(error), response.text


def test_limits_come_from_the_alerts_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    from scaleops.core.settings import ConfigError, load_settings
    from scaleops.ops.alert_bridge import PayloadLimits

    monkeypatch.setenv("SCALEOPS_ALERTS__MAX_LABELS", "7")
    monkeypatch.setenv("SCALEOPS_ALERTS__MAX_DEPTH", "9")
    monkeypatch.setenv("SCALEOPS_ALERTS__MAX_LABEL_BYTES", "100")
    assert PayloadLimits.from_settings(load_settings()) == PayloadLimits(9, 7, 100)
    monkeypatch.setenv("SCALEOPS_ALERTS__MAX_LABELS", "501")  # Prefect refuses > 500 labels anyway
    with pytest.raises(ConfigError, match="SCALEOPS_ALERTS__MAX_LABELS"):
        load_settings()


class RefusingSink(RecordingSink):
    async def send(self, events: list[dict[str, Any]]) -> None:
        from scaleops.ops.alert_bridge import PrefectRefused

        raise PrefectRefused("Prefect refused the events (HTTP 422): too many labels")


def test_prefect_refusing_the_events_is_422_not_500() -> None:
    client = TestClient(create_app(RefusingSink(), token=TOKEN))  # type: ignore[arg-type]
    response = client.post("/alertmanager", json=ALERTMANAGER, headers=AUTH)
    assert response.status_code == 422 and "refused" in response.json()["error"]


class BrokenSink(RecordingSink):
    async def send(self, events: list[dict[str, Any]]) -> None:
        raise RuntimeError("an unforeseen bug in sending")


def test_an_unforeseen_send_error_is_503_so_the_sender_retries() -> None:
    client = TestClient(create_app(BrokenSink(), token=TOKEN))  # type: ignore[arg-type]
    response = client.post("/alertmanager", json=ALERTMANAGER, headers=AUTH)
    assert response.status_code == 503 and response.json()["error"] == "Prefect API: RuntimeError"


def test_event_sink_maps_prefect_answers() -> None:
    import asyncio

    import httpx

    from scaleops.ops.alert_bridge import EventSink, PrefectRefused, PrefectUnavailable

    def sink_answering(status: int) -> EventSink:
        sink = EventSink("http://prefect.invalid/api")
        sink.client = httpx.AsyncClient(
            transport=httpx.MockTransport(lambda request: httpx.Response(status, text="detail"))
        )
        return sink

    for status, expected in [
        (422, PrefectRefused),
        (413, PrefectRefused),
        (500, PrefectUnavailable),
        (429, PrefectUnavailable),
        (401, PrefectUnavailable),
    ]:
        with pytest.raises(expected):
            asyncio.run(sink_answering(status).send([{"id": "x"}]))
    asyncio.run(sink_answering(204).send([{"id": "x"}]))


@pytest.fixture
def prefect_client() -> TestClient:
    return TestClient(create_app(prefect_like_sink(), token=TOKEN))


# A valid payload with one field replaced by any JSON value (NaN, Infinity, surrogates, deep nesting,
# huge numbers included): whatever it is, the answer is 202 or a 4xx, never a 5xx.
nasty_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=10**300, max_value=10**310)
    | st.floats()  # NaN and +-Infinity too
    | st.text(max_size=20)
    | st.sampled_from(["\ud800", "a\udfffb", "0001-01-01T00:00:00Z", "2026-11-26T10:00:00Z", "firing"])
)
nasty_values = st.recursive(
    nasty_scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=20,
) | st.integers(min_value=1, max_value=3000).map(
    lambda n: {"deep": json.loads("[" * min(n, 900) + "]" * min(n, 900))}
)
FIELDS = [
    ("version",),
    ("status",),
    ("groupKey",),
    ("truncatedAlerts",),
    ("commonLabels",),
    ("alerts",),
    ("alerts", 0),
    ("alerts", 0, "labels"),
    ("alerts", 0, "labels", "database"),
    ("alerts", 0, "values"),
    ("alerts", 0, "startsAt"),
    ("alerts", 0, "endsAt"),
    ("alerts", 0, "fingerprint"),
    ("alerts", 0, "status"),
    ("alerts", 0, "annotations", "summary"),
]


def _encode(payload: Any) -> bytes:
    """JSON as a sender might write it: NaN/Infinity literals, lone surrogates as \\u escapes."""
    return json.dumps(payload, allow_nan=True, ensure_ascii=True).encode()


@settings(max_examples=300, suppress_health_check=[HealthCheck.function_scoped_fixture], deadline=None)
@given(
    path=st.sampled_from(["/alertmanager", "/grafana"]),
    field=st.sampled_from(FIELDS),
    value=nasty_values,
    many_labels=st.integers(min_value=0, max_value=700),
)
def test_property_never_a_5xx(
    prefect_client: TestClient, path: str, field: tuple[Any, ...], value: Any, many_labels: int
) -> None:
    payload = copy.deepcopy(ALERTMANAGER if path == "/alertmanager" else GRAFANA)
    payload["alerts"][0]["labels"].update({f"extra_{i}": "v" for i in range(many_labels)})
    target: Any = payload
    for key in field[:-1]:
        target = target[key]
    target[field[-1]] = value
    response = prefect_client.post(path, content=_encode(payload), headers=AUTH)
    # never a 5xx; and with the bridge's own limits Prefect never has to refuse (422) either
    assert response.status_code in (202, 400), response.text
    if response.status_code == 400:  # the error starts with the field it names
        error = response.json()["error"]
        named = error.split(":")[0].split(".")[0].split(" ")[0]
        assert named in {*payload, "body"}, error


# ------------------------------------------------------------------------- issue 18.2: durable dedupe
class MemoryDedupe:
    """The Dedupe protocol in memory (the PostgreSQL one is tested against the sandbox)."""

    def __init__(self, down: bool = False):
        self.emitted: set[str] = set()
        self.claimed: set[str] = set()
        self.down = down

    async def start(self) -> None:
        return None

    async def claim(self, emissions: list[Any], source: str) -> set[str]:
        if self.down:
            raise ConnectionError("dedupe store unreachable")
        fresh = {e.event_id for e in emissions} - self.emitted - self.claimed
        self.claimed |= fresh
        return fresh

    async def confirm(self, ids: list[str]) -> None:
        self.emitted |= set(ids)
        self.claimed -= set(ids)

    async def release(self, ids: list[str]) -> None:
        self.claimed -= set(ids)

    async def close(self) -> None:
        return None


def test_a_repeat_is_emitted_once_and_answered_like_the_first(sink: RecordingSink) -> None:
    metrics = BridgeMetrics()
    client = TestClient(create_app(sink, token=TOKEN, dedupe=MemoryDedupe(), metrics=metrics))  # type: ignore[arg-type]
    first = client.post("/alertmanager", json=ALERTMANAGER, headers=AUTH)
    second = client.post("/alertmanager", json=ALERTMANAGER, headers=AUTH)
    assert first.status_code == second.status_code == 202
    assert first.json() == second.json()  # Alertmanager sees the same answer
    assert len(sink.batches) == 1
    resolved = copy.deepcopy(ALERTMANAGER)
    resolved["status"] = resolved["alerts"][0]["status"] = "resolved"
    assert client.post("/alertmanager", json=resolved, headers=AUTH).status_code == 202
    assert len(sink.batches) == 2  # a new status is a new emission
    text = client.get("/metrics").text
    assert 'scaleops_alerts_deduplicated_total{source="alertmanager"} 1.0' in text


def test_the_same_alert_twice_in_one_webhook_is_one_event(sink: RecordingSink) -> None:
    client = TestClient(create_app(sink, token=TOKEN, dedupe=MemoryDedupe()))  # type: ignore[arg-type]
    doubled = copy.deepcopy(ALERTMANAGER)
    doubled["alerts"] = doubled["alerts"] * 2
    assert client.post("/alertmanager", json=doubled, headers=AUTH).status_code == 202
    assert len(sink.batches[0]) == 1


def test_a_failed_send_releases_the_claim_so_the_retry_emits() -> None:
    store, failing = MemoryDedupe(), RecordingSink(fail=True)
    down = TestClient(create_app(failing, token=TOKEN, dedupe=store))  # type: ignore[arg-type]
    assert down.post("/alertmanager", json=ALERTMANAGER, headers=AUTH).status_code == 503
    assert store.claimed == set() and store.emitted == set()
    working = RecordingSink()
    up = TestClient(create_app(working, token=TOKEN, dedupe=store))  # type: ignore[arg-type]
    assert up.post("/alertmanager", json=ALERTMANAGER, headers=AUTH).status_code == 202
    assert len(working.batches) == 1


def test_an_unreachable_dedupe_store_still_emits(sink: RecordingSink) -> None:
    metrics = BridgeMetrics()
    store = MemoryDedupe(down=True)
    client = TestClient(create_app(sink, token=TOKEN, dedupe=store, metrics=metrics))  # type: ignore[arg-type]
    assert client.post("/alertmanager", json=ALERTMANAGER, headers=AUTH).status_code == 202
    assert len(sink.batches) == 1  # a missed alert is worse than a repeated one
    assert "scaleops_alerts_dedupe_errors_total 1.0" in client.get("/metrics").text


def test_deep_nesting_is_refused_before_the_parser_whatever_the_recursion_limit(client: TestClient) -> None:
    """A process that raised its recursion limit (libraries do) would parse 10k levels, or overflow the
    C stack on 500k: the bridge counts brackets outside strings first."""
    import sys

    saved = sys.getrecursionlimit()
    sys.setrecursionlimit(1_000_000)
    try:
        response = client.post("/alertmanager", content=b"[" * 60_000, headers=AUTH)
    finally:
        sys.setrecursionlimit(saved)
    assert response.status_code == 400 and response.json()["error"] == "body: nested deeper than 32 levels"
    brackets_in_strings = copy.deepcopy(ALERTMANAGER)
    brackets_in_strings["alerts"][0]["annotations"]["summary"] = "[{" * 1000 + '"\\'
    assert client.post("/alertmanager", json=brackets_in_strings, headers=AUTH).status_code == 202


# ------------------------------------------------------------------------- issue 18.9: slow connections
@pytest.fixture
def live_bridge(sink: RecordingSink) -> Any:
    """The bridge on a real socket (uvicorn with the guarded protocol), tight limits, in a thread."""
    import socket
    import threading
    import time

    from scaleops.ops.alert_bridge import ConnectionLimits, bridge_server

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    limits = ConnectionLimits(header_timeout=1.0, keepalive_timeout=1, body_timeout=1.0, max_connections=20)
    app = create_app(sink, token=TOKEN, body_timeout=limits.body_timeout)  # type: ignore[arg-type]
    server = bridge_server(app, "127.0.0.1", port, limits)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "the bridge did not start"
        time.sleep(0.02)
    yield port
    server.should_exit = True
    thread.join(timeout=10)


def _closed_within(sock: Any, seconds: float) -> bool:
    """Whether the server closes this socket within `seconds` (recv returns b'' or the peer resets)."""
    sock.settimeout(seconds)
    try:
        while sock.recv(4096):
            pass
    except TimeoutError:
        return False
    except OSError:
        return True
    return True


def test_half_sent_headers_are_cut_off_and_connections_are_capped(live_bridge: int) -> None:
    import socket

    import httpx

    slow = []
    for _ in range(20):  # as many half-sent requests as the cap allows
        sock = socket.create_connection(("127.0.0.1", live_bridge))
        sock.sendall(b"POST /alertmanager HTTP/1.1\r\nHost: bridge\r\n")  # ... and never the rest
        slow.append(sock)
    extra = socket.create_connection(("127.0.0.1", live_bridge))  # one over the cap: 503 and closed
    extra.settimeout(5)
    assert extra.recv(4096).startswith(b"HTTP/1.1 503")
    extra.close()
    # the header deadline (1 s) closes every half-sent request; then the bridge serves again
    assert all(_closed_within(sock, 5) for sock in slow)
    for sock in slow:
        sock.close()
    answer = httpx.post(f"http://127.0.0.1:{live_bridge}/alertmanager", json=ALERTMANAGER, headers=AUTH)
    assert answer.status_code == 202


def test_a_trickled_body_gets_408(live_bridge: int) -> None:
    import socket

    sock = socket.create_connection(("127.0.0.1", live_bridge))
    sock.sendall(
        b"POST /alertmanager HTTP/1.1\r\nHost: bridge\r\nAuthorization: Bearer "
        + TOKEN.encode()
        + b"\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{"
    )
    sock.settimeout(5)
    assert sock.recv(4096).startswith(b"HTTP/1.1 408")
    sock.close()


def test_an_idle_keepalive_connection_is_closed(live_bridge: int) -> None:
    import socket

    sock = socket.create_connection(("127.0.0.1", live_bridge))
    sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: bridge\r\n\r\n")
    sock.settimeout(5)
    assert sock.recv(4096).startswith(b"HTTP/1.1 200")
    assert _closed_within(sock, 5)  # 1 s keep-alive, then closed (and no second request's headers)
    sock.close()
