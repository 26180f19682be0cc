"""Duty `cache-warming`: load the keys traffic will ask for into Redis before it asks.

Run it after a deploy, a failover or a flush, or when an alert reports a falling hit rate. It streams a
warm set (SQL in settings, hottest rows first) from PostgreSQL into Redis (standalone or cluster) with
pipelined `SET key value EX ttl` (TTL spread so keys do not expire together), stops before the memory
budget would be passed (never an eviction or an OOM), deletes keys whose rows changed or vanished since
the last run, and reports the hit rate traffic saw since the previous run.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated, Any, Literal

from pydantic import Field

from scaleops.duties import duty_flow
from scaleops.redaction import protect
from scaleops.reporting import DutyReport, publish_report, utcnow
from scaleops.settings import Settings, WarmSet, load_settings
from tasks.postgres import inspect_warm_set
from tasks.redis import (
    WarmPlan,
    cache_snapshot,
    hit_rate_since,
    invalidate_changed_rows,
    invalidate_vanished_rows,
    save_cache_state,
    ttl_bounds,
    warm_keys,
)

NAMESPACE = "cache"
# A budget check projects used memory with this much per key on top of the payload before INFO has
# measured the real cost; the noeviction refusal uses the same figure.
KEY_OVERHEAD_BYTES = 96


class CacheWarmingReport(DutyReport):
    duty: str = "cache-warming"
    warm_set: str = ""
    target: str = "standalone"
    dry_run: bool = False
    keys_written: int = Field(default=0, description="keys Redis acknowledged (dry run: would write)")
    bytes_written: int = Field(default=0, description="key + value bytes of those keys")
    invalidated: int = Field(default=0, description="keys deleted because their rows changed or vanished")
    invalidated_changed: int = 0
    invalidated_vanished: int = 0
    skipped: int = Field(default=0, description="rows with a NULL key or value")
    rows_read: int = 0
    stopped_by_budget: bool = False
    budget_detail: str = ""
    seconds: float = 0.0
    keys_per_second: float = 0.0
    hit_rate_since_last_run: float | None = None
    hit_rate_note: str = ""
    ttl_range_seconds: tuple[int, int] = (0, 0)
    memory_budget_bytes: int = 0
    used_memory_before: int = 0
    used_memory_after: int = 0
    bytes_per_key: float = 0.0
    evictions_during_run: int = 0
    watermark: datetime | None = None
    notes: list[str] = Field(default_factory=list)


def pick_warm_set(settings: Settings, name: str | None) -> tuple[str, WarmSet]:
    sets = settings.cache.warm_sets
    known = ", ".join(sorted(sets)) or "none configured"
    if name is None:
        if len(sets) != 1:
            raise ValueError(f"warm_set: choose one of the warm sets in SCALEOPS_CACHE__WARM_SETS ({known})")
        name = next(iter(sets))
    if name not in sets:
        raise ValueError(f"warm_set: unknown warm set {name!r}; SCALEOPS_CACHE__WARM_SETS has: {known}")
    return name, sets[name]


def render_markdown(report: CacheWarmingReport) -> str:
    verdict = "OK" if report.ok else "PROBLEMS FOUND"
    rate = report.hit_rate_since_last_run
    lines = [
        f"# Cache warming `{report.warm_set}` → {report.target}: {verdict}"
        + (" (dry run)" if report.dry_run else ""),
        "",
        "| | |",
        "|---|---|",
        f"| keys written | {report.keys_written:,} ({report.bytes_written:,} B of keys + values) |",
        f"| rows read / skipped (NULL) | {report.rows_read:,} / {report.skipped:,} |",
        f"| invalidated (changed + vanished) | {report.invalidated:,} "
        f"({report.invalidated_changed:,} + {report.invalidated_vanished:,}) |",
        f"| stopped by budget | {'**yes**' if report.stopped_by_budget else 'no'} {report.budget_detail} |",
        f"| speed | {report.keys_per_second:,.0f} keys/s over {report.seconds:.2f} s |",
        f"| TTL range | {report.ttl_range_seconds[0]}–{report.ttl_range_seconds[1]} s |",
        f"| used memory before → after | {report.used_memory_before:,} → {report.used_memory_after:,} B "
        f"(budget {report.memory_budget_bytes:,} B) |",
        f"| evictions during the run | {report.evictions_during_run} |",
        f"| hit rate since last run | {'n/a' if rate is None else f'{rate:.1%}'} ({report.hit_rate_note}) |",
    ]
    if report.problems:
        lines += ["", "## Problems", *[f"- {p}" for p in report.problems]]
    if report.notes:
        lines += ["", "## Notes", *[f"- {n}" for n in report.notes]]
    return "\n".join(lines)


def _check(value: Any, ok: bool, name: str, rule: str) -> None:
    if value is not None and not ok:
        raise ValueError(f"{name}: {value!r} is not valid ({rule})")


@duty_flow("cache-warming", NAMESPACE)
def cache_warming(
    warm_set: str | None = None,
    limit: Annotated[int, Field(ge=1)] | None = None,
    target: Literal["standalone", "cluster"] = "standalone",
    memory_budget: Annotated[float, Field(gt=0, le=1)] = 0.8,
    ttl_seconds: Annotated[int, Field(ge=1)] | None = None,
    ttl_jitter: Annotated[float, Field(ge=0, lt=1)] | None = None,
    invalidate: bool = True,
    dry_run: bool = False,
    as_of: datetime | None = None,
) -> CacheWarmingReport:
    """Warm `warm_set` (default: the only one configured) into Redis, hottest keys first."""
    settings = load_settings()
    redactor = protect(settings.secrets())
    _check(limit, limit is None or limit >= 1, "limit", "at least 1")
    _check(memory_budget, 0 < memory_budget <= 1, "memory_budget", "a fraction in (0, 1]")
    _check(ttl_seconds, ttl_seconds is None or ttl_seconds >= 1, "ttl_seconds", "at least 1")
    _check(ttl_jitter, ttl_jitter is None or 0 <= ttl_jitter < 1, "ttl_jitter", "in [0, 1)")
    if target == "cluster" and not settings.redis.cluster_url:
        raise ValueError("target: cluster, but SCALEOPS_REDIS__CLUSTER_URL is not set")
    name, ws = pick_warm_set(settings, warm_set)
    report = CacheWarmingReport(as_of=as_of or utcnow(), warm_set=name, target=target, dry_run=dry_run)

    plan = WarmPlan(
        name=name,
        query=ws.query,
        columns=2,
        serializer=ws.serializer,
        key_prefix=ws.key_prefix,
        ttl_seconds=ttl_seconds or ws.ttl_seconds,
        ttl_jitter=ws.ttl_jitter if ttl_jitter is None else ttl_jitter,
        limit=limit,
        memory_budget=memory_budget,
        batch_size=settings.cache.batch_size,
        target=target,
        invalidate=invalidate,
        dry_run=dry_run,
        state_prefix=settings.cache.state_prefix,
    )
    report.ttl_range_seconds = ttl_bounds(plan.ttl_seconds, plan.ttl_jitter)

    before = cache_snapshot(settings, plan)
    report.used_memory_before = before.used_memory
    report.memory_budget_bytes = int(before.memory_limit * memory_budget)
    report.hit_rate_since_last_run, report.hit_rate_note = hit_rate_since(
        before.previous, before.hits, before.misses
    )
    noeviction = "noeviction" in before.policies
    previous_watermark = before.previous.get("watermark")
    facts = inspect_warm_set(
        settings,
        name,
        ws.query,
        ws.serializer,
        limit,
        estimate=noeviction,
        watermark=invalidate and not previous_watermark,
    )
    plan.columns = facts.columns

    if noeviction and facts.estimate_rows is not None and facts.estimate_bytes is not None:
        needed = facts.estimate_bytes + facts.estimate_rows * KEY_OVERHEAD_BYTES
        if before.used_memory + needed > report.memory_budget_bytes:
            raise ValueError(
                f"refusing to warm {name!r}: maxmemory-policy is noeviction and the budget "
                f"({memory_budget:.0%} of {before.memory_limit:,} B = {report.memory_budget_bytes:,} B) "
                f"cannot hold the set: {before.used_memory:,} B used + ~{needed:,} B for "
                f"{facts.estimate_rows:,} keys; lower `limit`, raise `memory_budget`, or add memory"
            )

    watermark: datetime | None = None
    if invalidate and plan.columns == 3:
        if previous_watermark:
            watermark = datetime.fromisoformat(previous_watermark)
            since = watermark - timedelta(seconds=settings.cache.invalidation_overlap_seconds)
            changed = invalidate_changed_rows(settings, plan, since)
            report.invalidated_changed = changed["changed"] if dry_run else changed["removed"]
            if changed["newest"] is not None and changed["newest"] > watermark:
                watermark = changed["newest"]
        else:
            watermark = facts.max_updated_at
            report.notes.append("first run with invalidation: the watermark starts now, nothing invalidated")
    elif invalidate:
        report.notes.append("the warm set's query has no updated_at column: nothing to invalidate")
    report.watermark = watermark

    result = warm_keys(settings, plan)
    report.keys_written = result.keys_written
    report.bytes_written = result.bytes_written
    report.skipped = result.skipped
    report.rows_read = result.rows_read
    report.stopped_by_budget = result.stopped_by_budget
    report.budget_detail = result.budget_detail
    report.seconds = round(result.seconds, 3)
    report.keys_per_second = round(result.keys_written / result.seconds, 1) if result.seconds else 0.0
    report.bytes_per_key = round(result.bytes_per_key, 1)

    if plan.tracks_keys:
        vanished = invalidate_vanished_rows(settings, plan)
        report.invalidated_vanished = vanished["removed"]
    report.invalidated = report.invalidated_changed + report.invalidated_vanished

    after = cache_snapshot(settings, plan)
    report.used_memory_after = after.used_memory
    report.evictions_during_run = max(0, after.evicted_keys - before.evicted_keys)
    if report.stopped_by_budget:
        report.problem(
            f"stopped by the memory budget after {report.keys_written:,} keys: {report.budget_detail}; "
            "the hottest keys are in, the rest are not (raise maxmemory or memory_budget, or lower limit)"
        )
    if report.evictions_during_run and not dry_run:
        report.problem(
            f"Redis evicted {report.evictions_during_run} keys during the run (other writers, or the "
            "per-key estimate was low): lower memory_budget"
        )
    if not dry_run:
        state = {"hits": str(before.hits), "misses": str(before.misses), "run_at": report.as_of.isoformat()}
        state["keys_written"] = str(report.keys_written)
        if watermark is not None:
            state["watermark"] = watermark.isoformat()
        save_cache_state(settings, plan, state)

    report.finish()
    publish_report(
        report,
        namespace=NAMESPACE,
        outcome="warmed",
        resource_id=f"scaleops.cache.{name}",
        resource_labels={"scaleops.cache.target": target},
        markdown=render_markdown(report),
        redactor=redactor,
    )
    return report
