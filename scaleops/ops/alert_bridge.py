"""The alert bridge: Prometheus Alertmanager and Grafana webhooks in, Prefect events out.

Prefect's open-source server has no inbound webhooks, so `scaleops alerts serve` receives
Alertmanager (webhook version 4) at `/alertmanager` and Grafana alerting at `/grafana`, and turns each
alert into one event `scaleops.alert.firing` / `scaleops.alert.resolved` that deployment triggers in
prefect.yaml match by `alertname`. The event id is derived from fingerprint, start time and status.
Alertmanager repeats a still-firing alert (every `repeat_interval`, and after its own restarts); Prefect's
seen-cache of event ids lasts 30 minutes and a restart, so the bridge keeps what it emitted in PostgreSQL
(`alert_emissions`, keyed by fingerprint + start + status) and emits a repeat only once (`PostgresDedupe`).

An alert storm starts one run per duty: which alertnames belong to which duty is read from the alert
triggers in prefect.yaml (`duty_routes`). The first firing alert for a duty opens a window of
`SCALEOPS_ALERTS__COALESCE_SECONDS` (table `alert_windows`, under a per-duty advisory lock, so two bridge
replicas and a restart agree) and is emitted as `scaleops.alert.firing` (the trigger starts the duty);
the others that arrive before the window closes are emitted as `scaleops.alert.coalesced`, which no
trigger expects: the window is a related resource of each (`scaleops.alert-window.<id>`), and the run the
first one started lists them in its report. An alert that comes after that run has reported (its report
event names the window) starts one follow-up run, whose window takes the storm's remaining alerts: at
most one follow-up per storm. Resolved alerts start nothing (no trigger expects them).

Contract: a bearer token is required unless started insecure (compared in constant time); bodies over
the limit get 413; a body that is not valid JSON or not a valid payload gets 400 naming the field, never
a 5xx: nesting deeper than `max_depth`, NaN/Infinity (or a number too large for a float), a lone UTF-16
surrogate, more than `max_labels` labels or a label over `max_label_bytes` are refused like any other bad
field. Prefect refusing the events (a 4xx) is 422; Prefect unreachable is 503 so Alertmanager retries.
When the dedupe store is unreachable the bridge still emits (a missed alert is worse than a repeated
one; Prefect's own seen-cache still applies) and counts it. `/metrics` counts received, emitted,
deduplicated and rejected alerts in the Prometheus text format.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import logging
import math
import re
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

import httpx
from prometheus_client import CollectorRegistry, Counter, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

if TYPE_CHECKING:
    from scaleops.core.settings import Settings

log = logging.getLogger("scaleops.alerts")

EVENT_NAMESPACE = uuid.UUID("5b0b7a52-6f0e-4d55-9a59-3c3b8b7f2a11")
DEFAULT_MAX_BODY = 1024 * 1024
Source = Literal["alertmanager", "grafana"]
LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
SURROGATE = re.compile(r"[\ud800-\udfff]")
JSON_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"')
NOT_BRACKETS = bytes(c for c in range(256) if c not in b"[]{}")
HARD_MAX_DEPTH = 500  # deeper than this is refused before parsing (the parser recurses per level)
MAX_FIELD_CHARS = 8192  # webhook-level strings copied into every event (receiver, groupKey, externalURL)


@dataclass(frozen=True)
class PayloadLimits:
    """What a webhook may contain beyond its schema (SCALEOPS_ALERTS__MAX_*)."""

    max_depth: int = 32
    max_labels: int = 100
    max_label_bytes: int = 2048

    @classmethod
    def from_settings(cls, settings: Settings) -> PayloadLimits:
        alerts = settings.alerts
        return cls(alerts.max_depth, alerts.max_labels, alerts.max_label_bytes)


class PayloadError(ValueError):
    """A webhook the bridge refuses (400); the message starts with the field it names."""


def _where(path: list[str | int]) -> str:
    return ".".join(str(p)[:64] for p in path) or "body"


def parse_body(body: bytes, limits: PayloadLimits) -> Any:
    """JSON -> data, refusing what JSON (RFC 8259) or Prefect cannot carry, naming where it is."""
    if nesting_exceeds(body, max(limits.max_depth, HARD_MAX_DEPTH)):
        raise PayloadError(f"body: nested deeper than {limits.max_depth} levels")
    try:
        data = json.loads(body)
    except RecursionError:
        raise PayloadError(f"body: nested deeper than {limits.max_depth} levels") from None
    except (ValueError, UnicodeDecodeError):
        raise PayloadError("body is not valid JSON") from None
    check_json(data, limits)
    return data


def nesting_exceeds(body: bytes, depth: int) -> bool:
    """Whether brackets outside strings nest deeper than `depth` (a scan at C speed but for the
    brackets themselves), so a pathological body never reaches the recursive parser."""
    brackets = JSON_STRING.sub(b"", body).translate(None, NOT_BRACKETS)
    if len(brackets) <= depth:
        return False
    level = 0
    for char in brackets:
        level += 1 if char in b"[{" else -1
        if level > depth:
            return True
    return False


def check_json(data: Any, limits: PayloadLimits) -> None:
    """Walk parsed JSON (iteratively: no recursion limit to hit) for depth, non-finite numbers and lone
    surrogates (which UTF-8 cannot encode: the event would never reach Prefect)."""
    stack: list[tuple[Any, list[str | int]]] = [(data, [])]
    while stack:
        value, path = stack.pop()
        if len(path) > limits.max_depth:
            raise PayloadError(f"{_where(path[: limits.max_depth])}: nested deeper than {limits.max_depth}")
        if isinstance(value, float) and not math.isfinite(value):
            raise PayloadError(f"{_where(path)}: {value} is not a JSON number (NaN/Infinity or too large)")
        if isinstance(value, str) and SURROGATE.search(value):
            raise PayloadError(f"{_where(path)}: a lone UTF-16 surrogate is not valid Unicode")
        if isinstance(value, dict):
            for key, item in value.items():
                if SURROGATE.search(key):
                    raise PayloadError(f"{_where(path)}: a key holds a lone UTF-16 surrogate")
                stack.append((item, [*path, key]))
        elif isinstance(value, list):
            stack.extend((item, [*path, i]) for i, item in enumerate(value))


def check_labels(webhook: AlertmanagerWebhook | GrafanaWebhook, limits: PayloadLimits) -> None:
    """Label count and size: Prefect refuses a resource with more than 500 labels."""
    for i, alert in enumerate(webhook.alerts):
        if len(alert.labels) > limits.max_labels:
            raise PayloadError(
                f"alerts.{i}.labels: {len(alert.labels)} labels, more than {limits.max_labels}"
            )
        for name, value in alert.labels.items():
            size = len(name.encode()) + len(value.encode())
            if size > limits.max_label_bytes:
                raise PayloadError(
                    f"alerts.{i}.labels.{name[:64]}: {size} bytes, more than {limits.max_label_bytes}"
                )


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
    receiver: str = Field(default="", max_length=MAX_FIELD_CHARS)
    groupKey: str = Field(default="", max_length=MAX_FIELD_CHARS)  # noqa: N815
    truncatedAlerts: int = 0  # noqa: N815
    groupLabels: dict[str, str] = Field(default_factory=dict)  # noqa: N815
    commonLabels: dict[str, str] = Field(default_factory=dict)  # noqa: N815
    commonAnnotations: dict[str, str] = Field(default_factory=dict)  # noqa: N815
    externalURL: str = Field(default="", max_length=MAX_FIELD_CHARS)  # noqa: N815
    alerts: list[Alert] = Field(min_length=1, max_length=10_000)


class GrafanaWebhook(BaseModel):
    """Grafana unified alerting webhook payload."""

    model_config = ConfigDict(extra="ignore")

    receiver: str = Field(default="", max_length=MAX_FIELD_CHARS)
    status: Literal["firing", "resolved"]
    orgId: int | None = None  # noqa: N815
    groupKey: str = Field(default="", max_length=MAX_FIELD_CHARS)  # noqa: N815
    externalURL: str = Field(default="", max_length=MAX_FIELD_CHARS)  # noqa: N815
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
    payload: dict[str, Any] = {  # what an alert trigger hands its run as `alert` (the run's context)
        "alertname": alertname,
        "fingerprint": alert.key(),
        "labels": dict(alert.labels),
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


WINDOW_RESOURCE = "scaleops.alert-window"


@dataclass(frozen=True)
class Window:
    """The coalescing window an alert fell in: `lead` when this alert opened it (its event starts the
    duty), otherwise it is attached to the run the lead started."""

    id: str
    duty: str
    opened_at: datetime
    closes_at: datetime
    lead: bool
    follows: str | None = None  # a follow-up window: the window whose run had already reported


Reported = Callable[[str, datetime], Awaitable[bool]]  # (window id, opened at) -> has its run reported?


def in_window(event: dict[str, Any], window: Window) -> dict[str, Any]:
    """The alert's event placed in its window: the lead stays `scaleops.alert.firing`, the others become
    `scaleops.alert.coalesced` (no trigger expects it); both carry the window in payload and related."""
    payload = {
        **event["payload"],
        "window": {
            "id": window.id,
            "duty": window.duty,
            "opened_at": window.opened_at.isoformat(),
            "closes_at": window.closes_at.isoformat(),
            "lead": window.lead,
            "follows": window.follows,
        },
    }
    related = {
        "prefect.resource.id": f"{WINDOW_RESOURCE}.{window.id}",
        "prefect.resource.role": "alert-window",
        "prefect.resource.name": f"{window.duty} alerts from {window.opened_at:%Y-%m-%d %H:%M:%S}",
    }
    name = "scaleops.alert.firing" if window.lead else "scaleops.alert.coalesced"
    return {**event, "event": name, "payload": payload, "related": [*event["related"], related]}


def default_prefect_file() -> Path:
    """The project's prefect.yaml: beside the scaleops package in a checkout, else in the working
    directory (the image installs the package into its virtualenv and works in /opt/scaleops)."""
    beside = Path(__file__).resolve().parents[2] / "prefect.yaml"
    return beside if beside.is_file() else Path.cwd() / "prefect.yaml"


def duty_routes(prefect_file: Path) -> dict[str, str]:
    """alertname -> the deployment whose trigger starts on it (`expect: [scaleops.alert.firing]`,
    `match.alertname`), from prefect.yaml. An alertname that two deployments name is refused: it could
    not be coalesced per duty."""
    import yaml

    document = yaml.safe_load(prefect_file.read_text()) or {}
    routes: dict[str, str] = {}
    for deployment in document.get("deployments") or []:
        for trigger in deployment.get("triggers") or []:
            if "scaleops.alert.firing" not in (trigger.get("expect") or []):
                continue
            names = (trigger.get("match") or {}).get("alertname") or []
            for alertname in [names] if isinstance(names, str) else names:
                other = routes.setdefault(str(alertname), deployment["name"])
                if other != deployment["name"]:
                    raise ValueError(
                        f"{prefect_file}: alert {alertname} starts both {other} and {deployment['name']}"
                    )
    return routes


@dataclass(frozen=True)
class Coalescing:
    """Which duty each alertname starts, and how long a window stays open (0: no coalescing)."""

    routes: dict[str, str]
    seconds: float

    @classmethod
    def from_settings(cls, settings: Settings) -> Coalescing:
        alerts = settings.alerts
        if not alerts.coalesce_seconds:
            return cls({}, 0)
        path = Path(alerts.prefect_file) if alerts.prefect_file else default_prefect_file()
        try:
            routes = duty_routes(path)
        except (OSError, ValueError) as exc:  # the bridge still serves: every alert starts its run
            log.warning("alert coalescing off: cannot read the alert triggers (%s)", exc)
            return cls({}, 0)
        return cls(routes, alerts.coalesce_seconds)


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


class PrefectRefused(ValueError):
    """Prefect's API refused the events as invalid (400/413/422): retrying the same payload cannot help."""


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
        if response.status_code in (400, 413, 422):
            raise PrefectRefused(
                f"Prefect refused the events (HTTP {response.status_code}): {response.text[:300]}"
            )
        if response.status_code >= 400:  # 5xx, 429, and 401/403/404 (the bridge's own setup): retry later
            raise PrefectUnavailable(f"Prefect API answered {response.status_code}")

    async def window_reported(self, window_id: str, opened_at: datetime) -> bool:
        """Whether a run has published its report for this window (duties relate their report event to
        the window that started them). Unknown (Prefect unreachable) counts as not yet: attach."""
        now = datetime.now(UTC)
        body = {
            "filter": {
                "occurred": {
                    "since": (opened_at - timedelta(minutes=5)).isoformat(),
                    "until": (now + timedelta(minutes=5)).isoformat(),
                },
                "related": {"id": [f"{WINDOW_RESOURCE}.{window_id}"]},
                "event": {"exclude_prefix": ["scaleops.alert."]},
            },
            "limit": 1,
        }
        try:
            response = await self.client.post(f"{self.api_url}/events/filter", json=body)
            response.raise_for_status()
            return bool(response.json()["events"])
        except (httpx.HTTPError, ValueError, KeyError, TypeError) as exc:
            log.warning("could not ask Prefect whether window %s has reported: %s", window_id, exc)
            return False

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
        self.deduplicated = Counter(
            "scaleops_alerts_deduplicated",
            "Repeats of an alert already emitted (not emitted again)",
            ["source"],
            registry=self.registry,
        )
        self.dedupe_errors = Counter(
            "scaleops_alerts_dedupe_errors",
            "Dedupe store unreachable: alerts emitted without the durable check",
            registry=self.registry,
        )
        self.coalesced = Counter(
            "scaleops_alerts_coalesced",
            "Alerts attached to a duty's open window (emitted as scaleops.alert.coalesced, no new run)",
            ["duty"],
            registry=self.registry,
        )


