"""Every duty ends the same way: one markdown artifact under a stable key and one Prefect event.

`DutyReport` is the base of every duty's typed report. `publish_report` writes the artifact (plus an
optional table artifact) and emits `scaleops.<namespace>.<outcome>`; `failure_hook` is the state hook that
emits `scaleops.<namespace>.failed` when a flow run fails. Everything published goes through the
`Redactor`, so no secret leaves in an artifact or an event.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from datetime import UTC, date, datetime, time
from typing import Any

from pydantic import BaseModel, Field

from scaleops.core.redaction import REDACTOR, Redactor
from scaleops.core.settings import Settings

log = logging.getLogger(__name__)

MAX_EVENT_PAYLOAD_BYTES = 256 * 1024
MAX_LIST_ITEMS_IN_EVENT = 50


def utcnow() -> datetime:
    return datetime.now(UTC)


def run_logger() -> logging.Logger | logging.LoggerAdapter[logging.Logger]:
    """Prefect's run logger inside a flow or task run (its lines reach the UI), a plain one outside."""
    from prefect.exceptions import MissingContextError
    from prefect.logging import get_run_logger

    try:
        return get_run_logger()
    except MissingContextError:
        return log


class DutyReport(BaseModel):
    """What every duty returns; each duty subclasses it with its own fields, and overrides what it
    publishes (`outcome`, `resource_id`, `markdown`, `table`) where the defaults do not fit."""

    duty: str = Field(default="", description="set by the @duty decorator")
    ok: bool = True
    as_of: datetime = Field(default_factory=utcnow)
    started_at: datetime = Field(default_factory=utcnow)
    finished_at: datetime | None = None
    problems: list[str] = Field(default_factory=list, description="what a person should look at")

    def problem(self, message: str) -> None:
        """Record a finding that makes the run not ok."""
        self.problems.append(message)
        self.ok = False

    def finish(self) -> DutyReport:
        self.finished_at = utcnow()
        return self

    # What the @duty decorator publishes at the end of a run.
    def outcome(self) -> str:
        """The last part of the event name: `scaleops.<namespace>.<outcome>`."""
        return "ok" if self.ok else "problems"

    def resource_id(self, settings: Settings) -> str:
        """The event's resource: what this run checked or changed."""
        return f"scaleops.{self.duty}"

    def resource_labels(self) -> dict[str, str]:
        return {}

    def markdown(self, settings: Settings) -> str:
        return default_markdown(self)

    def table(self) -> list[dict[str, Any]] | None:
        """Rows for a table artifact, or None for no table."""
        return None


def artifact_key(duty: str, kind: str = "report") -> str:
    """Stable artifact key: lowercase letters, digits and dashes, as Prefect requires."""
    raw = f"scaleops-{duty}-{kind}".lower()
    return "".join(c if c.isalnum() or c == "-" else "-" for c in raw)


def _shrink(value: Any) -> Any:
    if isinstance(value, list) and len(value) > MAX_LIST_ITEMS_IN_EVENT:
        kept = [_shrink(v) for v in value[:MAX_LIST_ITEMS_IN_EVENT]]
        return [*kept, f"... {len(value) - MAX_LIST_ITEMS_IN_EVENT} more (see the artifact)"]
    if isinstance(value, list):
        return [_shrink(v) for v in value]
    if isinstance(value, dict):
        return {k: _shrink(v) for k, v in value.items()}
    return value


def event_payload(report: BaseModel, redactor: Redactor) -> dict[str, Any]:
    """The report as JSON data, redacted, with long lists cut so the event stays small."""
    payload = redactor.data(report.model_dump(mode="json"))
    if len(json.dumps(payload)) > MAX_EVENT_PAYLOAD_BYTES:
        payload = _shrink(payload)
    return payload


def default_markdown(report: DutyReport, title: str | None = None) -> str:
    """A readable summary for duties that have nothing better: status, problems, then every field."""
    lines = [f"# {title or report.duty}: {'OK' if report.ok else 'PROBLEMS FOUND'}", ""]
    lines.append(f"- as of: `{report.as_of.isoformat()}`")
    if report.finished_at:
        seconds = (report.finished_at - report.started_at).total_seconds()
        lines.append(f"- finished: `{report.finished_at.isoformat()}` ({seconds:.1f} s)")
    if report.problems:
        lines += ["", "## Problems", *[f"- {p}" for p in report.problems]]
    lines += ["", "## Details", "```json", report.model_dump_json(indent=2), "```"]
    return "\n".join(lines)


def publish_report(
    report: DutyReport,
    *,
    namespace: str,
    outcome: str,
    resource_id: str,
    markdown: str | None = None,
    table: Sequence[dict[str, Any]] | None = None,
    redactor: Redactor | None = None,
    resource_labels: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Publish one markdown artifact (+ optional table) and one event `scaleops.<namespace>.<outcome>`.

    Returns what was published (keys, event name and id) so callers and tests can find it.
    """
    from prefect.artifacts import create_markdown_artifact, create_table_artifact
    from prefect.events import emit_event

    redactor = redactor or REDACTOR
    description = f"scaleops {report.duty}: {'ok' if report.ok else 'problems found'}"
    key = artifact_key(report.duty)
    create_markdown_artifact(
        markdown=redactor.text(markdown or default_markdown(report)), key=key, description=description
    )
    table_key = None
    if table:
        table_key = artifact_key(report.duty, "table")
        create_table_artifact(table=redactor.data(list(table)), key=table_key, description=description)

    event_name = f"scaleops.{namespace}.{outcome}"
    resource = {"prefect.resource.id": resource_id, "scaleops.duty": report.duty, **(resource_labels or {})}
    event = emit_event(event=event_name, resource=resource, payload=event_payload(report, redactor))
    flush_events()
    return {
        "artifact_key": key,
        "table_key": table_key,
        "event": event_name,
        "event_id": str(event.id) if event else None,
    }


def flush_events(timeout: float = 10.0) -> None:
    """Send buffered events now: `emit_event` queues them, and a short process may exit first."""
    from prefect.events.worker import EventsWorker

    try:
        EventsWorker.drain_all(timeout=timeout)
    except Exception:  # an event lost is logged, never a reason to fail the duty
        log.warning("could not flush Prefect events", exc_info=True)


def failure_hook(namespace: str, duty: str) -> Callable[..., None]:
    """A flow `on_failure` / `on_crashed` hook emitting `scaleops.<namespace>.failed`."""

    def hook(flow: Any, flow_run: Any, state: Any) -> None:
        from prefect.events import emit_event

        redactor = REDACTOR
        emit_event(
            event=f"scaleops.{namespace}.failed",
            resource={"prefect.resource.id": f"scaleops.duty.{duty}", "scaleops.duty": duty},
            payload={
                "flow_run_id": str(getattr(flow_run, "id", "")),
                "state": getattr(state, "name", None),
                "message": redactor.text(str(getattr(state, "message", "") or "")),
            },
        )
        flush_events()

    hook.__name__ = f"emit_{namespace}_failed"
    return hook


def as_datetime(as_of: datetime | date | None) -> datetime:
    """The run's clock: now, a datetime (naive = UTC), or a date (its midnight UTC, as a date string
    passed on the command line is read too)."""
    if as_of is None:
        return utcnow()
    if isinstance(as_of, datetime):
        return as_of if as_of.tzinfo else as_of.replace(tzinfo=UTC)
    return datetime.combine(as_of, time.min, tzinfo=UTC)
