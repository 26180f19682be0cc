"""cache-warming vs `psql COPY ... | redis-cli --pipe` vs `redis-benchmark -t set -P 64` (the ceiling).

    .venv/bin/python -m bench.cache_warming [--rows 1000000] [--profile] [--keep-rows] [--info-every 25]

Needs the sandbox's PostgreSQL and Prefect (brought up if missing). Each contender writes the same rows
(`bench.cache_rows`: key, ~200-byte value, hotness) with `SET key value EX ttl±10%` into its own fresh,
private redis-server (started here on a free port in a temp dir, stopped at the end), flushed between
runs. The flow runs in-process against the sandbox's Prefect server; its keys/s is the warm step's
(the report's `keys_per_second`); the whole flow run's wall time is printed too. The ceiling is
`redis-benchmark -t set -P 64 -r N -n N` (random keys: real key creation). `bench.cache_rows` is dropped at
the end (the sandbox's later backup-verification runs would dump it) unless `--keep-rows`.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import json
import os
import pstats
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parent.parent
TABLE = "bench.cache_rows"
PREFIX = "bench:item:"
TTL, JITTER = 3600, 0.1

# RESP built by PostgreSQL, one command per row; psql prints each row followed by "\n", so the row ends in
# chr(13) and psql completes the "\r\n". (COPY's text format would escape the CRs, see below.)
CR = "chr(13)||chr(10)"
RESP_SQL = (
    f"select '*5'||{CR}||'$3'||{CR}||'SET'||{CR}||'$'||octet_length('{PREFIX}'||k)||{CR}||'{PREFIX}'||k||{CR}"
    f"||'$'||octet_length(v)||{CR}||v||{CR}||'$2'||{CR}||'EX'||{CR}"
    f"||'$'||length(t::text)||{CR}||t::text||chr(13)"
    f" from (select k, v, ({TTL * (1 - JITTER):.0f} + floor(random() * {2 * TTL * JITTER + 1:.0f}))::int as t"
    f" from {TABLE} order by hits desc) as r"
)
# COPY TO STDOUT escapes CR/LF in text format, so the COPY form sends Redis inline commands (same SETs).
INLINE_SQL = (
    f"select 'SET {PREFIX}'||k||' '||v||' EX '||({TTL * (1 - JITTER):.0f} + floor(random() * "
    f"{2 * TTL * JITTER + 1:.0f}))::int from {TABLE} order by hits desc"
)


def pg_env(dsn: str) -> dict[str, str]:
    split = urlsplit(dsn)
    return {
        **os.environ,
        "PGHOST": split.hostname or "127.0.0.1",
        "PGPORT": str(split.port or 5432),
        "PGUSER": split.username or "postgres",
        "PGPASSWORD": split.password or "",
        "PGDATABASE": split.path.lstrip("/") or "postgres",
    }


def seed(dsn: str, rows: int) -> None:
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("create schema if not exists bench")
        exists = conn.execute("select to_regclass(%s) is not null", (TABLE,)).fetchone()
        count = conn.execute(f"select count(*) from {TABLE}").fetchone() if exists and exists[0] else (0,)
        if count and count[0] == rows:
            return
        conn.execute(f"drop table if exists {TABLE}")
        conn.execute(
            f"create table {TABLE} as select i::text as k,"
            " md5(i::text) || repeat('v', 168) as v, (%s - i) as hits"
            " from generate_series(1, %s) as i",
            (rows, rows),
        )
        conn.execute(f"analyze {TABLE}")


@contextlib.contextmanager
def private_redis() -> Iterator[int]:
    from scaleops.sandbox.procs import free_port

    port = free_port()
    with tempfile.TemporaryDirectory(prefix="scaleops-bench-redis-") as tmp:
        proc = subprocess.Popen(
            [
                shutil.which("redis-server") or "redis-server",
                "--port",
                str(port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                tmp,
                "--maxmemory",
                "2gb",
                "--maxmemory-policy",
                "allkeys-lru",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            for _ in range(100):
                if redis_cli(port, "ping").strip() == "PONG":
                    break
                time.sleep(0.05)
            yield port
        finally:
            proc.terminate()
            proc.wait(timeout=10)


def redis_cli(port: int, *args: str) -> str:
    result = subprocess.run(
        ["redis-cli", "-p", str(port), *args], capture_output=True, text=True, check=False
    )
    return result.stdout


def dbsize(port: int) -> int:
    return int(redis_cli(port, "dbsize").strip() or 0)


def run_pipe(port: int, dsn: str, psql_args: list[str]) -> tuple[float, int]:
    """`psql ... | redis-cli --pipe` as two processes joined by a pipe (no shell)."""
    redis_cli(port, "flushall")
    started = time.perf_counter()
    psql = subprocess.Popen(["psql", "-X", "-q", *psql_args], env=pg_env(dsn), stdout=subprocess.PIPE)
    cli = subprocess.Popen(
        ["redis-cli", "-p", str(port), "--pipe"], stdin=psql.stdout, stdout=subprocess.DEVNULL
    )
    assert psql.stdout is not None
    psql.stdout.close()
    if cli.wait() != 0 or psql.wait() != 0:
        raise RuntimeError("the psql | redis-cli --pipe baseline failed")
    return time.perf_counter() - started, dbsize(port)


def run_flow(port: int, rows: int, profile: bool) -> tuple[Any, float]:
    from flows.cache_warming import cache_warming

    os.environ["SCALEOPS_REDIS__URL"] = f"redis://127.0.0.1:{port}/0"
    os.environ["SCALEOPS_CACHE__WARM_SETS"] = json.dumps(
        {
            "bench": {
                "query": f"select k, v from {TABLE} order by hits desc",
                "key_prefix": PREFIX,
                "ttl_seconds": TTL,
                "ttl_jitter": JITTER,
            }
        }
    )
    redis_cli(port, "flushall")
    started = time.perf_counter()
    if profile:
        profiler = cProfile.Profile()
        report = profiler.runcall(cache_warming, warm_set="bench", invalidate=False)
        pstats.Stats(profiler).sort_stats("tottime").print_stats(12)
    else:
        report = cache_warming(warm_set="bench", invalidate=False)
    return report, time.perf_counter() - started


def redis_benchmark(port: int, rows: int) -> float:
    redis_cli(port, "flushall")
    out = subprocess.run(
        # -r: random keys out of `rows` (without it every SET overwrites one key: no key creation at all)
        [
            *("redis-benchmark", "-p", str(port), "-t", "set", "-P", "64"),
            *("-r", str(rows), "-n", str(rows), "-d", "200", "-q"),
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    match = re.search(r"SET: ([\d.]+) requests per second", out.replace("\r", "\n"))
    return float(match.group(1)) if match else 0.0


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="bench.cache_warming")
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--profile", action="store_true", help="cProfile the flow run")
    parser.add_argument(
        "--keep-rows",
        action="store_true",
        help=f"leave {TABLE} in the sandbox for the next run (dropped by default)",
    )
    parser.add_argument(
        "--info-every",
        type=int,
        default=None,
        help="ask INFO memory every N batches (default: the warmer's, 25; 1 = before issue 17)",
    )
    parser.add_argument(
        "--batch-sizes", default="", help="comma-separated: also time the flow's warm step at each batch size"
    )
    args = parser.parse_args(argv)
    if args.info_every is not None:
        import tasks.cache.redis

        tasks.cache.redis.INFO_EVERY_BATCHES = args.info_every

    from scaleops.core.settings import Settings
    from scaleops.sandbox.manager import Sandbox, apply_env

    sandbox = Sandbox(Settings(), ROOT / ".sandbox")
    sandbox.up(["postgres", "prefect"])
    env = sandbox.env()
    apply_env(env)
    dsn = env["SCALEOPS_POSTGRES__DSN"]
    seed(dsn, args.rows)
    try:
        return measure(args, env, dsn)
    finally:
        if not args.keep_rows:  # later backup-verification runs would dump and restore millions of rows
            drop_rows(dsn)


def drop_rows(dsn: str) -> None:
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"drop table if exists {TABLE}")
        with contextlib.suppress(psycopg.errors.DependentObjectsStillExist):
            conn.execute("drop schema if exists bench")  # only when empty: another bench's tables stay


def measure(args: argparse.Namespace, env: dict[str, str], dsn: str) -> int:
    from prefect.settings import PREFECT_API_URL, temporary_settings

    rows = args.rows
    print(f"rows: {rows:,} (~200-byte values), SET ... EX {TTL}±{JITTER:.0%}, fresh private redis-server")
    with private_redis() as port, temporary_settings(updates={PREFECT_API_URL: env["PREFECT_API_URL"]}):
        copy_s, copy_keys = run_pipe(port, dsn, ["-c", f"COPY ({INLINE_SQL}) TO STDOUT"])
        resp_s, resp_keys = run_pipe(port, dsn, ["-At", "-v", "FETCH_COUNT=20000", "-c", RESP_SQL])
        report, flow_wall = run_flow(port, rows, args.profile)
        flow_keys = report.keys_written  # dbsize also counts the warm set's state hash
        ceiling = redis_benchmark(port, rows)
        sweep = []
        for size in [int(x) for x in args.batch_sizes.split(",") if x.strip()]:
            os.environ["SCALEOPS_CACHE__BATCH_SIZE"] = str(size)
            sweep.append((size, run_flow(port, rows, False)[0].keys_per_second))
        os.environ.pop("SCALEOPS_CACHE__BATCH_SIZE", None)
    baseline = max(copy_keys / copy_s, resp_keys / resp_s)
    flow_rate = report.keys_per_second
    lines = [
        ("psql COPY (inline SETs) | redis-cli --pipe", copy_keys, copy_s, copy_keys / copy_s),
        ("psql -At FETCH_COUNT (RESP) | redis-cli --pipe", resp_keys, resp_s, resp_keys / resp_s),
        ("cache-warming flow: warm step", report.keys_written, report.seconds, flow_rate),
        ("cache-warming flow: whole flow run (Prefect)", flow_keys, flow_wall, flow_keys / flow_wall),
        (
            "redis-benchmark -t set -P 64 -r N -n N -d 200 (ceiling)",
            rows,
            rows / ceiling if ceiling else 0,
            ceiling,
        ),
    ]
    print(f"{'contender':50} {'keys':>10} {'seconds':>8} {'keys/s':>10}")
    for name, keys, seconds, rate in lines:
        print(f"{name:50} {keys:>10,} {seconds:>8.2f} {rate:>10,.0f}")
    print(f"flow warm step / best pipe baseline: {flow_rate / baseline:.2f}x")
    print(f"whole flow run / best pipe baseline: {(flow_keys / flow_wall) / baseline:.2f}x")
    print(f"best pipe baseline / redis-benchmark ceiling: {baseline / ceiling:.2f}x" if ceiling else "")
    if ceiling:
        print(f"flow warm step / redis-benchmark ceiling: {flow_rate / ceiling:.2f}x")
    for size, rate in sweep:
        print(f"batch size {size:>6}: warm step {rate:>10,.0f} keys/s")
    return 0


if __name__ == "__main__":
    import sys

    raise SystemExit(main(sys.argv[1:]))
