"""Backfills: one idempotent flow run per partition of a deployment, with the partition as `as_of`.

Prefect's open-source server has no backfill command (`POST /deployments/{id}/schedule` with past dates
stops after `min_runs` and serves every schedule), so scaleops plans the partitions itself, creates each
run with the idempotency key `backfill:<deployment>:<partition>:<params hash>` and the tags `backfill` and
`backfill:<id>`, skips what is already done, and can wait with a bounded number of runs active.

A run orphaned by a lost worker stays RUNNING for good (Prefect's OSS server marks nothing Crashed by
itself). Flow runs emit `prefect.flow-run.heartbeat` events (every `PREFECT_FLOWS_HEARTBEAT_FREQUENCY`,
180 s by default in Prefect 3.9): a RUNNING run that started more than `stale_after` ago and sent no
heartbeat within it is **stale**. `--reprocess failed|all` treats it as failed: it is marked Crashed
(freeing its deployment's concurrency slot) and its partition runs again.

The planning is plain functions (`partitions`, `plan`); `Backfiller` talks to the Prefect API.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any, Literal
from uuid import UUID
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

Reprocess = Literal["none", "failed", "all"]
Order = Literal["asc", "desc"]
Action = Literal["create", "rerun", "skip-completed", "skip-failed", "skip-active"]

TERMINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}
HEARTBEAT_EVENT = "prefect.flow-run.heartbeat"
DEFAULT_STALE_AFTER = timedelta(minutes=10)  # > 3 missed heartbeats at Prefect's default 180 s
FAILED = {"FAILED", "CRASHED", "CANCELLED"}
_DURATION = re.compile(r"^(\d+)\s*([mhdw])$")
_UNITS = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
MAX_PARTITIONS = 10_000


class BackfillError(ValueError):
    """Bad backfill input; the message names the option."""


def parse_when(value: str, tz: ZoneInfo, option: str) -> datetime:
    """`2026-11-01` (midnight in tz) or an ISO datetime (naive = in tz)."""
    try:
        if len(value) == 10:
            day = date.fromisoformat(value)
            return datetime(day.year, day.month, day.day, tzinfo=tz)
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise BackfillError(f"{option} {value!r}: expected a date (2026-11-01) or an ISO datetime") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=tz)


def parse_tz(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise BackfillError(f"--tz {name!r}: unknown time zone (e.g. UTC, Europe/Berlin)") from None


def partitions(start: datetime, end: datetime, every: str) -> list[datetime]:
    """Every partition from `start` to `end` inclusive: a duration (`1d`, `6h`, `30m`, `1w`) or a cron."""
    if end < start:
        raise BackfillError("--to is before --from")
    found: list[datetime] = []
    match = _DURATION.match(every.strip())
    if match:
        step = timedelta(**{_UNITS[match[2]]: int(match[1])})
        if step <= timedelta(0):
            raise BackfillError(f"--every {every!r}: must be positive")
        current = start
        while current <= end:
            found.append(current)
            current = current + step if match[2] in "mh" else _add_calendar(current, step)
            if len(found) > MAX_PARTITIONS:
                raise BackfillError(
                    f"more than {MAX_PARTITIONS} partitions: narrow --from/--to or widen --every"
                )
        return found
    from cronsim import CronSim, CronSimError

    try:
        cron = CronSim(every, start - timedelta(seconds=1))
    except CronSimError as exc:
        raise BackfillError(
            f"--every {every!r}: not a duration (1d, 6h) nor a cron expression ({exc})"
        ) from None
    for moment in cron:
        if moment > end:
            break
        found.append(moment)
        if len(found) > MAX_PARTITIONS:
            raise BackfillError(f"more than {MAX_PARTITIONS} partitions: narrow --from/--to or widen --every")
    return found


def _add_calendar(moment: datetime, step: timedelta) -> datetime:
    """Days and weeks step in wall-clock time, so a daily partition stays at midnight across DST."""
    naive = moment.replace(tzinfo=None) + step
    return naive.replace(tzinfo=moment.tzinfo)


def check_params(schema: dict[str, Any] | None, params: dict[str, Any], deployment: str) -> None:
    """Names the deployment does not take and values its parameter schema refuses fail here, before any
    run is created: the server accepts them, and then every run crashes on the worker."""
    if not params:
        return
    schema = schema or {}
    known = set(schema.get("properties") or {})
    unknown = sorted(set(params) - known)
    if unknown:
        listed = ", ".join(sorted(known)) or "none"
        raise BackfillError(
            f"--param {', '.join(unknown)}: not a parameter of deployment {deployment} (known: {listed})"
        )
    from prefect.utilities.schema_tools import validate

    errors = validate(params, schema, ignore_required=True)
    if errors:
        first = errors[0]
        name = ".".join(str(p) for p in first.path) or next(iter(params))
        raise BackfillError(f"--param {name}: {first.message} (deployment {deployment}'s parameter schema)")


def params_hash(params: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(params, sort_keys=True, default=str).encode()).hexdigest()[:12]


def backfill_id(deployment: str, parts: list[datetime], params: dict[str, Any]) -> str:
    """Same deployment, partitions and parameters -> same id (so `status` finds a rerun's runs too)."""
    basis = json.dumps([deployment, [p.isoformat() for p in parts], params], sort_keys=True, default=str)
    return hashlib.sha256(basis.encode()).hexdigest()[:10]


def idempotency_key(deployment: str, partition: datetime, phash: str, attempt: int = 0) -> str:
    key = f"backfill:{deployment}:{partition.isoformat()}:{phash}"
    return key if attempt == 0 else f"{key}:rerun-{attempt}"


@dataclass
class ExistingRun:
    id: str
    name: str
    state: str  # state type: COMPLETED, FAILED, SCHEDULED, RUNNING, ...
    stale: bool = False  # RUNNING without a heartbeat for longer than stale_after: its worker is gone


@dataclass
class PlanItem:
    partition: datetime
    action: Action
    idempotency_key: str
    existing: list[ExistingRun] = field(default_factory=list)

    @property
    def creates(self) -> bool:
        return self.action in ("create", "rerun")

    def as_dict(self) -> dict[str, Any]:
        latest = self.existing[-1] if self.existing else None
        return {
            "partition": self.partition.isoformat(),
            "action": self.action,
            "idempotency_key": self.idempotency_key,
            "existing_run": latest.name if latest else None,
            "existing_state": latest.state if latest else None,
            "existing_stale": latest.stale if latest else False,
        }


def plan(
    deployment: str,
    parts: Iterable[datetime],
    existing: dict[datetime, list[ExistingRun]],
    params: dict[str, Any],
    reprocess: Reprocess,
    order: Order,
) -> list[PlanItem]:
    """What to do per partition: create, rerun, or skip (completed, failed, or still active). A stale
    run (RUNNING, no heartbeat) counts as failed: `--reprocess failed|all` reruns its partition."""
    phash = params_hash(params)
    items = []
    for part in sorted(parts, reverse=order == "desc"):
        runs = existing.get(part, [])
        latest = runs[-1] if runs else None
        action: Action
        if latest is None:
            action = "create"
        elif latest.state not in TERMINAL and not latest.stale:
            action = "skip-active"
        elif latest.state == "COMPLETED":
            action = "rerun" if reprocess == "all" else "skip-completed"
        else:
            action = "rerun" if reprocess in ("failed", "all") else "skip-failed"
        attempt = len(runs) if action == "rerun" else 0
        items.append(PlanItem(part, action, idempotency_key(deployment, part, phash, attempt), runs))
    return items


def normalise_as_of(value: Any) -> datetime | None:
    if isinstance(value, datetime):
        return value
    if isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value)
        except ValueError:
            return None
        return moment if moment.tzinfo else None
    return None