# ------------------------------------------------------------------------------------------------ dedupe
@dataclass(frozen=True)
class Emission:
    """What identifies one emitted alert event: fingerprint + start + status (and its event id)."""

    event_id: str
    fingerprint: str
    starts_at: datetime
    status: str
    alertname: str

    @classmethod
    def of(cls, alert: Alert) -> Emission:
        return cls(event_id(alert), alert.key(), alert.startsAt, alert.status, alert.labels["alertname"])


class Dedupe(Protocol):
    """Which events were already emitted. `claim` returns the ids to emit now; after sending, `confirm`
    them, or `release` them when sending failed (so the sender's retry emits them)."""

    async def start(self) -> None: ...
    async def claim(self, emissions: list[Emission], source: str) -> set[str]: ...
    async def confirm(self, ids: list[str]) -> None: ...
    async def release(self, ids: list[str]) -> None: ...
    async def windows(
        self, alerts: list[tuple[str, str]], seconds: float, reported: Reported | None = None
    ) -> dict[str, Window]: ...
    async def close(self) -> None: ...


class NoDedupe:
    """Emit everything (Prefect's in-memory seen-cache is the only dedupe)."""

    async def start(self) -> None:
        return None

    async def claim(self, emissions: list[Emission], source: str) -> set[str]:
        return {e.event_id for e in emissions}

    async def confirm(self, ids: list[str]) -> None:
        return None

    async def release(self, ids: list[str]) -> None:
        return None

    async def windows(
        self, alerts: list[tuple[str, str]], seconds: float, reported: Reported | None = None
    ) -> dict[str, Window]:
        return {}  # no store, no windows: every alert starts its duty

    async def close(self) -> None:
        return None


