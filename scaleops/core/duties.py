"""`@duty(...)`: a duty declares itself once, and this decorator does what every duty does the same way.

    @duty("preflight", namespace="preflight", report=PreflightReport, summary="...")
    def preflight(settings: Settings, systems: list[System] | None = None) -> PreflightReport:
        ...  # the duty's steps; return the report

The declaration (name, event namespace, report type, summary, and `needs`: what it must find in the
settings) is the one place a duty is named: the registry (`scaleops duties`, `scaleops run`,
`scaleops config check`, the check of prefect.yaml) reads it from here. Around the
body the decorator loads the settings and hands them in (`settings` is not a flow parameter), masks
their secrets in logs and exceptions, and at the end stamps and finishes the report and publishes it:
one markdown artifact, one table where the report has rows, one event `scaleops.<namespace>.<outcome>`.
The run's final state tells the truth: Completed when ok, "Completed with warnings" when only
warnings, Failed "Problems found: ..." when a problem of error severity was found (a direct call of
the flow then raises `ProblemsFound` carrying the report), Failed "Could not check" with the event
`scaleops.<namespace>.failed` when a step failed (a dump, a source). A run that raised or crashed ends
Failed or Crashed and emits `scaleops.<namespace>.failed` from a state hook.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import pkgutil
import typing
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any
from urllib.parse import parse_qs, urlsplit

from pydantic import Field

from scaleops.core.endpoints import unreachable
from scaleops.core.redaction import protect, redacting
from scaleops.core.reporting import (
    DutyReport,
    failure_hook,
    final_state,
    publish_report,
    run_logger,
    state_message,
    with_alerts,
)
from scaleops.core.settings import Settings, load_settings

FLOWS_PACKAGE = "flows"  # every duty's flow lives in flows/<duty>.py


@dataclass(frozen=True)
class Duty:
    name: str  # CLI and deployment name
    namespace: str  # event namespace: scaleops.<namespace>.<outcome>
    report: type[DutyReport]
    summary: str
    flow: str  # "module:attribute", the deployment's entrypoint
    needs: Callable[[Settings], list[str]] = lambda _settings: []

    def missing(self, settings: Settings) -> list[str]:
        """What this duty needs from the settings and does not find (`scaleops config check`)."""
        return self.needs(settings)

    def load(self) -> Any:
        """The Prefect flow."""
        module, _, attribute = self.flow.partition(":")
        return getattr(importlib.import_module(module), attribute)


_REGISTRY: dict[str, Duty] = {}

# Every duty takes `alert`: an alert trigger in prefect.yaml passes the alert event's payload, and the
# run records who started it. Alert-started runs work on now: the alert's start is not their `as_of`.
ALERT_PARAMETER = inspect.Parameter(
    "alert",
    inspect.Parameter.KEYWORD_ONLY,
    default=None,
    annotation=Annotated[
        dict[str, Any] | None,
        Field(description="set by alert triggers: the alert that started this run (recorded in its report)"),
    ],
)
ALERT_FIELDS = ("alertname", "status", "startsAt", "fingerprint", "labels", "window")
WINDOW_RESOURCE = "scaleops.alert-window"  # the bridge's coalescing window (scaleops.ops.alert_bridge)
MAX_COALESCED_LISTED = 200  # a report lists this many attached alerts at most (the events feed has all)


def alert_context(alert: dict[str, Any] | None) -> dict[str, Any] | None:
    """What a report keeps of an alert that started (or was attached to) its run: name, status, start,
    fingerprint, labels, and the bridge's coalescing window."""
    if not alert:
        return None
    kept = {k: alert[k] for k in ALERT_FIELDS if k in alert}
    labels = alert.get("labels")
    if "alertname" not in kept and isinstance(labels, dict) and "alertname" in labels:
        kept["alertname"] = labels["alertname"]
    return kept


def coalesced_alerts(alert: dict[str, Any] | None) -> list[dict[str, Any]]:
    """The alerts the bridge attached to the window this run's alert opened (events
    `scaleops.alert.coalesced` related to `scaleops.alert-window.<id>`), oldest first, as far as
    Prefect has them now. Reading them never fails the run: on an error it logs and lists none."""
    window = (alert or {}).get("window") or {}
    if not window.get("id") or not window.get("lead"):
        return []
    from prefect.client.orchestration import get_client

    try:
        since = datetime.fromisoformat(str(window.get("opened_at"))) - timedelta(minutes=5)
    except ValueError:
        since = datetime.now(UTC) - timedelta(days=1)
    query = {
        "filter": {
            "occurred": {
                "since": since.isoformat(),
                "until": (datetime.now(UTC) + timedelta(minutes=5)).isoformat(),
            },
            "event": {"name": ["scaleops.alert.coalesced"]},
            "related": {"id": [f"{WINDOW_RESOURCE}.{window['id']}"]},
        },
        "limit": 50,  # Prefect's page size: the pages after it are followed
    }
    try:
        with get_client(sync_client=True) as client:
            page = client.request("POST", "/events/filter", json=query).json()
            events = list(page["events"])
            while page.get("next_page") and len(events) < MAX_COALESCED_LISTED:
                token = parse_qs(urlsplit(page["next_page"]).query).get("page-token", [""])[0]
                page = client.request("GET", "/events/filter/next", params={"page-token": token}).json()
                events += page["events"]
    except Exception as exc:
        run_logger().warning("could not read the alerts attached to this run's window: %s", exc)
        return []
    found = {str(e["id"]): alert_context(e.get("payload")) or {} for e in events}
    return sorted(found.values(), key=lambda a: (str(a.get("startsAt")), str(a.get("fingerprint"))))