# ------------------------------------------------------------------------------------------------ Prefect
class Backfiller:
    """Reads and creates flow runs through the Prefect API (sync client)."""

    def __init__(self, client: Any, stale_after: timedelta = DEFAULT_STALE_AFTER):
        self.client = client
        self.stale_after = stale_after

    def deployment(self, name: str) -> Any:
        """`flow/deployment`, or a deployment name alone (scaleops names flows after deployments)."""
        from prefect.exceptions import ObjectNotFound

        candidates = [name] if "/" in name else [f"{name}/{name}"]
        for full in candidates:
            try:
                return self.client.read_deployment_by_name(full)
            except ObjectNotFound:
                continue
        from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterName

        found = self.client.read_deployments(
            deployment_filter=DeploymentFilter(name=DeploymentFilterName(any_=[name.split("/")[-1]]))
        )
        if len(found) == 1:
            return found[0]
        raise BackfillError(f"deployment {name!r} not found (deploy first: prefect --no-prompt deploy --all)")

    def existing_runs(self, deployment_id: Any, parts: list[datetime]) -> dict[datetime, list[ExistingRun]]:
        """Runs of this deployment whose `as_of` is one of the partitions, oldest first."""
        from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId
        from prefect.client.schemas.sorting import FlowRunSort

        wanted = {p.timestamp(): p for p in parts}
        found: dict[datetime, list[ExistingRun]] = {}
        running: dict[str, tuple[ExistingRun, datetime | None]] = {}
        offset = 0
        while True:
            page = self.client.read_flow_runs(
                deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment_id])),
                sort=FlowRunSort.EXPECTED_START_TIME_ASC,
                limit=200,
                offset=offset,
            )
            for run in page:
                as_of = normalise_as_of((run.parameters or {}).get("as_of"))
                if as_of is None or as_of.timestamp() not in wanted:
                    continue
                state = run.state_type.value if run.state_type else "UNKNOWN"
                existing = ExistingRun(str(run.id), run.name, state)
                found.setdefault(wanted[as_of.timestamp()], []).append(existing)
                if state == "RUNNING":
                    running[existing.id] = (existing, run.start_time)
            if len(page) < 200:
                break
            offset += 200
        self.mark_stale(running)
        return found

    def mark_stale(self, running: dict[str, tuple[ExistingRun, datetime | None]]) -> None:
        """Set `stale` on RUNNING runs that started before the window and sent no heartbeat within it."""
        from prefect.types._datetime import now

        since = now("UTC") - self.stale_after
        candidates = [rid for rid, (_, started) in running.items() if started is not None and started < since]
        alive: set[str] = set()
        for start in range(0, len(candidates), 50):
            alive |= self.heartbeats_since([UUID(r) for r in candidates[start : start + 50]], since)
        for rid in candidates:
            if rid not in alive:
                running[rid][0].stale = True

    def heartbeats_since(self, run_ids: list[UUID], since: datetime) -> set[str]:
        """Ids of these runs that sent a heartbeat event since `since`."""
        from prefect.events.filters import (
            EventFilter,
            EventNameFilter,
            EventOccurredFilter,
            EventResourceFilter,
        )

        event_filter = EventFilter(
            occurred=EventOccurredFilter(since=since),  # type: ignore[arg-type]  # a datetime is what it holds
            event=EventNameFilter(name=[HEARTBEAT_EVENT]),
            resource=EventResourceFilter(id=[f"prefect.flow-run.{r}" for r in run_ids]),
        )
        alive: set[str] = set()
        page = self.client.read_events(filter=event_filter, limit=50)  # the most the server allows
        while True:
            alive |= {e.resource.id.removeprefix("prefect.flow-run.") for e in page.events}
            if not page.next_page or len(alive) == len(run_ids):
                return alive
            page = self.client.read_events_page(page.next_page)

    def crash_stale(self, run: ExistingRun) -> None:
        """Mark a stale run Crashed (what Prefect's zombie automation does), freeing its concurrency slot."""
        from prefect.states import Crashed

        minutes = int(self.stale_after.total_seconds() // 60)
        self.client.set_flow_run_state(
            UUID(run.id),
            Crashed(
                message=f"no heartbeat for {minutes} min: its worker is gone (marked by scaleops backfill)"
            ),
            force=True,
        )

    def create(
        self, deployment_id: Any, item: PlanItem, params: dict[str, Any], bid: str, sequence: int
    ) -> ExistingRun:
        from prefect.states import Scheduled
        from prefect.types._datetime import now

        run = self.client.create_flow_run_from_deployment(
            deployment_id,
            parameters={**params, "as_of": item.partition.isoformat()},
            tags=["backfill", f"backfill:{bid}"],
            idempotency_key=item.idempotency_key,
            # one millisecond apart, so workers pick them up in the planned order
            state=Scheduled(scheduled_time=now("UTC") + timedelta(milliseconds=sequence)),
        )
        return ExistingRun(str(run.id), run.name, run.state_type.value if run.state_type else "SCHEDULED")

    def states(self, run_ids: list[str]) -> dict[str, str]:
        from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

        states: dict[str, str] = {}
        for start in range(0, len(run_ids), 200):
            chunk = run_ids[start : start + 200]
            runs = self.client.read_flow_runs(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[UUID(r) for r in chunk])),
                limit=len(chunk),
            )
            for run in runs:
                states[str(run.id)] = run.state_type.value if run.state_type else "UNKNOWN"
        return states

    def runs_of_backfill(self, bid: str) -> list[Any]:
        from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterTags

        runs: list[Any] = []
        offset = 0
        while True:
            page = self.client.read_flow_runs(
                flow_run_filter=FlowRunFilter(tags=FlowRunFilterTags(all_=[f"backfill:{bid}"])),
                limit=200,
                offset=offset,
            )
            runs.extend(page)
            if len(page) < 200:
                return runs
            offset += 200