_CLAIM = """
insert into alert_emissions as e (fingerprint, starts_at, status, event_id, alertname, source, state)
select f, s, st, id, n, %(src)s::text, 'claimed'
from unnest(%(f)s::text[], %(s)s::timestamptz[], %(st)s::text[], %(id)s::uuid[], %(n)s::text[])
    as t(f, s, st, id, n)
on conflict (fingerprint, starts_at, status) do update
    set state = 'claimed', claimed_at = now(), last_seen_at = now(), event_id = excluded.event_id
    where e.state = 'claimed' and e.claimed_at < now() - make_interval(secs => %(stale)s)
returning event_id::text
"""

_OPEN_WINDOW = """
select id::text, opened_at, closes_at, follows::text from alert_windows
where duty = %(duty)s and closes_at > now()
    and (state = 'emitted' or claimed_at > now() - make_interval(secs => %(stale)s))
order by opened_at desc limit 1
"""

_NEW_WINDOW = """
insert into alert_windows (id, duty, lead_event_id, state, opened_at, closes_at)
values (gen_random_uuid(), %(duty)s, %(lead)s::uuid, 'claimed', now(),
    now() + make_interval(secs => %(secs)s))
returning id::text, opened_at, closes_at, follows::text
"""

_FOLLOW_UP = """
insert into alert_windows (id, duty, lead_event_id, state, opened_at, closes_at, follows)
values (gen_random_uuid(), %(duty)s, %(lead)s::uuid, 'claimed', now(), %(closes)s, %(follows)s::uuid)
returning id::text, opened_at, closes_at, follows::text
"""


