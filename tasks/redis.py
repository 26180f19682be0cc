"""Redis: the standalone cache and the Redis Cluster."""

from __future__ import annotations

from typing import Any, Literal

# Imported once here: tasks run in threads, and a first import of redis from two threads fails.
import redis.cluster  # noqa: F401

from scaleops.clients import redis_client, redis_cluster_client
from scaleops.retry import io_task
from scaleops.settings import Settings
from tasks.health import Check, timed_check

RedisTarget = Literal["standalone", "cluster"]


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
