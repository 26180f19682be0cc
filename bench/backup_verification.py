"""Benchmarks for duty backup-verification, each beside the tool an expert would use instead.

1. replication: our listing-based check vs `rclone check` (size + MD5) on the same two sandbox buckets,
   N objects including multipart ones, with known faults injected in the replica region. Prints both
   times, the ratio, and whether the findings agree (rclone cannot hash multipart objects).
2. backup+restore: our backup (snapshot row counts, SHA-256 while streaming, manifest) and restore test
   (from the replica region, SHA-256 check, great-expectations checks, drop) of a database of at least
   1,000,000 rows vs the bare `pg_dump | upload` and `download | pg_restore` pipeline on the same data.

Run: `.venv/bin/python -m bench backup_verification` (needs `scaleops sandbox up`; reads its env).
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import subprocess
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

import psycopg
from psycopg import sql

from scaleops.core.clients import postgres_dsn, s3_bucket, s3_client
from scaleops.core.settings import Settings, load_settings
from scaleops.sandbox.manager import Sandbox, apply_env
from tasks.backup.dump import dump_to_s3, libpq_target, pg_tool, server_conninfo
from tasks.backup.replication import check_replication, wait_for_objects
from tasks.backup.restore import restore_and_check, scratch_name
from tasks.common.s3 import list_objects, upload_stream

MIB = 1024 * 1024


def sandbox_settings() -> Settings:
    sandbox = Sandbox(Settings())
    apply_env(sandbox.env())
    return load_settings()


# ------------------------------------------------------------------------------------------------ replication
def populate(
    settings: Settings, prefix: str, objects: int, multipart: int, checksums: bool = True
) -> dict[str, str]:
    """Upload `objects` objects (of which `multipart` are 9 MiB multipart ones, 5 MiB parts), wait for the
    sandbox replicator to copy them, then damage the replica. Returns key -> expected finding."""
    primary, pbucket = s3_client(settings, "primary"), s3_bucket(settings, "primary")
    replica, rbucket = s3_client(settings, "replica"), s3_bucket(settings, "replica")
    small = objects - multipart
    sizes: dict[str, int] = {}

    def put_small(i: int) -> None:
        key = f"{prefix}small/{i:06d}"
        body = f"object {i} ".encode() * (10 + i % 100)
        primary.put_object(Bucket=pbucket, Key=key, Body=body)
        sizes[key] = len(body)

    def put_multipart(i: int) -> None:
        key = f"{prefix}multipart/{i:04d}"
        body = os.urandom(9 * MIB)
        upload_stream(primary, pbucket, key, io.BytesIO(body), part_size=5 * MIB)
        sizes[key] = len(body)

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=16) as pool:
        list(pool.map(put_multipart, range(multipart)))
        list(pool.map(put_small, range(small)))
    print(f"  uploaded {objects} objects in {time.perf_counter() - started:.1f} s; copying to the replica")
    # Copy as the sandbox replicator does (8 MiB parts: multipart copies get other ETags; the full-object
    # checksum kept, as CRR keeps it, unless `checksums` is off), in parallel: the replicator alone copies
    # one object at a time. It then sees equal ETags and records them.
    from scaleops.sandbox.replicator import copy_object

    def copy(key: str) -> None:
        if checksums:
            copy_object(primary, pbucket, replica, rbucket, key, sizes[key])
        else:  # boto3's managed copy: no full-object checksum on the replica (the check must hash)
            replica.copy({"Bucket": pbucket, "Key": key}, rbucket, key, SourceClient=primary)

    with ThreadPoolExecutor(max_workers=16) as pool:
        list(pool.map(copy, sizes))
    found = wait_for_objects(replica, rbucket, sizes, timeout=600, interval=3)
    if found != set(sizes):
        raise SystemExit(f"only {len(found)} of {len(sizes)} objects reached the replica")
    wait_for_replicator_passes(settings, 2)  # a whole pass after our copies: it will not copy them again
    print(f"  replicated after {time.perf_counter() - started:.1f} s")

    expected: dict[str, str] = {}
    keys = sorted(k for k in sizes if "/small/" in k)
    for key in keys[:3]:
        replica.delete_object(Bucket=rbucket, Key=key)
        expected[key] = "missing"
    for key in keys[3:6]:
        body = primary.get_object(Bucket=pbucket, Key=key)["Body"].read()
        replica.put_object(Bucket=rbucket, Key=key, Body=bytes([body[0] ^ 1]) + body[1:])
        expected[key] = "checksum_mismatch"
    for key in keys[6:8]:
        replica.put_object(Bucket=rbucket, Key=key, Body=b"grown" * 1000)
        expected[key] = "size_mismatch"
    for i in range(2):
        key = f"{prefix}extra/{i}"
        replica.put_object(Bucket=rbucket, Key=key, Body=b"only in the replica")
        expected[key] = "extra"
    if multipart:
        key = sorted(k for k in sizes if "/multipart/" in k)[0]
        body = bytearray(primary.get_object(Bucket=pbucket, Key=key)["Body"].read())
        body[MIB] ^= 1  # same size, one bit, multipart with another part size: only a hash finds it
        upload_stream(replica, rbucket, key, io.BytesIO(bytes(body)), part_size=8 * MIB)
        expected[key] = "checksum_mismatch"
    return expected


def wait_for_replicator_passes(settings: Settings, passes: int) -> None:
    """Wait until the sandbox replicator has finished `passes` more passes (it touches a heartbeat)."""
    heartbeat = settings.sandbox.dir / "s3_replicator" / "heartbeat"
    seen = heartbeat.stat().st_mtime
    deadline = time.monotonic() + 600
    while passes and time.monotonic() < deadline:
        time.sleep(0.5)
        now = heartbeat.stat().st_mtime
        if now != seen:
            seen, passes = now, passes - 1


def rclone_check(settings: Settings, prefix: str) -> tuple[float, dict[str, str], str]:
    """`rclone check` primary vs replica (size + MD5); returns (seconds, key -> finding, summary)."""
    s3 = settings.s3
    env = {k: v for k, v in os.environ.items() if k != "AWS_CA_BUNDLE"}
    for name, region in (("PRIMARY", s3.primary_region), ("REPLICA", s3.replica_region)):
        env.update(
            {
                f"RCLONE_CONFIG_{name}_TYPE": "s3",
                f"RCLONE_CONFIG_{name}_PROVIDER": "Other",
                f"RCLONE_CONFIG_{name}_ENDPOINT": s3.endpoint_url or "",
                f"RCLONE_CONFIG_{name}_REGION": region,
                f"RCLONE_CONFIG_{name}_FORCE_PATH_STYLE": "true",
                f"RCLONE_CONFIG_{name}_ACCESS_KEY_ID": s3.access_key_id.get_secret_value()
                if s3.access_key_id
                else "",
                f"RCLONE_CONFIG_{name}_SECRET_ACCESS_KEY": s3.secret_access_key.get_secret_value()
                if s3.secret_access_key
                else "",
            }
        )
    with tempfile.TemporaryDirectory() as tmp:
        combined = os.path.join(tmp, "combined.txt")
        args = [
            shutil.which("rclone") or "/usr/bin/rclone",
            "check",
            f"primary:{s3.primary_bucket}/{prefix}",
            f"replica:{s3.replica_bucket}/{prefix}",
            "--combined",
            combined,
            "--checkers",
            "16",
        ]
        started = time.perf_counter()
        done = subprocess.run(args, env=env, capture_output=True, text=True, check=False)
        seconds = time.perf_counter() - started
        found: dict[str, str] = {}
        with open(combined) as lines:
            for line in lines:
                mark, _, path = line.rstrip("\n").partition(" ")
                kind = {"-": "missing", "+": "extra", "*": "differ", "!": "error"}.get(mark)
                if kind:
                    found[prefix + path] = kind
    counts = ("missing", "differences found", "errors while", "could not be checked", "matching files")
    summary = "; ".join(
        line.rsplit(": ", 1)[-1] for line in done.stderr.splitlines() if any(c in line for c in counts)
    )
    return seconds, found, summary


def bench_replication(
    settings: Settings, objects: int, multipart: int, rounds: int, checksums: bool = True
) -> None:
    prefix = f"bench/replication/{uuid.uuid4().hex[:8]}/"
    print(f"replication check: {objects} objects ({multipart} multipart, 9 MiB) under {prefix}")
    print(f"  replica copies {'keep' if checksums else 'lack'} the full-object checksum")
    expected = populate(settings, prefix, objects, multipart, checksums)
    primary, pbucket = s3_client(settings, "primary"), s3_bucket(settings, "primary")
    replica, rbucket = s3_client(settings, "replica"), s3_bucket(settings, "replica")
    try:
        rclone_times: list[float] = []
        ours_times: list[float] = []
        listing_times: list[float] = []
        for _ in range(rounds):  # alternate, best of: the machine is shared and timings are noisy
            seconds, rclone_found, summary = rclone_check(settings, prefix)
            rclone_times.append(seconds)
            started = time.perf_counter()
            diff = check_replication(
                primary,
                pbucket,
                replica,
                rbucket,
                prefix,
                now=datetime.now(UTC),
                sla_seconds=0.001,
                workers=16,
            )
            ours_times.append(time.perf_counter() - started)
            started = time.perf_counter()
            list_objects(primary, pbucket, prefix)
            listing_times.append(time.perf_counter() - started)
        ours_seconds, rclone_seconds = min(ours_times), min(rclone_times)
        rounded = {
            name: [round(t, 2) for t in ts] for name, ts in (("ours", ours_times), ("rclone", rclone_times))
        }
        print(f"  rounds (s): {rounded}")
        print(f"  (one region's listing alone, sequential: best {min(listing_times):.2f} s)")
        ours: dict[str, str] = {}
        for kind in ("missing", "extra", "size_mismatch", "checksum_mismatch"):
            ours.update({k: kind for k in getattr(diff, kind)})
        ours_vs_expected = ours == expected
        rclone_keys = set(rclone_found)
        visible_to_rclone = {k for k in expected if "/multipart/" not in k}
        agree = rclone_keys == visible_to_rclone and rclone_keys <= set(ours)
        hashed, summed = len(diff.to_hash), len(diff.by_checksum)
        print(
            f"  ours (best):   {ours_seconds:7.2f} s  findings {len(ours)} (multipart pairs: {summed} by "
            f"S3 checksums, {hashed} hashed)"
        )
        print(f"  rclone (best): {rclone_seconds:7.2f} s  findings {len(rclone_found)}  [{summary}]")
        print(f"  ratio ours/rclone: {ours_seconds / rclone_seconds:.2f}x")
        print(f"  ours == injected faults: {ours_vs_expected}; rclone == the faults it can see: {agree}")
        missed = sorted(set(expected) - rclone_keys)
        print(f"  found by ours only (rclone cannot hash multipart objects): {missed}")
    finally:
        for client, bucket in ((primary, pbucket), (replica, rbucket)):
            keys = list(list_objects(client, bucket, prefix))
            for i in range(0, len(keys), 1000):
                client.delete_objects(
                    Bucket=bucket, Delete={"Objects": [{"Key": k} for k in keys[i : i + 1000]]}
                )


# ------------------------------------------------------------------------------------------ backup+restore
def make_database(settings: Settings, name: str, rows: int) -> None:
    with psycopg.connect(postgres_dsn(settings), autocommit=True) as conn:
        conn.execute(sql.SQL("drop database if exists {} with (force)").format(sql.Identifier(name)))
        conn.execute(sql.SQL("create database {}").format(sql.Identifier(name)))
    with psycopg.connect(postgres_dsn(settings), dbname=name, autocommit=True) as conn:
        conn.execute(
            "create table transfers (id bigint primary key, account bigint not null,"
            " amount numeric(38,0) not null, tx_hash text not null, at timestamptz not null)"
        )
        conn.execute(
            "insert into transfers select g, g %% 50000, (g::bigint * 7919) %% 1000000007,"
            " md5(g::text) || md5((g + 1)::text), '2026-01-01'::timestamptz + g * interval '1 s'"
            " from generate_series(1, %s) g",
            (rows,),
        )
        conn.execute("vacuum analyze transfers")


def bare_backup(settings: Settings, database: str, key: str) -> None:
    """`pg_dump -Fc | upload` as an expert writes it in Python: boto3's managed multipart upload."""
    target, env = libpq_target(server_conninfo(settings, "primary"), database)
    proc = subprocess.Popen([pg_tool("pg_dump"), "-Fc", "--dbname", target], stdout=subprocess.PIPE, env=env)
    assert proc.stdout is not None
    s3_client(settings, "primary").upload_fileobj(proc.stdout, s3_bucket(settings, "primary"), key)
    if proc.wait() != 0:
        raise SystemExit("pg_dump failed")


