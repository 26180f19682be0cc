"""Duty `cache-warming`: load the keys traffic will ask for into Redis before it asks.

Run it after a deploy, a failover or a flush, or when an alert reports a falling hit rate. It streams a
warm set (SQL in settings, hottest rows first) from PostgreSQL into Redis (standalone or cluster) with
pipelined `SET key value EX ttl` (TTL spread so keys do not expire together), stops before the memory
budget would be passed (never an eviction or an OOM), deletes keys whose rows changed or vanished since
the last run, and reports the hit rate traffic saw since the previous run.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import Field

from scaleops.core.duties import duty
from scaleops.core.reporting import utcnow
from scaleops.core.settings import Settings
from tasks.cache.plan import invalidate_since_last_run, make_plan, refuse_if_over_budget
from tasks.cache.redis import (
    cache_snapshot,
    invalidate_vanished_rows,
    save_cache_state,
    ttl_bounds,
    warm_keys,
)
from tasks.cache.report import CacheWarmingReport
from tasks.cache.source import inspect_warm_set


def needs(settings: Settings) -> list[str]:
    return [] if settings.cache.warm_sets else ["no warm sets configured (SCALEOPS_CACHE__WARM_SETS)"]


@duty(
    "cache-warming",
    namespace="cache",
    report=CacheWarmingReport,
    summary="stream a warm set from PostgreSQL into Redis (cluster aware, TTL jitter) inside a memory "
    "budget, invalidate changed rows, report the hit rate",
    needs=needs,
)
def cache_warming(
    settings: Settings,
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
    """Warm `warm_set` (default: the only one configured) into Redis, hottest keys first.

    Args:
        warm_set: a warm set of SCALEOPS_CACHE__WARM_SETS (default: the only one configured).
        limit: at most this many keys (hottest first).
        target: standalone Redis or the Redis Cluster.
        memory_budget: fraction (0-1] of maxmemory the run may fill; it stops before.
        ttl_seconds: override the warm set's TTL.
        ttl_jitter: override the warm set's TTL spread (a fraction in [0, 1)).
        invalidate: delete keys whose rows changed or vanished since the last run.
        dry_run: read and measure, write nothing.
        as_of: the run's clock (default now).
    """
    plan = make_plan(
        settings,
        warm_set,
        limit=limit,
        target=target,
        memory_budget=memory_budget,
        ttl_seconds=ttl_seconds,
        ttl_jitter=ttl_jitter,
        invalidate=invalidate,
        dry_run=dry_run,
    )
    report = CacheWarmingReport(
        as_of=as_of or utcnow(),
        warm_set=plan.name,
        target=target,
        dry_run=dry_run,
        ttl_range_seconds=ttl_bounds(plan.ttl_seconds, plan.ttl_jitter),
    )

    before = cache_snapshot(settings, plan)
    report.record_before(before, memory_budget)
    noeviction = "noeviction" in before.policies
    facts = inspect_warm_set(
        settings,
        plan.name,
        plan.query,
        plan.serializer,
        limit,
        estimate=noeviction,
        watermark=invalidate and not before.previous.get("watermark"),
    )
    plan.columns = facts.columns
    if noeviction:
        refuse_if_over_budget(plan, before, facts, report.memory_budget_bytes)

    report.watermark = invalidate_since_last_run(settings, plan, before, facts, report)
    report.record_warm(warm_keys(settings, plan))
    if plan.tracks_keys:
        report.invalidated_vanished = invalidate_vanished_rows(settings, plan)["removed"]
    report.record_after(before, cache_snapshot(settings, plan))
    if not dry_run:
        save_cache_state(settings, plan, report.state_to_keep(before))
    return report
