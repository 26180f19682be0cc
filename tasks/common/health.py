"""The shape every health probe returns, shared by the per-system modules."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, Literal

import boto3  # noqa: F401 - imported once here, not first inside concurrent task threads

# Imported once here: tasks run in threads, and a first import of redis from two threads fails.
import redis.cluster  # noqa: F401
from pydantic import BaseModel

from scaleops.core.clients import (
    PostgresRole,
    S3Region,
    postgres_connect,
    redis_client,
    redis_cluster_client,
    s3_bucket,
    s3_client,
)
from scaleops.core.retry import io_task
from scaleops.core.settings import Settings

RedisTarget = Literal["standalone", "cluster"]


class Check(BaseModel):
    """One system probed: what, whether it is usable, and what we saw."""

    system: str
    target: str
    ok: bool
    detail: str
    seconds: float = 0.0
    facts: dict[str, Any] = {}


def timed_check(system: str, target: str, probe: Callable[[], tuple[bool, str, dict[str, Any]]]) -> Check:
    """Run `probe` and turn its verdict, or the exception it raised, into a Check."""
    started = time.perf_counter()
    try:
        ok, detail, facts = probe()
    except Exception as exc:  # a probe that raises is a failed check, named after the exception
        ok, detail, facts = False, f"{type(exc).__name__}: {exc}", {}
    return Check(
        system=system,
        target=target,
        ok=ok,
        detail=detail,
        seconds=round(time.perf_counter() - started, 4),
        facts=facts,
    )


def server_facts(conn: Any) -> dict[str, Any]:
    """Version, recovery state and, on a replica, how far behind replay is."""
    row = conn.execute(
        "select current_setting('server_version'), pg_is_in_recovery(),"
        " case when pg_is_in_recovery()"
        "   then extract(epoch from now() - coalesce(pg_last_xact_replay_timestamp(), now())) end"
    ).fetchone()
    version, in_recovery, replay_delay = row
    facts: dict[str, Any] = {"server_version": version, "in_recovery": bool(in_recovery)}
    if replay_delay is not None:
        facts["replay_delay_seconds"] = float(replay_delay)
    return facts


def check_postgres(settings: Settings, role: PostgresRole) -> Check:
    """Connect as `role`; a replica must be in recovery, a primary must not."""

    def probe() -> tuple[bool, str, dict[str, Any]]:
        with postgres_connect(settings, role, autocommit=True) as conn:
            facts = server_facts(conn)
        want_recovery = role == "replica"
        if facts["in_recovery"] != want_recovery:
            expected = "in recovery (a replica)" if want_recovery else "writable (a primary)"
            return False, f"expected the server to be {expected}", facts
        return True, f"PostgreSQL {facts['server_version']}", facts

    return timed_check(f"postgres_{role}", role, probe)


@io_task(task_run_name="postgres-health-{role}")
def postgres_health(settings: Settings, role: PostgresRole) -> Check:
    return check_postgres(settings, role)


def memory_facts(info: dict[str, Any]) -> dict[str, Any]:
    """The part of INFO memory that capacity decisions need."""
    return {
        "used_memory": int(info.get("used_memory", 0)),
        "maxmemory": int(info.get("maxmemory", 0)),
        "maxmemory_policy": info.get("maxmemory_policy"),
    }


def check_redis(settings: Settings, target: RedisTarget) -> Check:
    """PING, memory limits, and for a cluster that every slot is served (cluster_state:ok)."""

    def probe() -> tuple[bool, str, dict[str, Any]]:
        if target == "standalone":
            with redis_client(settings) as client:
                client.ping()
                facts = memory_facts(client.info("memory"))
            return True, "PONG", facts
        client = redis_cluster_client(settings)
        try:
            info = client.cluster_info()
            state = info.get("cluster_state")
            facts = {"cluster_state": state, "nodes": len(client.get_primaries())}
        finally:
            client.close()
        return state == "ok", f"cluster_state:{state}", facts

    return timed_check(f"redis_{target}", target, probe)


@io_task(task_run_name="redis-health-{target}")
def redis_health(settings: Settings, target: RedisTarget) -> Check:
    return check_redis(settings, target)


def bucket_facts(client: Any, bucket: str) -> dict[str, Any]:
    """The bucket's region as S3 reports it (us-east-1 answers None)."""
    client.head_bucket(Bucket=bucket)
    location = client.get_bucket_location(Bucket=bucket).get("LocationConstraint") or "us-east-1"
    return {"bucket": bucket, "region": location}


def check_bucket(settings: Settings, region: S3Region) -> Check:
    """The bucket exists, answers, and lives in the region the settings say."""
    bucket = s3_bucket(settings, region)
    expected = settings.s3.primary_region if region == "primary" else settings.s3.replica_region

    def probe() -> tuple[bool, str, dict[str, Any]]:
        facts = bucket_facts(s3_client(settings, region), bucket)
        if facts["region"] != expected:
            return False, f"bucket is in {facts['region']}, settings say {expected}", facts
        return True, f"s3://{bucket} in {expected}", facts

    return timed_check(f"s3_{region}", f"s3://{bucket}", probe)


@io_task(task_run_name="s3-health-{region}")
def s3_health(settings: Settings, region: S3Region) -> Check:
    return check_bucket(settings, region)