def bare_restore(settings: Settings, database: str, key: str, scratch: str) -> None:
    """`download | pg_restore` into a fresh database (dropped afterwards, untimed)."""
    conninfo = server_conninfo(settings, "restore")
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute(sql.SQL("create database {}").format(sql.Identifier(scratch)))
    target, env = libpq_target(conninfo, scratch)
    proc = subprocess.Popen(
        [pg_tool("pg_restore"), "--no-owner", "--no-acl", "--dbname", target], stdin=subprocess.PIPE, env=env
    )
    assert proc.stdin is not None
    s3_client(settings, "replica").download_fileobj(s3_bucket(settings, "replica"), key, proc.stdin)
    proc.stdin.close()
    if proc.wait() != 0:
        raise SystemExit("pg_restore failed")


def drop(settings: Settings, name: str) -> None:
    with psycopg.connect(server_conninfo(settings, "restore"), autocommit=True) as conn:
        conn.execute(sql.SQL("drop database if exists {} with (force)").format(sql.Identifier(name)))


def wait_replica(settings: Settings, keys: list[str]) -> None:
    primary = list_objects(
        s3_client(settings, "primary"), s3_bucket(settings, "primary"), os.path.dirname(keys[0])
    )
    expected = {k: primary[k].size for k in keys}
    found = wait_for_objects(
        s3_client(settings, "replica"), s3_bucket(settings, "replica"), expected, timeout=300
    )
    if found != set(expected):
        raise SystemExit("backup never reached the replica region")


