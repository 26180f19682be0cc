"""What one cache-warming run will do, decided before it writes anything: the warm plan from settings
and parameters, the refusal when a `noeviction` Redis cannot hold the set, and which changed rows to
invalidate since the last run's watermark."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from scaleops.core.settings import Settings
from tasks.cache.redis import CacheSnapshot, RedisTarget, WarmPlan, invalidate_changed_rows
from tasks.cache.source import WarmSetFacts, pick_warm_set

if TYPE_CHECKING:
    from tasks.cache.report import CacheWarmingReport

# A budget check projects used memory with this much per key on top of the payload before INFO has
# measured the real cost; the noeviction refusal uses the same figure.
KEY_OVERHEAD_BYTES = 96


def _check(value: Any, ok: bool, name: str, rule: str) -> None:
    if value is not None and not ok:
        raise ValueError(f"{name}: {value!r} is not valid ({rule})")


def make_plan(
    settings: Settings,
    warm_set: str | None,
    *,
    limit: int | None,
    target: RedisTarget,
    memory_budget: float,
    ttl_seconds: int | None,
    ttl_jitter: float | None,
    invalidate: bool,
    dry_run: bool,
) -> WarmPlan:
    """The run's plan: the warm set's settings overridden by the parameters (bad values named)."""
    _check(limit, limit is None or limit >= 1, "limit", "at least 1")
    _check(memory_budget, 0 < memory_budget <= 1, "memory_budget", "a fraction in (0, 1]")
    _check(ttl_seconds, ttl_seconds is None or ttl_seconds >= 1, "ttl_seconds", "at least 1")
    _check(ttl_jitter, ttl_jitter is None or 0 <= ttl_jitter < 1, "ttl_jitter", "in [0, 1)")
    if target == "cluster" and not settings.redis.cluster_url:
        raise ValueError("target: cluster, but SCALEOPS_REDIS__CLUSTER_URL is not set")
    name, ws = pick_warm_set(settings, warm_set)
    return WarmPlan(
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


def refuse_if_over_budget(plan: WarmPlan, before: CacheSnapshot, facts: WarmSetFacts, budget: int) -> None:
    """With `noeviction`, a set the budget cannot hold would end in OOM errors: refuse before writing."""
    if facts.estimate_rows is None or facts.estimate_bytes is None:
        return
    needed = facts.estimate_bytes + facts.estimate_rows * KEY_OVERHEAD_BYTES
    if before.used_memory + needed > budget:
        raise ValueError(
            f"refusing to warm {plan.name!r}: maxmemory-policy is noeviction and the budget "
            f"({plan.memory_budget:.0%} of {before.memory_limit:,} B = {budget:,} B) "
            f"cannot hold the set: {before.used_memory:,} B used + ~{needed:,} B for "
            f"{facts.estimate_rows:,} keys; lower `limit`, raise `memory_budget`, or add memory"
        )


def invalidate_since_last_run(
    settings: Settings, plan: WarmPlan, before: CacheSnapshot, facts: WarmSetFacts, report: CacheWarmingReport
) -> datetime | None:
    """Delete the keys whose rows changed since the previous run's watermark; return the new watermark
    (the first run with invalidation only starts one)."""
    previous = before.previous.get("watermark")
    if not plan.invalidate:
        return None
    if plan.columns != 3:
        report.notes.append("the warm set's query has no updated_at column: nothing to invalidate")
        return None
    if not previous:
        report.notes.append("first run with invalidation: the watermark starts now, nothing invalidated")
        return facts.max_updated_at
    watermark = datetime.fromisoformat(previous)
    since = watermark - timedelta(seconds=settings.cache.invalidation_overlap_seconds)
    changed = invalidate_changed_rows(settings, plan, since)
    report.invalidated_changed = changed["changed"] if plan.dry_run else changed["removed"]
    if changed["newest"] is not None and changed["newest"] > watermark:
        watermark = changed["newest"]
    return watermark
