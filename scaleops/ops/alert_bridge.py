"""The alert bridge: Prometheus Alertmanager and Grafana webhooks in, Prefect events out.

Prefect's open-source server has no inbound webhooks, so `scaleops alerts serve` receives
Alertmanager (webhook version 4) at `/alertmanager` and Grafana alerting at `/grafana`, and turns each
alert into one event `scaleops.alert.firing` / `scaleops.alert.resolved` that deployment triggers in
prefect.yaml match by `alertname`. The event id is derived from fingerprint, start time and status, so
Alertmanager's repeats of the same alert start no second run (Prefect ignores a repeated event id).

Contract: a bearer token is required unless started insecure (compared in constant time); bodies over
the limit get 413; a body that is not valid JSON or not a valid payload gets 400 naming the field, never
a 5xx; when Prefect's API is unreachable the answer is 503 so Alertmanager retries. `/metrics` counts
received, emitted and rejected alerts in the Prometheus text format.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import logging
import re
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any, Literal

import httpx
from prometheus_client import CollectorRegistry, Counter, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

log = logging.getLogger("scaleops.alerts")

EVENT_NAMESPACE = uuid.UUID("5b0b7a52-6f0e-4d55-9a59-3c3b8b7f2a11")
DEFAULT_MAX_BODY = 1024 * 1024
Source = Literal["alertmanager", "grafana"]
LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")


# ------------------------------------------------------------------------------------------------ payloads
class Alert(BaseModel):
    """One alert, as both Alertmanager and Grafana send it (extra fields are kept out, not refused)."""

    model_config = ConfigDict(extra="ignore")

    status: Literal["firing", "resolved"]
    labels: dict[str, str]
    annotations: dict[str, str] = Field(default_factory=dict)
    startsAt: datetime  # noqa: N815 - the webhook's own field names
    endsAt: datetime | None = None  # noqa: N815
    generatorURL: str = ""  # noqa: N815
    fingerprint: str = ""
    values: dict[str, Any] | None = None  # Grafana only

    @field_validator("labels")
    @classmethod
    def _has_alertname(cls, labels: dict[str, str]) -> dict[str, str]:
        if not labels.get("alertname"):
            raise ValueError("labels must include a non-empty 'alertname'")
        bad = sorted(name for name in labels if not LABEL_NAME.fullmatch(name))
        if bad:
            raise ValueError(f"label names must match [a-zA-Z_][a-zA-Z0-9_]*: {bad[:3]}")
        return labels

    @field_validator("endsAt")
    @classmethod
    def _zero_end_is_none(cls, value: datetime | None) -> datetime | None:
        """Alertmanager sends 0001-01-01 as the end of a firing alert: that means 'not ended'."""
        return None if value is not None and value.year < 1970 else value

    def key(self) -> str:
        """Alertmanager's fingerprint, or a stable hash of the labels when the sender gave none."""
        if self.fingerprint:
            return self.fingerprint
        canonical = json.dumps(sorted(self.labels.items()))
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]


class AlertmanagerWebhook(BaseModel):
    """Alertmanager webhook payload, version 4."""

    model_config = ConfigDict(extra="ignore")

    version: Literal["4"]
    status: Literal["firing", "resolved"]
    receiver: str = ""
    groupKey: str = ""  # noqa: N815
    truncatedAlerts: int = 0  # noqa: N815
    groupLabels: dict[str, str] = Field(default_factory=dict)  # noqa: N815
    commonLabels: dict[str, str] = Field(default_factory=dict)  # noqa: N815
    commonAnnotations: dict[str, str] = Field(default_factory=dict)  # noqa: N815
    externalURL: str = ""  # noqa: N815
    alerts: list[Alert] = Field(min_length=1, max_length=10_000)


class GrafanaWebhook(BaseModel):
    """Grafana unified alerting webhook payload."""

    model_config = ConfigDict(extra="ignore")

    receiver: str = ""
    status: Literal["firing", "resolved"]
    orgId: int | None = None  # noqa: N815
    groupKey: str = ""  # noqa: N815
    externalURL: str = ""  # noqa: N815
    title: str = ""
    alerts: list[Alert] = Field(min_length=1, max_length=10_000)


def event_id(alert: Alert) -> str:
    """Same alert, same start, same status -> same id: Prefect drops the repeat."""
    return str(uuid.uuid5(EVENT_NAMESPACE, f"{alert.key()}|{alert.startsAt.isoformat()}|{alert.status}"))


def alert_event(
    alert: Alert, source: Source, webhook: AlertmanagerWebhook | GrafanaWebhook
) -> dict[str, Any]:
    """The Prefect event for one alert (plain data, as `POST /api/events` takes it)."""
    alertname = alert.labels["alertname"]
    resource = {
        **{name: str(value) for name, value in alert.labels.items()},
        "prefect.resource.id": f"scaleops.alert.{alertname}.{alert.key()}",
        "prefect.resource.name": alertname,
        "alertname": alertname,
        "severity": alert.labels.get("severity", "none"),
    }
    payload: dict[str, Any] = {
        "source": source,
        "status": alert.status,
        "annotations": alert.annotations,
        "startsAt": alert.startsAt.isoformat(),
        "endsAt": alert.endsAt.isoformat() if alert.endsAt else None,
        "generatorURL": alert.generatorURL,
        "receiver": webhook.receiver,
        "externalURL": webhook.externalURL,
        "groupKey": webhook.groupKey,
    }
    if alert.values is not None:
        payload["values"] = alert.values
    return {
        "id": event_id(alert),
        "occurred": datetime.now(UTC).isoformat(),
        "event": f"scaleops.alert.{alert.status}",
        "resource": resource,
        "related": [],
        "payload": payload,
    }