def bench_backup_restore(settings: Settings, rows: int, rounds: int) -> None:
    import great_expectations  # noqa: F401 - a one-time import (~10 s here), paid once per worker process

    database = "scaleops_bench_rows"
    prefix = f"bench/backup/{uuid.uuid4().hex[:8]}/"
    print(f"backup + restore test: {rows:,} rows in {database}; {rounds} round(s) each, best of")
    started = time.perf_counter()
    make_database(settings, database, rows)
    print(f"  created the database in {time.perf_counter() - started:.1f} s")
    primary, pbucket = s3_client(settings, "primary"), s3_bucket(settings, "primary")
    replica, rbucket = s3_client(settings, "replica"), s3_bucket(settings, "replica")
    part = settings.backup.part_size_mb * MIB
    ours: list[tuple[float, float]] = []
    bare: list[tuple[float, float]] = []
    try:
        for r in range(rounds):
            key = f"{prefix}ours-{r}.dump"
            t = time.perf_counter()
            manifest = dump_to_s3(
                server_conninfo(settings, "primary"), database, primary, pbucket, key, part_size=part
            )
            backup_s = time.perf_counter() - t
            wait_replica(settings, [key, key.removesuffix(".dump") + ".manifest.json"])
            scratch = scratch_name(database, datetime.now(UTC))
            t = time.perf_counter()
            result = restore_and_check(
                server_conninfo(settings, "restore"), replica, rbucket, database, key, scratch
            )
            restore_s = time.perf_counter() - t
            assert not result.checks_failed, result.checks_failed
            ours.append((backup_s, restore_s))

            key = f"{prefix}bare-{r}.dump"
            t = time.perf_counter()
            bare_backup(settings, database, key)
            bbackup_s = time.perf_counter() - t
            wait_replica(settings, [key])
            scratch = f"scaleops_restore_bare_{r}"
            t = time.perf_counter()
            bare_restore(settings, database, key, scratch)
            brestore_s = time.perf_counter() - t
            drop(settings, scratch)
            bare.append((bbackup_s, brestore_s))
            print(
                f"  round {r + 1}: ours backup {backup_s:.2f} s + restore test {restore_s:.2f} s "
                f"(restore {result.seconds:.2f}, checks {result.checks_seconds:.2f}); "
                f"bare {bbackup_s:.2f} s + {brestore_s:.2f} s; dump {manifest.bytes / MIB:.1f} MiB"
            )
        best_ours = min(a + b for a, b in ours)
        best_bare = min(a + b for a, b in bare)
        print(
            f"  ours (best):  {best_ours:.2f} s  (backup {min(a for a, _ in ours):.2f}, restore test "
            f"{min(b for _, b in ours):.2f})"
        )
        print(
            f"  bare (best):  {best_bare:.2f} s  (pg_dump|upload {min(a for a, _ in bare):.2f}, "
            f"download|pg_restore {min(b for _, b in bare):.2f})"
        )
        print(f"  overhead ratio ours/bare: {best_ours / best_bare:.2f}x")
    finally:
        drop(settings, database)
        for client, bucket in ((primary, pbucket), (replica, rbucket)):
            keys = list(list_objects(client, bucket, prefix))
            if keys:
                client.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": k} for k in keys]})


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="bench.backup_verification", description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=("replication", "restore"), default=None)
    parser.add_argument("--objects", type=int, default=10_000)
    parser.add_argument("--multipart", type=int, default=10)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument(
        "--no-checksums",
        action="store_true",
        help="copy replicas without full-object checksums (the check then hashes every multipart pair)",
    )
    args = parser.parse_args(argv)
    settings = sandbox_settings()
    if args.only in (None, "replication"):
        bench_replication(settings, args.objects, args.multipart, args.rounds, not args.no_checksums)
    if args.only in (None, "restore"):
        bench_backup_restore(settings, args.rows, args.rounds)
    return 0


if __name__ == "__main__":
    import sys

    raise SystemExit(main(sys.argv[1:]))
