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

from scaleops.core.duties import duty_flow
from scaleops.core.redaction import protect
from scaleops.core.reporting import publish_report, utcnow
from scaleops.core.settings import load_settings
from tasks.cache.redis import (
    WarmPlan,
    cache_snapshot,
    hit_rate_since,
    invalidate_changed_rows,
    invalidate_vanished_rows,
    save_cache_state,
    ttl_bounds,
    warm_keys,
)
from tasks.cache.report import CacheWarmingReport, render_markdown
from tasks.cache.source import inspect_warm_set, pick_warm_set

NAMESPACE = "cache"
# A budget check projects used memory with this much per key on top of the payload before INFO has
# measured the real cost; the noeviction refusal uses the same figure.
KEY_OVERHEAD_BYTES = 96


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
