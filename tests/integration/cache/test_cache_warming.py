"""cache-warming against the sandbox's PostgreSQL, Redis and Redis Cluster, plus private redis-servers
(small maxmemory for the budget, one to restart mid-run) started here on free ports and stopped after."""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import psycopg
import pytest
import redis
from redis.cluster import RedisCluster

from scaleops.sandbox.procs import free_port

pytestmark = pytest.mark.integration
SCHEMA = "scaleops_test_cache"


# ------------------------------------------------------------------------------------------------ helpers
class PrivateRedis:
    """A redis-server of the test's own on a free port in a temp dir; `restart()` loses every key."""

    def __init__(self, *args: str):
        self.port = free_port()
        self.args = args
        self.dir = tempfile.mkdtemp(prefix="scaleops-test-redis-")
        self.proc: subprocess.Popen[bytes] | None = None
        self.start()

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [
                shutil.which("redis-server") or "redis-server",
                *("--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"),
                *("--dir", self.dir, *self.args),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with contextlib.suppress(redis.ConnectionError):
                if self.client().ping():
                    return
            time.sleep(0.05)
        raise RuntimeError(f"private redis-server on {self.port} did not start")

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(timeout=10)
            self.proc = None

    def restart(self) -> None:
        self.kill()
        time.sleep(0.3)
        self.start()

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port, socket_timeout=5)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def close(self) -> None:
        self.kill()
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def private_redis() -> Iterator[Any]:
    made: list[PrivateRedis] = []

    def make(*args: str) -> PrivateRedis:
        made.append(PrivateRedis(*args))
        return made[-1]

    yield make
    for server in made:
        server.close()


@pytest.fixture(scope="module")
def pg(sandbox_env: dict[str, str]) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(sandbox_env["SCALEOPS_POSTGRES__DSN"], autocommit=True) as conn:
        conn.execute(f"drop schema if exists {SCHEMA} cascade")
        conn.execute(f"create schema {SCHEMA}")
        # pace(n): sleeps every 2,000th row, so a warm lasts long enough to restart Redis under it
        conn.execute(
            f"create function {SCHEMA}.pace(n bigint) returns boolean language plpgsql as $$"
            " begin if n % 2000 = 0 then perform pg_sleep(0.3); end if; return true; end $$"
        )
        yield conn
        conn.execute(f"drop schema if exists {SCHEMA} cascade")


def make_table(pg: psycopg.Connection[Any], rows: int, value_bytes: int = 50) -> str:
    """`key = n`, hotness falls with n (key 1 is hottest), value `v<n>-...`, updated_at."""
    table = f"{SCHEMA}.t_{uuid.uuid4().hex[:8]}"
    pg.execute(
        f"create table {table} as select n::bigint as n, n::text as key,"
        f" 'v' || n || '-' || repeat('x', {value_bytes}) as value, ({rows} - n) as hits,"
        " now() - interval '1 hour' as updated_at from generate_series(1, %s) as n",
        (rows,),
    )
    return table


def warm_set(query: str, prefix: str, **extra: Any) -> str:
    return json.dumps({"t": {"query": query, "key_prefix": prefix, **extra}})


def run_cli(env: dict[str, str], *params: str) -> subprocess.CompletedProcess[str]:
    args = [sys.executable, "-m", "scaleops.cli", "run", "cache-warming", "--json"]
    for p in params:
        args += ["--param", p]
    return subprocess.run(args, env={**os.environ, **env}, capture_output=True, text=True, timeout=240)


def run_flow(monkeypatch: pytest.MonkeyPatch, env: dict[str, str], **params: Any) -> dict[str, Any]:
    """The flow in this process (one Prefect flow run, no CLI start-up): its report as JSON data."""
    from flows.cache_warming import cache_warming

    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return dict(cache_warming(**params).model_dump(mode="json"))