def describe_validation_error(exc: ValidationError) -> str:
    """'alerts.0.labels: labels must include ...' for the first few problems."""
    parts = []
    for err in exc.errors(include_input=False, include_url=False)[:5]:
        where = ".".join(str(p) for p in err["loc"]) or "body"
        parts.append(f"{where}: {str(err['msg']).removeprefix('Value error, ')}")
    return "; ".join(parts)


# ------------------------------------------------------------------------------------------------ the app
class PrefectUnavailable(RuntimeError):
    """Prefect's API did not take the events: the sender should retry later."""


class EventSink:
    """Posts events to Prefect's `POST /api/events` (one request per webhook)."""

    def __init__(self, api_url: str, timeout: float = 10.0):
        self.api_url = api_url.rstrip("/")
        self.client = httpx.AsyncClient(timeout=timeout)

    async def send(self, events: list[dict[str, Any]]) -> None:
        try:
            response = await self.client.post(f"{self.api_url}/events", json=events)
        except httpx.HTTPError as exc:
            raise PrefectUnavailable(f"Prefect API unreachable: {type(exc).__name__}") from exc
        if response.status_code >= 500 or response.status_code == 429:
            raise PrefectUnavailable(f"Prefect API answered {response.status_code}")
        response.raise_for_status()

    async def close(self) -> None:
        await self.client.aclose()


class BridgeMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.received = Counter(
            "scaleops_alerts_received", "Alerts received", ["source"], registry=self.registry
        )
        self.emitted = Counter(
            "scaleops_alerts_emitted",
            "Events emitted to Prefect",
            ["source", "status"],
            registry=self.registry,
        )
        self.rejected = Counter(
            "scaleops_alerts_rejected", "Webhooks rejected", ["source", "reason"], registry=self.registry
        )


def create_app(
    sink: EventSink,
    *,
    token: str | None,
    max_body_bytes: int = DEFAULT_MAX_BODY,
    metrics: BridgeMetrics | None = None,
) -> Starlette:
    """The ASGI app. `token=None` means insecure (no authentication): only with an explicit flag."""
    stats = metrics or BridgeMetrics()
    expected = f"Bearer {token}".encode() if token else None

    def reject(source: str, reason: str, status: int, message: str) -> JSONResponse:
        stats.rejected.labels(source=source, reason=reason).inc()
        headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
        return JSONResponse({"error": message}, status_code=status, headers=headers)

    async def read_body(request: Request) -> bytes | None:
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > max_body_bytes:
            return None
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > max_body_bytes:
                return None
        return bytes(body)

    def make_handler(source: Source, model: type[AlertmanagerWebhook] | type[GrafanaWebhook]) -> Any:
        async def handle(request: Request) -> Response:
            if expected is not None:
                given = request.headers.get("authorization", "").encode()
                if not hmac.compare_digest(given, expected):
                    return reject(source, "unauthorized", 401, "missing or wrong bearer token")
            body = await read_body(request)
            if body is None:
                return reject(source, "too_large", 413, f"body larger than {max_body_bytes} bytes")
            try:
                data = json.loads(body)
            except (ValueError, UnicodeDecodeError):
                return reject(source, "invalid_json", 400, "body is not valid JSON")
            try:
                webhook = model.model_validate(data)
            except ValidationError as exc:
                return reject(source, "invalid_payload", 400, describe_validation_error(exc))
            stats.received.labels(source=source).inc(len(webhook.alerts))
            events = [alert_event(alert, source, webhook) for alert in webhook.alerts]
            try:
                await sink.send(events)
            except PrefectUnavailable as exc:
                stats.rejected.labels(source=source, reason="prefect_unavailable").inc()
                log.warning("%s; answering 503 so the sender retries", exc)
                return JSONResponse({"error": str(exc)}, status_code=503, headers={"Retry-After": "10"})
            for event in events:
                stats.emitted.labels(source=source, status=event["payload"]["status"]).inc()
            return JSONResponse({"events": [e["id"] for e in events]}, status_code=202)

        return handle

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        await sink.close()

    async def healthz(request: Request) -> Response:
        return JSONResponse({"ok": True})

    async def metrics_endpoint(request: Request) -> Response:
        return Response(generate_latest(stats.registry), media_type=CONTENT_TYPE_LATEST)

    return Starlette(
        routes=[
            Route("/alertmanager", make_handler("alertmanager", AlertmanagerWebhook), methods=["POST"]),
            Route("/grafana", make_handler("grafana", GrafanaWebhook), methods=["POST"]),
            Route("/healthz", healthz, methods=["GET"]),
            Route("/metrics", metrics_endpoint, methods=["GET"]),
        ],
        lifespan=lifespan,
    )


def serve(
    *, host: str, port: int, api_url: str, token: str | None, max_body_bytes: int = DEFAULT_MAX_BODY
) -> None:
    """Run the bridge until interrupted."""
    import uvicorn

    app = create_app(EventSink(api_url), token=token, max_body_bytes=max_body_bytes)
    uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False)