class PostgresDedupe:
    """Durable dedupe in PostgreSQL (`alert_emissions`, migration in scaleops.core.migrations).

    A claim inserts (fingerprint, start, status) as 'claimed'; only the inserting request emits it. A
    claim whose request died before confirming goes stale after `claim_seconds` and may be claimed again,
    so a crash between claim and send loses no alert for good. Rows unseen for `retention_days` go."""

    def __init__(
        self,
        dsn: str,
        *,
        claim_seconds: float = 60,
        retention_days: float = 30,
        timeout: float = 2.0,
        migrate: bool = True,
        migrate_lock_timeout: float = 10.0,
    ):
        from psycopg_pool import AsyncConnectionPool

        self.dsn, self.claim_seconds, self.retention_days = dsn, claim_seconds, retention_days
        self.migrate, self.migrate_lock_timeout = migrate, migrate_lock_timeout
        self.pool = AsyncConnectionPool(
            dsn,
            min_size=1,
            max_size=4,
            timeout=timeout,
            open=False,
            kwargs={"application_name": "scaleops-alert-bridge", "connect_timeout": max(1, int(timeout))},
        )
        self._pruned_at = 0.0

    async def start(self) -> None:
        if self.migrate:
            try:
                await asyncio.to_thread(self._migrate)
            except Exception as exc:  # fail open: the bridge still emits, and says why it cannot dedupe
                log.warning("alert dedupe: could not migrate the schema (%s): %s", type(exc).__name__, exc)
        await self.pool.open(wait=False)

    def _migrate(self) -> None:
        import psycopg

        from scaleops.core.migrations import migrate

        # never wait long for the migration lock: the bridge must serve (it fails open without dedupe)
        options = f"-c lock_timeout={int(self.migrate_lock_timeout * 1000)} -c statement_timeout=60s"
        with psycopg.connect(self.dsn, autocommit=True, connect_timeout=5, options=options) as conn:
            migrate(conn)

    async def claim(self, emissions: list[Emission], source: str) -> set[str]:
        params = {
            "f": [e.fingerprint for e in emissions],
            "s": [e.starts_at for e in emissions],
            "st": [e.status for e in emissions],
            "id": [e.event_id for e in emissions],
            "n": [e.alertname for e in emissions],
            "src": source,
            "stale": self.claim_seconds,
        }
        async with self.pool.connection() as conn, conn.transaction():
            cursor = await conn.execute(_CLAIM, params)
            fresh = {str(r[0]) for r in await cursor.fetchall()}
            repeats = [e.event_id for e in emissions if e.event_id not in fresh]
            if repeats:
                await conn.execute(
                    "update alert_emissions set repeats = repeats + 1, last_seen_at = now()"
                    " where event_id = any(%s::uuid[])",
                    (repeats,),
                )
            if time.monotonic() - self._pruned_at > 3600:
                self._pruned_at = time.monotonic()
                await conn.execute(
                    "delete from alert_emissions where last_seen_at < now() - make_interval(days => %s)",
                    (int(self.retention_days),),
                )
                await conn.execute(
                    "delete from alert_windows where closes_at < now() - make_interval(days => %s)",
                    (int(self.retention_days),),
                )
        return fresh

    async def confirm(self, ids: list[str]) -> None:
        async with self.pool.connection() as conn:
            await conn.execute(
                "update alert_emissions set state = 'emitted', emitted_at = now()"
                " where event_id = any(%s::uuid[])",
                (ids,),
            )
            await conn.execute(
                "update alert_windows set state = 'emitted' where lead_event_id = any(%s::uuid[])", (ids,)
            )

    async def release(self, ids: list[str]) -> None:
        async with self.pool.connection() as conn:
            await conn.execute(
                "delete from alert_emissions where event_id = any(%s::uuid[]) and state = 'claimed'", (ids,)
            )
            # a window whose lead never reached Prefect started nothing: the sender's retry opens it again
            # (a follow-up's: the window it followed is open again, so the retry follows it up again)
            await conn.execute(
                "with gone as (delete from alert_windows where lead_event_id = any(%s::uuid[])"
                " and state = 'claimed' returning follows, closes_at)"
                " update alert_windows w set closes_at = gone.closes_at from gone where w.id = gone.follows",
                (ids,),
            )

    async def windows(
        self, alerts: list[tuple[str, str]], seconds: float, reported: Reported | None = None
    ) -> dict[str, Window]:
        """Place each (event id, duty) in its duty's open window, opening one where none is open. Per
        duty under a transaction-scoped advisory lock: two replicas never open two windows at once. A
        window whose lead was claimed but never confirmed (the request died) counts as closed after
        `claim_seconds`, so a crash never leaves a window that started nothing. When the open window's
        run has already `reported`, the alert opens one follow-up window instead (until the first would
        have closed); a follow-up window never gets a follow-up of its own."""
        placed: dict[str, Window] = {}
        by_duty: dict[str, list[str]] = {}
        for event, duty in alerts:
            by_duty.setdefault(duty, []).append(event)
        async with self.pool.connection() as conn:
            for duty, ids in sorted(by_duty.items()):
                async with conn.transaction():
                    await conn.execute(
                        "select pg_advisory_xact_lock(hashtextextended(%s, 0))",
                        (f"{WINDOW_RESOURCE}:{duty}",),
                    )
                    cursor = await conn.execute(_OPEN_WINDOW, {"duty": duty, "stale": self.claim_seconds})
                    row = await cursor.fetchone()
                    members = ids
                    opened: Any = None
                    if row is None:
                        opened = await conn.execute(
                            _NEW_WINDOW, {"duty": duty, "lead": ids[0], "secs": seconds}
                        )
                    elif row[3] is None and reported is not None and await reported(str(row[0]), row[1]):
                        await conn.execute(
                            "update alert_windows set closes_at = now() where id = %s::uuid", (row[0],)
                        )
                        opened = await conn.execute(
                            _FOLLOW_UP, {"duty": duty, "lead": ids[0], "closes": row[2], "follows": row[0]}
                        )
                    if opened is not None:  # this request's first alert leads a new window
                        row = await opened.fetchone()
                        assert row is not None
                        placed[ids[0]] = Window(str(row[0]), duty, row[1], row[2], lead=True, follows=row[3])
                        members = ids[1:]
                    assert row is not None
                    for event in members:
                        placed[event] = Window(str(row[0]), duty, row[1], row[2], lead=False, follows=row[3])
                    await conn.execute(
                        "update alert_windows set alerts = alerts + %s where id = %s::uuid and %s > 0",
                        (len(members), row[0], len(members)),
                    )
                    await conn.execute(
                        "update alert_emissions set window_id = %s::uuid where event_id = any(%s::uuid[])",
                        (row[0], ids),
                    )
        return placed

    async def close(self) -> None:
        await self.pool.close()


