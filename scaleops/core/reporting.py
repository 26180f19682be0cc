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
from typing import Any, Literal

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


Severity = Literal["warn", "error"]
PROBLEMS_FOUND = "Problems found"  # the name of a Failed state that ran and found error-severity problems
COULD_NOT_CHECK = "Could not check"  # a Failed state: a step (a dump, a source) failed, so nothing was judged
COMPLETED_WITH_WARNINGS = "Completed with warnings"


class DutyReport(BaseModel):
    """What every duty returns; each duty subclasses it with its own fields, and overrides what it
    publishes (`outcome`, `resource_id`, `markdown`, `table`) where the defaults do not fit."""

    duty: str = Field(default="", description="set by the @duty decorator")
    ok: bool = True
    as_of: datetime = Field(default_factory=utcnow)
    started_at: datetime = Field(default_factory=utcnow)
    finished_at: datetime | None = None
    problems: list[str] = Field(
        default_factory=list, description="error severity: the run ends Failed, 'Problems found'"
    )
    warnings: list[str] = Field(
        default_factory=list, description="warn severity: worth a look, the run still ends Completed"
    )
    failed_steps: list[str] = Field(
        default_factory=list, description="steps that failed (could not check): the run ends Failed, exit 2"
    )
    triggered_by: dict[str, Any] | None = Field(default=None, description="the alert that started this run")
    coalesced_alerts: list[dict[str, Any]] = Field(
        default_factory=list,
        description="alerts for this duty attached to this run's alert window (they started no run)",
    )
    backfill: str | None = Field(default=None, description="the backfill this run belongs to, if any")

    def problem(self, message: str, severity: Severity = "error") -> None:
        """Record a finding: an error makes the run not ok (it ends Failed, "Problems found"); a
        warning is named as one (the run ends "Completed with warnings")."""
        if severity == "warn":
            self.warnings.append(message)
            return
        self.problems.append(message)
        self.ok = False

    def step_failed(self, message: str) -> None:
        """Record a step that failed (a dump that did not run, a source that did not answer): not a
        finding about the system but a check that could not be made. The run ends Failed, `.failed`."""
        self.failed_steps.append(message)
        self.ok = False

    @property
    def status(self) -> str:
        """failed, problems, warnings or ok: what the run's state, the CLI and the demo say."""
        if self.failed_steps:
            return "failed"
        return "problems" if self.problems else ("warnings" if self.warnings else "ok")

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

    def more_events(self) -> list[tuple[str, dict[str, str], dict[str, Any]]]:
        """Events beside the run's own, as (outcome, resource, payload), e.g. one per series that may
        breach. They are published like the run's event: with `as_of`, and marked when backfilled."""
        return []

    def nothing_to_report(self) -> bool:
        """True when a frequent run found nothing to do and nothing wrong: it publishes no artifact and
        no event (one log line), so the events feed is not drowned."""
        return False


class ProblemsFound(Exception):
    """A duty ran and found error-severity problems. Its flow run ends Failed ("Problems found") with
    this as its result, so calling the flow directly raises it; `.report` is the whole report."""

    def __init__(self, report: DutyReport) -> None:
        super().__init__(state_message(report))
        self.report = report

    def __reduce__(self) -> tuple[Any, ...]:  # results are pickled: keep the report, not just the text
        return (ProblemsFound, (self.report,))


def state_message(report: DutyReport, first: int = 3) -> str:
    """'problems found: <first problems>' (or 'warnings: ...'), for the state message and the log."""
    found, label = next(
        (
            (items, label)
            for items, label in (
                (report.failed_steps, "could not check"),
                (report.problems, "problems found"),
                (report.warnings, "warnings"),
            )
            if items
        ),
        ([], "ok"),
    )
    shown = "; ".join(found[:first])
    more = f" (and {len(found) - first} more)" if len(found) > first else ""
    return f"{label}: {shown}{more}" if found else "ok"


def final_state(report: DutyReport) -> Any:
    """What a duty's flow returns: the report itself when ok, else a state that says what was found.
    Error-severity problems end the run Failed, named "Problems found" (failure notifications and
    `backfill --reprocess failed` see it); warnings only end it Completed, named so."""
    from prefect.states import Completed, Failed

    if report.failed_steps:
        return Failed(name=COULD_NOT_CHECK, message=state_message(report), data=ProblemsFound(report))
    if report.problems:
        return Failed(name=PROBLEMS_FOUND, message=state_message(report), data=ProblemsFound(report))
    if report.warnings:
        return Completed(name=COMPLETED_WITH_WARNINGS, message=state_message(report), data=report)
    return report


def report_of(state: Any) -> DutyReport | None:
    """The report a finished duty run carries, whether it ended ok, with warnings, Problems found or
    Could not check; None when it failed without one (an exception, a crash)."""
    data = state.result(raise_on_failure=False)
    if isinstance(data, ProblemsFound):
        return data.report
    return data if isinstance(data, DutyReport) else None


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


