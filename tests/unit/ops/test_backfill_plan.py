"""Backfill planning without a server: partitions, idempotency keys, what is skipped or rerun."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from scaleops.ops.backfill import (
    BackfillError,
    ExistingRun,
    backfill_id,
    idempotency_key,
    params_hash,
    parse_tz,
    parse_when,
    partitions,
    plan,
)

UTC = ZoneInfo("UTC")


def d(day: int, hour: int = 0, tz: ZoneInfo = UTC) -> datetime:
    return datetime(2026, 11, day, hour, tzinfo=tz)


def test_daily_partitions_are_inclusive() -> None:
    assert partitions(d(1), d(3), "1d") == [d(1), d(2), d(3)]
    assert partitions(d(1), d(1, 18), "6h") == [d(1, 0), d(1, 6), d(1, 12), d(1, 18)]


def test_cron_partitions() -> None:
    assert partitions(d(1), d(2), "0 12 * * *") == [d(1, 12)]
    assert len(partitions(d(1), d(2), "0 */6 * * *")) == 5  # 00, 06, 12, 18, and 00 of the 2nd


def test_daily_partitions_stay_at_midnight_across_dst() -> None:
    berlin = ZoneInfo("Europe/Berlin")
    parts = partitions(datetime(2026, 10, 24, tzinfo=berlin), datetime(2026, 10, 27, tzinfo=berlin), "1d")
    assert [p.hour for p in parts] == [0, 0, 0, 0]
    assert parts[2].timestamp() - parts[1].timestamp() == 25 * 3600  # the night clocks go back


@pytest.mark.parametrize(
    ("args", "words"),
    [
        ((d(3), d(1), "1d"), "--to is before --from"),
        ((d(1), d(3), "every tuesday"), "--every"),
        ((d(1), d(3), "0d"), "positive"),
    ],
)
def test_bad_partitions(args: tuple[datetime, datetime, str], words: str) -> None:
    with pytest.raises(BackfillError, match=words):
        partitions(*args)


def test_too_many_partitions_is_refused() -> None:
    with pytest.raises(BackfillError, match="more than"):
        partitions(d(1), d(20), "1m")


def test_parse_inputs() -> None:
    berlin = parse_tz("Europe/Berlin")
    assert parse_when("2026-11-01", berlin, "--from") == datetime(2026, 11, 1, tzinfo=berlin)
    assert parse_when("2026-11-01T06:00:00+00:00", berlin, "--from") == d(1, 6)
    with pytest.raises(BackfillError, match="--from"):
        parse_when("first of november", berlin, "--from")
    with pytest.raises(BackfillError, match="--tz"):
        parse_tz("Mars/Olympus")


def test_keys_and_ids_are_deterministic() -> None:
    phash = params_hash({"databases": ["app"]})
    assert phash == params_hash({"databases": ["app"]}) != params_hash({"databases": ["other"]})
    key = idempotency_key("backup-verification", d(1), phash)
    assert key == f"backfill:backup-verification:2026-11-01T00:00:00+00:00:{phash}"
    assert idempotency_key("backup-verification", d(1), phash, attempt=2) == f"{key}:rerun-2"
    parts = [d(1), d(2)]
    assert (
        backfill_id("x", parts, {}) == backfill_id("x", list(parts), {}) != backfill_id("x", parts, {"a": 1})
    )


def run(state: str) -> ExistingRun:
    return ExistingRun(id=state.lower(), name=f"run-{state.lower()}", state=state)


EXISTING = {d(2): [run("COMPLETED")], d(3): [run("FAILED")], d(4): [run("RUNNING")], d(5): [run("SCHEDULED")]}


@pytest.mark.parametrize(
    ("reprocess", "actions"),
    [
        ("none", ["create", "skip-completed", "skip-failed", "skip-active", "skip-active"]),
        ("failed", ["create", "skip-completed", "rerun", "skip-active", "skip-active"]),
        ("all", ["create", "rerun", "rerun", "skip-active", "skip-active"]),
    ],
)
def test_plan_actions(reprocess: str, actions: list[str]) -> None:
    items = plan("dep", [d(i) for i in range(1, 6)], EXISTING, {}, reprocess, "asc")  # type: ignore[arg-type]
    assert [i.action for i in items] == actions
    reruns = [i for i in items if i.action == "rerun"]
    assert all(i.idempotency_key.endswith(":rerun-1") for i in reruns)


def test_plan_order() -> None:
    items = plan("dep", [d(1), d(2), d(3)], {}, {}, "none", "desc")
    assert [i.partition for i in items] == [d(3), d(2), d(1)]


# ---------------------------------------------------------------------------------- issue 18.4: zombies
def test_a_stale_running_run_counts_as_failed() -> None:
    """A run orphaned by a lost worker stays RUNNING: without heartbeats it is stale, and reprocessed."""
    zombie = {d(1): [ExistingRun("r1", "zombie", "RUNNING", stale=True)]}
    alive = {d(1): [ExistingRun("r1", "busy", "RUNNING")]}
    assert [i.action for i in plan("dep", [d(1)], zombie, {}, "none", "asc")] == ["skip-failed"]
    assert [i.action for i in plan("dep", [d(1)], zombie, {}, "failed", "asc")] == ["rerun"]
    assert [i.action for i in plan("dep", [d(1)], zombie, {}, "all", "asc")] == ["rerun"]
    assert [i.action for i in plan("dep", [d(1)], alive, {}, "all", "asc")] == ["skip-active"]
    (item,) = plan("dep", [d(1)], zombie, {}, "failed", "asc")
    assert item.as_dict()["existing_stale"] is True


class FakeEvents:
    """The slice of Prefect's client that stale detection uses: heartbeat events and state changes."""

    def __init__(self, beating: set[str]):
        self.beating = beating
        self.crashed: list[tuple[Any, Any]] = []
        self.filters: list[Any] = []

    def read_events(self, filter: Any, limit: int) -> Any:
        from types import SimpleNamespace

        self.filters.append(filter)
        wanted = [r.removeprefix("prefect.flow-run.") for r in filter.resource.id]
        events = [
            SimpleNamespace(resource=SimpleNamespace(id=f"prefect.flow-run.{r}"))
            for r in wanted
            if r in self.beating
        ]
        return SimpleNamespace(events=events, next_page=None)

    def set_flow_run_state(self, run_id: Any, state: Any, force: bool) -> None:
        self.crashed.append((run_id, state))


