"""Health probes: one `Check` per system (PostgreSQL, Redis, S3, HTTP endpoints, chain RPCs), a plain
probe function per system and a thin task over it. A failed probe names the setting to look at."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, Literal

import boto3  # noqa: F401 - imported once here, not first inside concurrent task threads
import httpx

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
from scaleops.core.endpoints import unreachable, what_failed
from scaleops.core.retry import io_task
from scaleops.core.settings import Settings

RedisTarget = Literal["standalone", "cluster"]


UNREACHABLE = "unreachable"  # in a Check's facts: the system did not answer at all (its setting is named)


class Check(BaseModel):
    """One system probed: what, whether it is usable, and what we saw."""

    system: str
    target: str
    ok: bool
    detail: str
    seconds: float = 0.0
    facts: dict[str, Any] = {}


def timed_check(
    system: str,
    target: str,
    probe: Callable[[], tuple[bool, str, dict[str, Any]]],
    settings: Settings | None = None,
) -> Check:
    """Run `probe` and turn its verdict, or the exception it raised, into a Check. A system that does
    not answer is named by its setting ('SCALEOPS_REDIS__URL: connection refused at ...') and marked
    `unreachable` in the facts; any other exception is named after its class."""
    started = time.perf_counter()
    try:
        ok, detail, facts = probe()
    except Exception as exc:  # a probe that raises is a failed check
        named = unreachable(exc, settings) if settings is not None else None
        if named:
            ok, detail, facts = False, named, {UNREACHABLE: True}
        else:
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

    return timed_check(f"postgres_{role}", role, probe, settings)


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

    return timed_check(f"redis_{target}", target, probe, settings)


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

    return timed_check(f"s3_{region}", f"s3://{bucket}", probe, settings)


@io_task(task_run_name="s3-health-{region}")
def s3_health(settings: Settings, region: S3Region) -> Check:
    return check_bucket(settings, region)


# ------------------------------------------------------------------------------------------------ endpoints
def check_http(system: str, url: str, path: str, setting: str, timeout: float = 10.0) -> Check:
    """An HTTP service answers 2xx at `path` (Prometheus and Alertmanager `/-/ready`, the bridge
    `/healthz`); a failure names the setting that points at it."""

    def probe() -> tuple[bool, str, dict[str, Any]]:
        try:
            answer = httpx.get(url.rstrip("/") + path, timeout=timeout)
        except httpx.TransportError as exc:  # nothing answered
            return False, f"{setting}: {what_failed(exc)} at {url}", {UNREACHABLE: True}
        except httpx.HTTPError as exc:
            return False, f"{setting}: {what_failed(exc)} at {url}", {}
        if answer.is_success:
            return True, f"HTTP {answer.status_code}", {}
        return False, f"{setting}: HTTP {answer.status_code} from {url}{path}", {}

    return timed_check(system, url, probe)


def check_chain(settings: Settings, name: str) -> Check:
    """A chain's RPC answers and is the chain the settings say (EVM `eth_chainId`, Solana `getHealth`)."""
    chain = settings.chains[name]
    setting = f"SCALEOPS_CHAINS__{name.upper()}__RPC_URL"
    method = "getHealth" if chain.kind == "solana" else "eth_chainId"

    def probe() -> tuple[bool, str, dict[str, Any]]:
        body = {"jsonrpc": "2.0", "id": 1, "method": method, "params": []}
        try:
            answer = httpx.post(chain.rpc_url, json=body, timeout=chain.rpc_timeout_seconds).json()
        except httpx.TransportError as exc:  # nothing answered
            return False, f"{setting}: {what_failed(exc)} at {chain.rpc_url}", {UNREACHABLE: True}
        except (httpx.HTTPError, ValueError) as exc:  # something answered, not JSON-RPC
            return False, f"{setting}: {what_failed(exc)} at {chain.rpc_url}", {}
        if "error" in answer or "result" not in answer:
            return False, f"{setting}: {method} answered {str(answer.get('error'))[:200]}", {}
        if chain.kind == "solana":
            return answer["result"] == "ok", f"getHealth: {answer['result']}", {}
        found = int(answer["result"], 16)
        if found != chain.chain_id:
            expected = f"SCALEOPS_CHAINS__{name.upper()}__CHAIN_ID says {chain.chain_id}"
            return False, f"{setting}: chain id {found}, {expected}", {}
        return True, f"chain id {found}", {"chain_id": found}

    return timed_check(f"chain_{name}", f"chain {name}", probe)


@io_task(task_run_name="endpoint-health-{system}")
def endpoint_health(settings: Settings, system: str) -> Check:
    """The task over the HTTP and chain probes of one system preflight names."""
    if system.startswith("chain_"):
        return check_chain(settings, system.removeprefix("chain_"))
    url, path, setting = endpoint_of(settings, system)
    return check_http(system, url, path, setting)


def endpoint_of(settings: Settings, system: str) -> tuple[str, str, str]:
    """(base URL, health path, setting) of an HTTP system preflight probes."""
    if system == "prometheus":
        return settings.capacity.prometheus_url or "", "/-/ready", "SCALEOPS_CAPACITY__PROMETHEUS_URL"
    if system == "alertmanager":
        return settings.alertmanager.url or "", "/-/ready", "SCALEOPS_ALERTMANAGER__URL"
    if system == "alert_bridge":
        return settings.alerts.url or "", "/healthz", "SCALEOPS_ALERTS__URL"
    raise ValueError(f"systems: unknown system {system!r}")