def execute(
    backfiller: Backfiller,
    deployment_id: Any,
    items: list[PlanItem],
    params: dict[str, Any],
    bid: str,
    *,
    max_active: int | None,
    wait: bool,
    poll_seconds: float = 2.0,
    on_progress: Callable[[int, int, dict[str, str]], None] | None = None,
) -> dict[str, str]:
    """Create the planned runs (at most `max_active` unfinished at once when set) and, with `wait`,
    wait until every created run is finished. Returns run id -> state type."""
    todo = [item for item in items if item.creates]
    for item in todo:  # a stale run still holds its concurrency slot: crash it before its partition reruns
        if item.existing and item.existing[-1].stale:
            backfiller.crash_stale(item.existing[-1])
    created: list[str] = []
    states: dict[str, str] = {}
    sequence = 0
    while True:
        active = [rid for rid in created if states.get(rid, "SCHEDULED") not in TERMINAL]
        while todo and (max_active is None or len(active) < max_active):
            run = backfiller.create(deployment_id, todo.pop(0), params, bid, sequence)
            sequence += 1
            created.append(run.id)
            states[run.id] = run.state
            active.append(run.id)
        if not wait and not todo:
            return states
        if created:
            states.update(backfiller.states(created))
        finished = sum(1 for rid in created if states.get(rid) in TERMINAL)
        if on_progress:
            on_progress(finished, len(created) + len(todo), states)
        if not todo and finished == len(created):
            return states
        time.sleep(poll_seconds)