def _alert_line(alert: dict[str, Any]) -> str:
    labels = alert.get("labels") or {}
    shown = ", ".join(f"{k}={v}" for k, v in sorted(labels.items()) if k != "alertname")
    name = alert.get("alertname") or labels.get("alertname") or "?"
    started, fingerprint = alert.get("startsAt", "?"), alert.get("fingerprint", "?")
    return f"- `{name}` {shown} (started {started}, fingerprint `{fingerprint}`)"


def alert_markdown(report: DutyReport) -> str:
    """'Started by' for an alert-started run: the alert that started it and the alerts attached to its
    window (empty for a scheduled, manual or backfilled run)."""
    if not report.triggered_by:
        return ""
    lines = ["## Started by", _alert_line(report.triggered_by)]
    window = report.triggered_by.get("window") or {}
    if window.get("follows"):
        lines += [
            "",
            "A follow-up: it came after the run for this storm's first alerts had reported "
            f"(window `scaleops.alert-window.{window['follows']}`).",
        ]
    closes = window.get("closes_at", "?")
    if report.coalesced_alerts:
        lines += [
            "",
            f"{len(report.coalesced_alerts)} more alert(s) for {window.get('duty', report.duty)} arrived "
            "since and started no run of their own:",
            *[_alert_line(a) for a in report.coalesced_alerts],
        ]
    elif window:
        lines += ["", "No other alert for it so far."]
    if window:
        after = (
            "no run"
            if window.get("follows")
            else "no run, but for one follow-up run for those after this report"
        )
        lines += [
            "",
            f"Until {closes} alerts for it start {after}; the events feed lists every one under the "
            f"resource `scaleops.alert-window.{window.get('id', '?')}`.",
        ]
    return "\n".join(lines)


def with_alerts(markdown: str, report: DutyReport) -> str:
    """The duty's markdown with "Started by" under its title (what an on-call engineer asks first)."""
    section = alert_markdown(report)
    if not section:
        return markdown
    title, newline, rest = markdown.partition("\n")
    if not title.startswith("# "):
        return f"{section}\n\n{markdown}"
    return f"{title}\n\n{section}\n{newline}{rest.lstrip(chr(10))}"


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


def with_failed_steps(markdown: str, report: DutyReport) -> str:
    """The artifact says first what could not be checked (the duty's own rendering may not list its
    failed steps: a run whose system did not answer has nothing else to show)."""
    if not report.failed_steps:
        return markdown
    section = ["## Could not check", "", *[f"- {step}" for step in report.failed_steps], ""]
    title, sep, rest = markdown.partition("\n")
    if title.startswith("# "):
        return "\n".join([title, "", *section]) + sep + rest
    return "\n".join(section) + "\n" + markdown


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
    description = f"scaleops {report.duty}: {report.status.replace('problems', 'problems found')}"
    key = artifact_key(report.duty)
    create_markdown_artifact(
        markdown=redactor.text(with_failed_steps(markdown or default_markdown(report), report)),
        key=key,
        description=description,
    )
    table_key = None
    if table:
        table_key = artifact_key(report.duty, "table")
        create_table_artifact(table=redactor.data(list(table)), key=table_key, description=description)

    # A backfilled run's events are history: they carry the backfill and a distinct name
    # (`scaleops.<namespace>.backfill.<outcome>`), so automations that page on live outcomes ignore them.
    prefix = f"scaleops.{namespace}.{'backfill.' if report.backfill else ''}"
    as_of = {"scaleops.as_of": report.as_of.isoformat()}
    related = []
    if report.backfill:
        backfill = f"scaleops.backfill.{report.backfill}"
        related.append({"prefect.resource.id": backfill, "prefect.resource.role": "backfill"})
    window = (report.triggered_by or {}).get("window") or {}
    if window.get("id"):  # the alert bridge sees that this window's run has reported (one follow-up after)
        window_id = f"scaleops.alert-window.{window['id']}"
        related.append({"prefect.resource.id": window_id, "prefect.resource.role": "alert-window"})
    event_name = prefix + outcome
    resource = {"prefect.resource.id": resource_id, "scaleops.duty": report.duty, **(resource_labels or {})}
    event = emit_event(
        event=event_name,
        resource={**resource, **as_of},
        related=related,
        payload=event_payload(report, redactor),
    )
    for more_outcome, more_resource, payload in report.more_events():
        extra = {"as_of": report.as_of.isoformat(), "backfill": report.backfill}
        emit_event(
            event=prefix + more_outcome,
            resource={**more_resource, **as_of},
            related=related,
            payload=redactor.data({**payload, **extra}),
        )
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

        if getattr(state, "name", None) in (PROBLEMS_FOUND, COULD_NOT_CHECK):
            return  # the decorator published the report and its outcome event (`.failed` for the latter)

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
