"""Backfill planning without a server: partitions, idempotency keys, what is skipped or rerun."""

from __future__ import annotations

from datetime import datetime
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