def report_of(result: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    assert result.stdout, result.stderr
    return dict(json.loads(result.stdout))


# ------------------------------------------------------------------------------------------------ tests
def warmed_events(api: str, resource: str, since: str) -> list[dict[str, Any]]:
    import httpx

    body = {
        "filter": {
            "event": {"name": ["scaleops.cache.warmed"]},
            "resource": {"id": [resource]},
            "occurred": {"since": since},
        },
        "limit": 5,
    }
    return list(httpx.post(f"{api}/events/filter", json=body, timeout=10).json()["events"])


def test_sandbox_demo_warm_set_needs_nothing_but_the_sandbox_env(sandbox_env: dict[str, str]) -> None:
    from datetime import UTC, datetime

    since = datetime.now(UTC).isoformat()
    env = {k: v for k, v in sandbox_env.items()}
    result = run_cli(env)
    assert result.returncode == 0, result.stderr
    report = report_of(result)
    with psycopg.connect(sandbox_env["SCALEOPS_POSTGRES__DSN"]) as conn:
        rows = conn.execute("select count(*) from scaleops_demo.cache_source").fetchone()
    assert report["warm_set"] == "demo" and report["keys_written"] == rows[0]
    for field in ("ok", "target", "bytes_written", "invalidated", "skipped", "stopped_by_budget", "seconds"):
        assert field in report
    assert "keys_per_second" in report and "hit_rate_since_last_run" in report
    events: list[dict[str, Any]] = []
    for _ in range(50):  # the server stores events a moment after they are sent
        events = warmed_events(sandbox_env["PREFECT_API_URL"], "scaleops.cache.demo", since)
        if events:
            break
        time.sleep(0.2)
    assert events and events[0]["payload"]["keys_written"] == report["keys_written"]


def test_hottest_first_ttl_spread_and_cluster(
    sandbox_env: dict[str, str], pg: psycopg.Connection[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    table = make_table(pg, 2000)
    prefix = f"test:{uuid.uuid4().hex[:6]}:"
    pg.execute(f"update {table} set value = null where n = 3")  # NULL value: skipped, not written
    query = f"select key, value from {table} order by hits desc"
    sets = warm_set(query, prefix, ttl_seconds=1000, ttl_jitter=0.2)
    env = {**sandbox_env, "SCALEOPS_CACHE__WARM_SETS": sets}

    report = run_flow(monkeypatch, env, limit=500)
    assert report["ok"] and report["keys_written"] == 499 and report["skipped"] == 1
    client = redis.Redis.from_url(sandbox_env["SCALEOPS_REDIS__URL"])
    keys = [f"{prefix}{n}" for n in range(1, 501) if n != 3]
    assert all(client.exists(k) for k in keys)  # the 500 hottest rows, in order
    assert not client.exists(f"{prefix}501") and not client.exists(f"{prefix}3")
    assert client.get(f"{prefix}1").startswith(b"v1-")
    ttls = [client.ttl(k) for k in keys]
    # TTLs count down from when each key was written: allow for the seconds since the run started
    since_start = (datetime.now(UTC) - datetime.fromisoformat(report["started_at"])).total_seconds()
    assert all(800 - math.ceil(since_start) - 1 <= t <= 1200 for t in ttls)
    assert min(ttls) < 900 and max(ttls) > 1100  # spread over ttl × (1 ± 0.2), not one instant
    assert len(set(ttls)) > 100
    assert report["ttl_range_seconds"] == [800, 1200]

    cluster_report = run_flow(monkeypatch, env, limit=300, target="cluster")
    assert cluster_report["ok"] and cluster_report["target"] == "cluster"
    assert cluster_report["keys_written"] == 299
    cluster = RedisCluster.from_url(sandbox_env["SCALEOPS_REDIS__CLUSTER_URL"])
    try:
        written = [f"{prefix}{n}" for n in range(1, 301) if n != 3]
        assert sum(cluster.exists(k) for k in written) == 299
        assert not cluster.exists(f"{prefix}301")
        nodes = {cluster.get_node_from_key(k).name for k in written}
        assert len(nodes) == 3  # every primary got its slots' keys
    finally:
        cluster.close()


def test_budget_stop_without_evictions(
    sandbox_env: dict[str, str],
    pg: psycopg.Connection[Any],
    private_redis: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    server = private_redis("--maxmemory", "8mb", "--maxmemory-policy", "allkeys-lru")
    table = make_table(pg, 40_000, value_bytes=200)
    query = f"select key, value from {table} order by hits desc"
    env = {**sandbox_env, "SCALEOPS_REDIS__URL": server.url}
    env["SCALEOPS_CACHE__WARM_SETS"] = warm_set(query, "b:")

    result = run_cli(env, "memory_budget=0.8")
    assert result.returncode == 1, result.stderr  # completed, with a finding
    report = report_of(result)
    assert report["stopped_by_budget"] is True
    assert any("memory budget" in p for p in report["problems"])
    client = server.client()
    info = {**client.info("memory"), **client.info("stats")}
    assert info["evicted_keys"] == 0
    assert info["used_memory"] <= 0.8 * 8 * 1024 * 1024
    assert 0 < report["keys_written"] < 40_000
    written = report["keys_written"]
    # exactly the hottest prefix is in, and the report counts what is there
    assert client.exists(f"b:{written}") and not client.exists(f"b:{written + 1}")
    assert len(list(client.scan_iter("b:*", count=5000))) == written
    assert report["evictions_during_run"] == 0

    # noeviction: refuse up front when the budget cannot hold the set; nothing written
    client.flushall()
    client.config_set("maxmemory-policy", "noeviction")
    with pytest.raises(ValueError, match="refusing to warm 't': maxmemory-policy is noeviction"):
        run_flow(monkeypatch, env)
    assert client.dbsize() == 0


def test_invalidation_of_changed_and_deleted_rows(
    sandbox_env: dict[str, str], pg: psycopg.Connection[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    table = make_table(pg, 100)
    prefix = f"inv:{uuid.uuid4().hex[:6]}:"
    # `like '%'`: a literal % in a warm set's SQL must reach PostgreSQL intact in every statement
    query = f"select key, value, updated_at from {table} where key like '%' order by hits desc"
    env = {**sandbox_env, "SCALEOPS_CACHE__WARM_SETS": warm_set(query, prefix)}
    client = redis.Redis.from_url(sandbox_env["SCALEOPS_REDIS__URL"])

    first = run_flow(monkeypatch, env)
    assert first["ok"] and first["keys_written"] == 100 and first["invalidated"] == 0

    pg.execute(f"update {table} set value = 'new', updated_at = now() where n in (5, 50)")
    pg.execute(f"delete from {table} where n in (7, 60)")
    second = run_flow(monkeypatch, env, limit=30)
    assert second["ok"], second["problems"]
    assert second["invalidated_changed"] == 2  # rows 5 and 50
    assert second["invalidated_vanished"] == 2  # rows 7 and 60
    assert second["invalidated"] == 4
    assert client.get(f"{prefix}5") == b"new"  # changed and hot: deleted, then written fresh
    assert not client.exists(f"{prefix}50")  # changed, not among the 30 hottest: deleted
    assert not client.exists(f"{prefix}7") and not client.exists(f"{prefix}60")  # rows gone
    assert client.get(f"{prefix}40").startswith(b"v40-")  # unchanged, not rewritten: kept

    third = run_flow(monkeypatch, env, limit=30)  # nothing changed since: nothing to invalidate
    assert third["invalidated"] == 0

    # a key written two runs ago (outside the last runs' limit) is still tracked: its row vanishing counts
    pg.execute(f"delete from {table} where n = 80")
    dry = run_flow(monkeypatch, env, limit=30, dry_run=True)
    assert dry["dry_run"] and dry["keys_written"] == 30 and client.exists(f"{prefix}80")
    fourth = run_flow(monkeypatch, env, limit=30)
    assert fourth["invalidated_vanished"] == 1 and not client.exists(f"{prefix}80")


def test_redis_restart_mid_run_retries_or_fails_never_lies(
    sandbox_env: dict[str, str], pg: psycopg.Connection[Any], private_redis: Any
) -> None:
    server = private_redis()
    # generate_series streams rows in order, so pace() runs as rows are fetched (an ORDER BY over a
    # table would evaluate it for every row before the first one is returned, and pace nothing)
    query = (
        f"select n::text as key, 'v' || n as value from generate_series(1, 30000) as n where {SCHEMA}.pace(n)"
    )
    env = {**sandbox_env, "SCALEOPS_REDIS__URL": server.url}
    env["SCALEOPS_CACHE__WARM_SETS"] = warm_set(query, "r:")
    args = [sys.executable, "-m", "scaleops.cli", "run", "cache-warming", "--json"]
    proc = subprocess.Popen(
        args, env={**os.environ, **env}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    client = server.client()
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and proc.poll() is None:
        with contextlib.suppress(redis.ConnectionError):
            if client.dbsize() >= 4000:
                break
        time.sleep(0.05)
    assert proc.poll() is None, "the warm finished before Redis could be restarted"
    server.restart()  # every key written so far is lost
    stdout, stderr = proc.communicate(timeout=180)
    client = server.client()
    if proc.returncode == 0:  # the task retried and warmed again from the first row
        report = json.loads(stdout)
        assert report["keys_written"] == 30_000
        assert len(list(client.scan_iter("r:*", count=5000))) == report["keys_written"]
        assert "Retry" in stderr or "retry" in stderr.lower()
    else:  # a clean failure: exit 2, no report claiming keys
        assert proc.returncode == 2 and not stdout.strip()
        assert "failed" in stderr


def test_bad_settings_fail_fast_with_a_clear_message(
    sandbox_env: dict[str, str], pg: psycopg.Connection[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    from scaleops.core.settings import ConfigError

    table = make_table(pg, 10)
    good = f"select key, value from {table}"
    env = {**sandbox_env, "SCALEOPS_CACHE__WARM_SETS": warm_set(good, "x:")}

    # through the CLI: exit 2 and PostgreSQL's own words, never retried (a retry cannot fix SQL)
    bad_sql = run_cli({**env, "SCALEOPS_CACHE__WARM_SETS": warm_set(f"selec key from {table}", "x:")})
    assert bad_sql.returncode == 2
    assert "the query failed in PostgreSQL" in bad_sql.stderr and "syntax error" in bad_sql.stderr
    assert "Retrying" not in bad_sql.stderr

    with pytest.raises(ValueError, match="unknown warm set 'nope'; SCALEOPS_CACHE__WARM_SETS has: t"):
        run_flow(monkeypatch, env, warm_set="nope")
    with pytest.raises(ValueError, match="does not exist"):
        run_flow(monkeypatch, {"SCALEOPS_CACHE__WARM_SETS": warm_set("select 1, 2 from no_such_table", "x:")})
    with pytest.raises(ValueError, match="returns 1 columns"):
        run_flow(monkeypatch, {"SCALEOPS_CACHE__WARM_SETS": warm_set(f"select key from {table}", "x:")})
    with pytest.raises(ConfigError, match="SCALEOPS_CACHE__WARM_SETS__T__TTL_JITTER"):
        run_flow(monkeypatch, {"SCALEOPS_CACHE__WARM_SETS": warm_set(good, "x:", ttl_jitter=1.5)})
    monkeypatch.setenv("SCALEOPS_CACHE__WARM_SETS", warm_set(good, "x:"))
    with pytest.raises(Exception, match="memory_budget"):
        run_flow(monkeypatch, {}, memory_budget=1.5)