def test_stale_means_started_before_the_window_and_no_heartbeat_within_it() -> None:
    import uuid
    from datetime import UTC as DT_UTC
    from datetime import datetime as dt
    from datetime import timedelta

    from scaleops.ops.backfill import HEARTBEAT_EVENT, Backfiller

    ids = [str(uuid.uuid4()) for _ in range(3)]
    zombie, beating, young = (ExistingRun(i, f"run-{n}", "RUNNING") for n, i in enumerate(ids))
    client = FakeEvents(beating={ids[1]})
    backfiller = Backfiller(client, stale_after=timedelta(minutes=10))
    long_ago = dt.now(DT_UTC) - timedelta(hours=2)
    just_now = dt.now(DT_UTC) - timedelta(minutes=1)
    backfiller.mark_stale(
        {ids[0]: (zombie, long_ago), ids[1]: (beating, long_ago), ids[2]: (young, just_now)}
    )
    assert (zombie.stale, beating.stale, young.stale) == (True, False, False)
    (asked,) = client.filters
    assert asked.event.name == [HEARTBEAT_EVENT]
    assert sorted(asked.resource.id) == sorted(f"prefect.flow-run.{i}" for i in ids[:2])  # not the young one

    backfiller.crash_stale(zombie)
    ((run_id, state),) = client.crashed
    assert str(run_id) == ids[0] and state.type.value == "CRASHED" and "no heartbeat" in state.message


def test_execute_crashes_a_stale_run_before_its_partition_reruns() -> None:
    from scaleops.ops.backfill import execute

    calls: list[str] = []

    class Recorder:
        def crash_stale(self, run: ExistingRun) -> None:
            calls.append(f"crash {run.id}")

        def create(self, deployment_id: Any, item: Any, params: Any, bid: str, sequence: int) -> ExistingRun:
            calls.append(f"create {item.partition.day}")
            return ExistingRun(f"new-{sequence}", "new", "SCHEDULED")

    zombie = {d(1): [ExistingRun("z1", "zombie", "RUNNING", stale=True)]}
    items = plan("dep", [d(1), d(2)], zombie, {}, "failed", "asc")
    execute(Recorder(), "dep-id", items, {}, "bid", max_active=None, wait=False)  # type: ignore[arg-type]
    assert calls == ["crash z1", "create 1", "create 2"]


def test_backfill_status_names_what_each_partition_came_to() -> None:
    from scaleops.cli.backfill import partition_result

    assert partition_result("COMPLETED", "Completed") == "ok"
    assert partition_result("COMPLETED", "Completed with warnings") == "warnings"
    assert partition_result("FAILED", "Problems found") == "problems"
    assert partition_result("FAILED", "Could not check") == "failed"
    assert partition_result("CRASHED", "Crashed") == "failed"
    assert partition_result("RUNNING", "Running") == "running"
    assert partition_result(None, None) == "unknown"