def documented_alert(docstring: str | None) -> str:
    """The body's docstring with `alert` in its Google-style Args (Prefect shows them in the UI)."""
    text = inspect.cleandoc(docstring or "")
    line = "    alert: set by alert triggers: the alert that started this run (its report records it)."
    return f"{text}\n{line}" if "\nArgs:\n" in text else f"{text}\n\nArgs:\n{line}"


def current_backfill() -> str | None:
    """The backfill id of the running flow run (its `backfill:<id>` tag), or None for a live run."""
    from prefect.runtime import flow_run

    tags = flow_run.tags or []
    return next((t.split(":", 1)[1] for t in tags if t.startswith("backfill:")), None)


def module_for(name: str) -> str:
    """Where duty `name` lives: `cache-warming` -> `flows.cache_warming`."""
    return f"{FLOWS_PACKAGE}.{name.replace('-', '_')}"


def all_duties() -> dict[str, Duty]:
    """Every duty of the project (imports each module of the flows package once), by name."""
    package = importlib.import_module(FLOWS_PACKAGE)
    for info in pkgutil.iter_modules(package.__path__):
        importlib.import_module(f"{FLOWS_PACKAGE}.{info.name}")
    return {n: d for n, d in sorted(_REGISTRY.items()) if d.flow.startswith(f"{FLOWS_PACKAGE}.")}


def get_duty(name: str) -> Duty:
    """One duty by name, importing only its own module."""
    if name not in _REGISTRY:
        try:
            importlib.import_module(module_for(name))
        except ModuleNotFoundError as exc:
            if exc.name != module_for(name):
                raise
    if name not in _REGISTRY:
        raise KeyError(f"unknown duty {name!r}; known duties: {', '.join(all_duties())}")
    return _REGISTRY[name]


def duty(
    name: str,
    *,
    namespace: str,
    report: type[DutyReport],
    summary: str,
    needs: Callable[[Settings], list[str]] | None = None,
    **flow_options: Any,
) -> Callable[[Callable[..., DutyReport]], Any]:
    """Declare a duty and make its body a Prefect flow (see the module docstring)."""
    from prefect import flow

    from scaleops.core.heartbeats import install

    install()  # heartbeats that end with the run: no 0-1 s wait per flow run (scaleops.core.heartbeats)

    def decorate(body: Callable[..., DutyReport]) -> Any:
        signature = inspect.signature(body, eval_str=True)
        first = next(iter(signature.parameters), None)
        if first != "settings":
            raise TypeError(f"duty {name}: the body's first parameter must be `settings`")
        own = list(signature.parameters.values())[1:]
        public = signature.replace(parameters=[*own, ALERT_PARAMETER])

        @functools.wraps(body)
        def run(*args: Any, **kwargs: Any) -> DutyReport:
            bound = public.bind(*args, **kwargs)
            alert = bound.arguments.pop("alert", None)
            settings = load_settings()
            redactor = protect(settings.secrets())
            try:
                result = body(settings, *bound.args, **bound.kwargs)
            except Exception as exc:  # a system that does not answer: name the setting, exit 2
                named = unreachable(exc, settings)
                if named is None:
                    raise
                result = report()
                result.step_failed(redactor.text(named))
            if not isinstance(result, report):
                raise TypeError(f"duty {name} returned {type(result).__name__}, not {report.__name__}")
            result.duty = name
            result.triggered_by = alert_context(alert)
            result.coalesced_alerts = coalesced_alerts(alert)
            result.backfill = current_backfill()
            result.finish()
            if result.status != "ok":
                log = run_logger().warning if result.status == "warnings" else run_logger().error
                log("%s", state_message(result))
            elif result.nothing_to_report():
                run_logger().info("%s: nothing to do, nothing wrong (no artifact, no event)", name)
                return result
            publish_report(
                result,
                namespace=namespace,
                outcome="failed" if result.failed_steps else result.outcome(),
                resource_id=result.resource_id(settings),
                resource_labels=result.resource_labels(),
                markdown=with_alerts(result.markdown(settings), result),
                table=result.table(),
                redactor=redactor,
            )
            return final_state(result)

        # Prefect builds the flow's parameters from this signature: `settings` is not one of them.
        run.__signature__ = public  # type: ignore[attr-defined]
        hints = typing.get_type_hints(body, include_extras=True)
        run.__annotations__ = {k: v for k, v in hints.items() if k != "settings"}
        run.__annotations__["alert"] = ALERT_PARAMETER.annotation
        run.__doc__ = documented_alert(body.__doc__)
        hook = failure_hook(namespace, name)
        made = flow(name=name, on_failure=[hook], on_crashed=[hook], **flow_options)(redacting(run))
        entrypoint = f"{body.__module__}:{body.__name__}"
        _REGISTRY[name] = Duty(name, namespace, report, summary, entrypoint, needs or Duty.needs)
        return made

    return decorate
