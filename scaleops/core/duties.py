"""The registry of duties (the name people type -> its flow) and `duty_flow`, the decorator every
duty's flow is made with: a Prefect flow whose failures emit `scaleops.<namespace>.failed` and whose
exceptions leave with their secrets masked."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from scaleops.core.redaction import redacting
from scaleops.core.reporting import failure_hook


def duty_flow(name: str, namespace: str, **flow_options: Any) -> Callable[[Callable[..., Any]], Any]:
    """`@duty_flow("backup-verification", "backup")` instead of `@flow(...)` on a duty's flow."""
    from prefect import flow

    hook = failure_hook(namespace, name)

    def decorate(fn: Callable[..., Any]) -> Any:
        options = {"on_failure": [hook], "on_crashed": [hook], **flow_options}
        return flow(name=name, **options)(redacting(fn))

    return decorate


@dataclass(frozen=True)
class Duty:
    name: str  # CLI and deployment name
    flow: str  # "module:attribute"
    events: str  # event namespace: scaleops.<events>.<outcome>
    summary: str

    def load(self) -> Any:
        module, _, attribute = self.flow.partition(":")
        return getattr(importlib.import_module(module), attribute)


DUTIES: dict[str, Duty] = {
    d.name: d
    for d in (
        Duty(
            "preflight",
            "flows.preflight:preflight",
            "preflight",
            "check that every configured system answers (PostgreSQL primary and replica, Redis, "
            "Redis Cluster, both S3 regions)",
        ),
        Duty(
            "backup-verification",
            "flows.backup_verification:backup_verification",
            "backup",
            "back up each PostgreSQL database to S3, verify the replica region holds the same bytes, "
            "restore the newest backup from the replica region and check it, RPO/RTO, GFS retention",
        ),
        Duty(
            "cache-warming",
            "flows.cache_warming:cache_warming",
            "cache",
            "stream a warm set from PostgreSQL into Redis (cluster aware, TTL jitter) inside a memory "
            "budget, invalidate changed rows, report the hit rate",
        ),
        Duty(
            "l2-batch-posting",
            "flows.l2_batch_posting:l2_batch_posting",
            "l2",
            "post the PostgreSQL outbox to L2 chains in batches, exactly once, at the lowest fee",
        ),
        Duty(
            "capacity-forecast",
            "flows.capacity_forecast:capacity_forecast",
            "capacity",
            "forecast metric series (Prometheus, CloudWatch, CSV, PostgreSQL), date threshold breaches, "
            "recommend capacity and cost",
        ),
    )
}


def get_duty(name: str) -> Duty:
    try:
        return DUTIES[name]
    except KeyError:
        raise KeyError(f"unknown duty {name!r}; known duties: {', '.join(sorted(DUTIES))}") from None