def create_app(
    sink: EventSink,
    *,
    token: str | None,
    max_body_bytes: int = DEFAULT_MAX_BODY,
    metrics: BridgeMetrics | None = None,
    limits: PayloadLimits | None = None,
    dedupe: Dedupe | None = None,
    body_timeout: float = 30.0,
    coalescing: Coalescing | None = None,
) -> Starlette:
    """The ASGI app. `token=None` means insecure (no authentication): only with an explicit flag.
    With `coalescing`, alerts for one duty within its window start one run (needs a dedupe store)."""
    stats = metrics or BridgeMetrics()
    bounds = limits or PayloadLimits()
    store: Dedupe = dedupe or NoDedupe()
    coalesce = coalescing or Coalescing({}, 0)
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
            try:
                body = await asyncio.wait_for(read_body(request), body_timeout)
            except TimeoutError:  # a sender that trickles its body holds a connection: not for ever
                return reject(source, "timeout", 408, f"body not received within {body_timeout:g} s")
            if body is None:
                return reject(source, "too_large", 413, f"body larger than {max_body_bytes} bytes")
            try:
                data = parse_body(body, bounds)
            except PayloadError as exc:
                reason = "invalid_json" if str(exc).startswith("body is not") else "invalid_payload"
                return reject(source, reason, 400, str(exc))
            try:
                webhook = model.model_validate(data)
                check_labels(webhook, bounds)
                events = [alert_event(alert, source, webhook) for alert in webhook.alerts]
            except ValidationError as exc:
                return reject(source, "invalid_payload", 400, describe_validation_error(exc))
            except PayloadError as exc:
                return reject(source, "invalid_payload", 400, str(exc))
            except Exception as exc:  # a payload no rule foresaw: refuse it (a 5xx is retried for ever)
                log.exception("alert bridge: unexpected error on a %s payload", source)
                return reject(
                    source, "invalid_payload", 400, f"body: could not be processed ({type(exc).__name__})"
                )
            stats.received.labels(source=source).inc(len(webhook.alerts))
            return await emit(source, webhook, events)

        return handle

    async def emit(
        source: Source, webhook: AlertmanagerWebhook | GrafanaWebhook, events: list[dict[str, Any]]
    ) -> Response:
        unique: dict[str, tuple[Emission, dict[str, Any]]] = {}
        for alert, event in zip(webhook.alerts, events, strict=True):
            unique.setdefault(event["id"], (Emission.of(alert), event))
        claimed: set[str] = set()  # ids this request holds in the store (released if sending fails)
        try:
            fresh = claimed = await store.claim([emission for emission, _ in unique.values()], source)
        except Exception as exc:  # fail open: a missed alert is worse than a repeated one
            stats.dedupe_errors.inc()
            log.warning("alert dedupe unavailable (%s: %s); emitting without it", type(exc).__name__, exc)
            fresh = set(unique)
        to_send = [event for event_id, (_, event) in unique.items() if event_id in fresh]
        if len(to_send) < len(unique):
            stats.deduplicated.labels(source=source).inc(len(unique) - len(to_send))
        if claimed and coalesce.seconds:
            to_send = await place_in_windows(to_send)
        try:
            if to_send:
                await sink.send(to_send)
        except PrefectRefused as exc:
            await release(list(claimed))
            stats.rejected.labels(source=source, reason="prefect_refused").inc()
            log.warning("%s", exc)
            return JSONResponse({"error": str(exc)}, status_code=422)
        except Exception as exc:
            await release(list(claimed))
            stats.rejected.labels(source=source, reason="prefect_unavailable").inc()
            message = (
                str(exc) if isinstance(exc, PrefectUnavailable) else f"Prefect API: {type(exc).__name__}"
            )
            log.warning("%s; answering 503 so the sender retries", message)
            return JSONResponse({"error": message}, status_code=503, headers={"Retry-After": "10"})
        if to_send:
            with contextlib.suppress(Exception):  # not confirmed: the claim goes stale, a repeat re-emits
                await store.confirm([e["id"] for e in to_send])
        for event in to_send:
            stats.emitted.labels(source=source, status=event["payload"]["status"]).inc()
        return JSONResponse({"events": [e["id"] for e in events]}, status_code=202)

    async def place_in_windows(to_send: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Firing alerts of a routed duty go into its window (only with a working store: without it
        every alert starts its run, as a missed alert is worse than a repeated run)."""
        routed = [
            (e["id"], coalesce.routes[e["payload"]["alertname"]])
            for e in to_send
            if e["payload"]["status"] == "firing" and e["payload"]["alertname"] in coalesce.routes
        ]
        if not routed:
            return to_send
        reported: Reported | None = getattr(sink, "window_reported", None)
        try:
            placed = await store.windows(routed, coalesce.seconds, reported)
        except Exception as exc:
            stats.dedupe_errors.inc()
            log.warning(
                "alert windows unavailable (%s: %s); every alert starts its run", type(exc).__name__, exc
            )
            return to_send
        for window in placed.values():
            if not window.lead:
                stats.coalesced.labels(duty=window.duty).inc()
        return [in_window(e, placed[e["id"]]) if e["id"] in placed else e for e in to_send]

    async def release(ids: list[str]) -> None:
        if ids:
            with contextlib.suppress(Exception):  # not released: the claim goes stale after claim_seconds
                await store.release(ids)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await store.start()
        try:
            yield
        finally:
            await sink.close()
            await store.close()

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


def dedupe_from_settings(settings: Settings) -> Dedupe:
    """PostgresDedupe on the primary (SCALEOPS_POSTGRES__DSN) unless SCALEOPS_ALERTS__DEDUPE=false."""
    if not settings.alerts.dedupe:
        return NoDedupe()
    from scaleops.core.clients import postgres_dsn

    return PostgresDedupe(
        postgres_dsn(settings),
        claim_seconds=settings.alerts.dedupe_claim_seconds,
        retention_days=settings.alerts.dedupe_retention_days,
    )


@dataclass(frozen=True)
class ConnectionLimits:
    """How long a connection may take to send its request headers, stay idle between requests or send
    its body, and how many connections may be open at once (SCALEOPS_ALERTS__*)."""

    header_timeout: float = 10.0
    keepalive_timeout: float = 5.0
    body_timeout: float = 30.0
    max_connections: int = 1000

    @classmethod
    def from_settings(cls, settings: Settings) -> ConnectionLimits:
        a = settings.alerts
        return cls(
            a.header_timeout_seconds, a.keepalive_timeout_seconds, a.body_timeout_seconds, a.max_connections
        )


BUSY = b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 5\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"


def guarded_protocol(limits: ConnectionLimits) -> type[asyncio.Protocol]:
    """uvicorn's h11 protocol with a header-read deadline (armed while a connection waits for a
    request's headers: at connect and after each response) and a cap on open connections (one over it
    gets 503 and is closed). uvicorn has neither: half-sent requests held one open file each."""
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class GuardedH11Protocol(H11Protocol):
        _deadline: asyncio.TimerHandle | None = None
        _timed_cycle: Any = None

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            if len(self.connections) > limits.max_connections:
                transport.write(BUSY)
                transport.close()
                return
            self._arm()

        def _arm(self) -> None:
            self._disarm()
            self._deadline = self.loop.call_later(limits.header_timeout, self._headers_too_slow)

        def _disarm(self) -> None:
            if self._deadline is not None:
                self._deadline.cancel()
                self._deadline = None

        def _headers_too_slow(self) -> None:
            if not self.transport.is_closing():
                self.transport.close()

        def handle_events(self) -> None:
            super().handle_events()
            if self.cycle is not None and self.cycle is not self._timed_cycle:  # headers are complete
                self._timed_cycle = self.cycle
                self._disarm()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if not self.transport.is_closing():
                self._arm()  # a keep-alive connection waits for the next request's headers

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

    return GuardedH11Protocol


def bridge_server(app: Any, host: str, port: int, limits: ConnectionLimits) -> Any:
    """The uvicorn server of the bridge, with its connection limits."""
    import uvicorn

    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        http=guarded_protocol(limits),
        timeout_keep_alive=max(1, int(limits.keepalive_timeout)),
        h11_max_incomplete_event_size=16 * 1024,  # request line + headers
        log_level="warning",
        access_log=False,
    )
    return uvicorn.Server(config)


def serve(
    *,
    host: str,
    port: int,
    api_url: str,
    token: str | None,
    max_body_bytes: int = DEFAULT_MAX_BODY,
    settings: Settings | None = None,
) -> None:
    """Run the bridge until interrupted (payload, connection and dedupe settings from `settings`, loaded
    if not given)."""
    from scaleops.core.settings import load_settings

    settings = settings or load_settings()
    connections = ConnectionLimits.from_settings(settings)
    app = create_app(
        EventSink(api_url),
        token=token,
        max_body_bytes=max_body_bytes,
        limits=PayloadLimits.from_settings(settings),
        dedupe=dedupe_from_settings(settings),
        body_timeout=connections.body_timeout,
        coalescing=Coalescing.from_settings(settings) if settings.alerts.dedupe else None,
    )
    bridge_server(app, host, port, connections).run()
