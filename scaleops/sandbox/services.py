"""The sandbox's services: real servers on 127.0.0.1, each under `.sandbox/<name>/`.

A service knows how to start itself (detached, PID file), answer a cheap `probe()`, finish its set-up
once it answers (`ready()`: buckets, cluster slots, ...), describe itself (`url`, `env`) and stop by PID.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import pwd
import re
import shutil
import signal
import subprocess
import sys
import time
from glob import glob
from pathlib import Path
from typing import TYPE_CHECKING, Any

from scaleops.sandbox.probes import LOCAL, http_json, http_ok, http_request, redis_cluster_info, redis_ping
from scaleops.sandbox.procs import owned_pid, spawn, stop_pid

if TYPE_CHECKING:
    from scaleops.sandbox.manager import Sandbox

WORK_POOL = "scaleops"
PROJECT_ROOT = Path(__file__).resolve().parents[2]  # where prefect.yaml and flows/ live


class SandboxError(RuntimeError):
    """A sandbox service could not be started or checked; the message names the service and its log."""


class Service:
    name: str = ""
    requires: tuple[str, ...] = ()
    description: str = ""
    after_all: bool = False  # start only once every other selected service is healthy

    def __init__(self, sandbox: Sandbox):
        self.sb = sandbox

    # -- layout ---------------------------------------------------------------------------------
    @property
    def home(self) -> Path:
        return self.sb.dir / self.name

    @property
    def log(self) -> Path:
        return self.sb.dir / "logs" / f"{self.name}.log"

    def pidfiles(self) -> list[Path]:
        return [self.home / f"{self.name}.pid"]

    def port_keys(self) -> list[str]:
        """Names under which this service's ports are recorded in the sandbox state."""
        return [self.name]

    def ports(self) -> list[int]:
        return [self.sb.port(key) for key in self.port_keys()]

    @property
    def port(self) -> int:
        return self.ports()[0]

    # -- lifecycle ------------------------------------------------------------------------------
    def pids(self) -> list[int]:
        """Live PIDs of this service's own processes (stale or foreign PIDs are ignored)."""
        return [pid for f in self.pidfiles() if (pid := owned_pid(f, self.home)) is not None]

    def running(self) -> bool:
        files = self.pidfiles()
        return bool(files) and len(self.pids()) == len(files)

    def outdated(self) -> bool:
        """Running, but started with a configuration that has changed since (restart it)."""
        return False

    def clear_stale(self) -> None:
        for f in self.pidfiles():
            if f.exists() and owned_pid(f, self.home) is None:
                f.unlink(missing_ok=True)

    def prepare(self) -> None:
        """Slow, idempotent work before `start` (a schema migration). When an outdated instance is
        restarted, it runs while the old one still serves, so the service is away only for `start`."""

    def start(self) -> None:
        raise NotImplementedError

    def probe(self) -> bool:
        """Cheap: does the service answer?"""
        raise NotImplementedError

    def ready(self) -> None:
        """Idempotent set-up once the service answers (may wait a little for it to be usable)."""

    def healthy(self) -> bool:
        try:
            return self.running() and self.probe()
        except Exception:
            return False

    def stop(self) -> None:
        for pid in self.pids():
            stop_pid(pid)
        for f in self.pidfiles():
            f.unlink(missing_ok=True)

    # -- description ----------------------------------------------------------------------------
    def url(self) -> str:
        return f"http://{LOCAL}:{self.port}"

    def env(self) -> dict[str, str]:
        return {}

    def details(self) -> dict[str, Any]:
        return {}


# ------------------------------------------------------------------------------------------------ postgres
def _pg_bin(tool: str) -> str:
    candidates = sorted(glob(f"/usr/lib/postgresql/*/bin/{tool}"), key=lambda p: int(p.split("/")[4]))
    if candidates:
        return candidates[-1]
    found = shutil.which(tool)
    if not found:
        raise SandboxError(f"postgres: {tool} not found; install the Debian package postgresql")
    return found


class Postgres(Service):
    name = "postgres"
    description = "PostgreSQL primary (initdb cluster)"
    superuser = "postgres"

    @property
    def data(self) -> Path:
        return self.home / "data"

    def os_user(self) -> str | None:
        """PostgreSQL refuses to run as root: run it as the `postgres` system user then."""
        if os.geteuid() != 0:
            return None
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            subprocess.run(["useradd", "--system", "--no-create-home", "postgres"], check=True)
        return "postgres"

    def _prepare_home(self) -> None:
        """Create `home` writable by the server's user; if that user cannot reach the checkout
        (e.g. a 0700 temp dir), keep the data under /var/lib and link it from `.sandbox/`."""
        user = self.os_user()
        if self.home.exists() or self.home.is_symlink():
            return
        self.home.mkdir(parents=True)
        if user is None:
            return
        shutil.chown(self.home, user, user)
        probe = subprocess.run(["test", "-w", str(self.home)], user=user, check=False)
        if probe.returncode == 0:
            return
        self.home.rmdir()
        digest = hashlib.sha256(str(self.sb.dir.resolve()).encode()).hexdigest()[:12]
        outside = Path("/var/lib/scaleops-sandbox") / digest / self.name
        outside.mkdir(parents=True, exist_ok=True)
        shutil.chown(outside, user, user)
        for parent in outside.parents:
            if parent == Path("/var/lib"):
                break
            parent.chmod(0o755)
        self.home.symlink_to(outside, target_is_directory=True)

    @property
    def password(self) -> str:
        return self.sb.secret("postgres_password")

    def server_args(self) -> list[str]:
        return [
            _pg_bin("postgres"),
            "-D",
            str(self.data.resolve()),
            "-p",
            str(self.port),
            "-c",
            f"listen_addresses={LOCAL}",
            "-c",
            "unix_socket_directories=",
            "-c",
            "wal_level=replica",
            "-c",
            "max_wal_senders=10",
            "-c",
            "max_replication_slots=10",
            "-c",
            "hot_standby=on",
            "-c",
            "fsync=off",
            "-c",
            "synchronous_commit=off",
            "-c",
            "max_connections=200",
        ]

    def initdb(self) -> None:
        user = self.os_user()
        pwfile = self.home / ".pwfile"
        pwfile.write_text(self.password + "\n")
        pwfile.chmod(0o600)
        if user:
            shutil.chown(pwfile, user, user)
        try:
            result = subprocess.run(
                [
                    _pg_bin("initdb"),
                    "-D",
                    str(self.data.resolve()),
                    "-U",
                    self.superuser,
                    f"--pwfile={pwfile.resolve()}",
                    "--auth-host=scram-sha-256",
                    "--auth-local=peer",
                    "-E",
                    "UTF8",
                    "--locale=C.UTF-8",
                    "--no-instructions",
                ],
                cwd=self.home,
                user=user,
                capture_output=True,
                text=True,
                check=False,
            )
        finally:
            pwfile.unlink(missing_ok=True)
        if result.returncode != 0:
            self.log.parent.mkdir(parents=True, exist_ok=True)
            self.log.write_text(result.stdout + result.stderr)
            raise SandboxError(f"postgres: initdb failed; see {self.log}")

    def start(self) -> None:
        self._prepare_home()
        if not (self.data / "PG_VERSION").exists():
            self.initdb()
        postmaster_pid = self.data / "postmaster.pid"
        if owned_pid(postmaster_pid, self.home) is None:  # left by a crash, or naming another process
            postmaster_pid.unlink(missing_ok=True)
        self.write_passfile()
        spawn(
            self.server_args(), cwd=self.data, log=self.log, pidfile=self.pidfiles()[0], user=self.os_user()
        )

    @property
    def passfile(self) -> Path:
        return self.home / ".pgpass"

    def write_passfile(self) -> None:
        """libpq password file, so no password ever appears on a command line or in a log."""
        self.passfile.write_text(f"{LOCAL}:*:*:{self.superuser}:{self.password}\n")
        self.passfile.chmod(0o600)
        user = self.os_user()
        if user:
            shutil.chown(self.passfile, user, user)

    def dsn(self, dbname: str = "postgres") -> str:
        return f"postgresql://{self.superuser}:{self.password}@{LOCAL}:{self.port}/{dbname}"

    def connect(self, dbname: str = "postgres") -> Any:
        import psycopg

        return psycopg.connect(self.dsn(dbname), connect_timeout=3, autocommit=True)

    def probe(self) -> bool:
        with self.connect() as conn:
            conn.execute("select 1")
        return True

    def stop(self) -> None:
        # SIGINT is PostgreSQL's "fast" shutdown: clients are disconnected, nothing is lost.
        for pid in self.pids():
            stop_pid(pid, sig=signal.SIGINT, timeout=30)

    def url(self) -> str:
        return f"postgresql://{self.superuser}:****@{LOCAL}:{self.port}/postgres"

    def env(self) -> dict[str, str]:
        # restore tests write scratch databases to the primary unless told otherwise
        return {"SCALEOPS_POSTGRES__DSN": self.dsn(), "SCALEOPS_POSTGRES__RESTORE_DSN": self.dsn()}


class PostgresReplica(Postgres):
    name = "postgres_replica"
    requires = ("postgres",)
    description = "PostgreSQL streaming replica (pg_basebackup)"
    slot = "scaleops_sandbox_replica"

    @property
    def primary(self) -> Postgres:
        return self.sb.service("postgres")  # type: ignore[return-value]

    @property
    def password(self) -> str:
        return self.primary.password

    def primary_conninfo(self) -> str:
        return (
            f"host={LOCAL} port={self.primary.port} user={self.superuser} "
            f"passfile={self.passfile.resolve()} application_name={self.name}"
        )

    def server_args(self) -> list[str]:
        return [
            *super().server_args(),
            "-c",
            f"primary_conninfo={self.primary_conninfo()}",
            "-c",
            f"primary_slot_name={self.slot}",
        ]

    def initdb(self) -> None:
        """Clone the primary with pg_basebackup (a real physical replica), with a replication slot."""
        with self.primary.connect() as conn:
            conn.execute(
                "select pg_drop_replication_slot(slot_name) from pg_replication_slots "
                "where slot_name = %s and not active",
                (self.slot,),
            )
        user = self.os_user()
        self.write_passfile()
        result = subprocess.run(
            [
                _pg_bin("pg_basebackup"),
                "-h",
                LOCAL,
                "-p",
                str(self.primary.port),
                "-U",
                self.superuser,
                "-D",
                str(self.data.resolve()),
                "-R",
                "-X",
                "stream",
                "-C",
                "-S",
                self.slot,
                "--checkpoint=fast",
            ],
            cwd=self.home,
            user=user,
            env={**os.environ, "PGPASSFILE": str(self.passfile.resolve())},
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            self.log.parent.mkdir(parents=True, exist_ok=True)
            self.log.write_text(result.stdout + result.stderr)
            shutil.rmtree(self.data, ignore_errors=True)
            raise SandboxError(f"postgres_replica: pg_basebackup failed; see {self.log}")

    def probe(self) -> bool:
        with self.connect() as conn:
            row = conn.execute("select pg_is_in_recovery()").fetchone()
        return bool(row and row[0])

    def ready(self) -> None:
        """Wait until WAL is streaming from the primary, not just replayed from the base backup."""
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with self.connect() as conn:
                row = conn.execute("select status from pg_stat_wal_receiver").fetchone()
            if row and row[0] == "streaming":
                return
            time.sleep(0.2)
        raise SandboxError(f"postgres_replica: WAL receiver is not streaming; see {self.log}")

    def env(self) -> dict[str, str]:
        return {"SCALEOPS_POSTGRES__REPLICA_DSN": self.dsn()}


# ------------------------------------------------------------------------------------------------ redis
def _redis_args(port: int, data: Path, *extra: str) -> list[str]:
    return [
        shutil.which("redis-server") or "redis-server",
        "--port",
        str(port),
        "--bind",
        LOCAL,
        "--dir",
        str(data.resolve()),
        "--save",
        "",
        "--appendonly",
        "no",
        "--daemonize",
        "no",
        "--protected-mode",
        "yes",
        *extra,
    ]


class Redis(Service):
    name = "redis"
    description = "Redis standalone"
    maxmemory = "1gb"

    def start(self) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        args = _redis_args(self.port, self.home, "--maxmemory", self.maxmemory)
        args += ["--maxmemory-policy", "allkeys-lru"]
        spawn(args, cwd=self.home, log=self.log, pidfile=self.pidfiles()[0])

    def probe(self) -> bool:
        return redis_ping(self.port)

    def url(self) -> str:
        return f"redis://{LOCAL}:{self.port}/0"

    def env(self) -> dict[str, str]:
        return {"SCALEOPS_REDIS__URL": self.url()}


class RedisCluster(Service):
    name = "redis_cluster"
    description = "Redis Cluster, 3 primaries"
    nodes = 3

    def port_keys(self) -> list[str]:
        return [f"{self.name}_{i}" for i in range(self.nodes)]

    def ports(self) -> list[int]:
        return [self.sb.port(key, bus_offset=10000) for key in self.port_keys()]

    def node_dir(self, i: int) -> Path:
        return self.home / f"node{i}"

    def pidfiles(self) -> list[Path]:
        return [self.home / f"node{i}.pid" for i in range(self.nodes)]

    def start(self) -> None:
        for i, port in enumerate(self.ports()):
            if owned_pid(self.pidfiles()[i], self.home) is not None:
                continue
            data = self.node_dir(i)
            data.mkdir(parents=True, exist_ok=True)
            args = _redis_args(
                port,
                data,
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                "nodes.conf",
                "--cluster-node-timeout",
                "5000",
                "--maxmemory",
                "256mb",
                "--maxmemory-policy",
                "allkeys-lru",
            )
            spawn(args, cwd=data, log=self.log, pidfile=self.pidfiles()[i])

    def probe(self) -> bool:
        return all(redis_ping(p) for p in self.ports())

    def _cluster_info(self, port: int) -> dict[str, Any]:
        return dict(redis_cluster_info(port))

    def cluster_ok(self) -> bool:
        return all(self._cluster_info(p).get("cluster_state") == "ok" for p in self.ports())

    def ready(self) -> None:
        ports = self.ports()
        if self.cluster_ok():
            return
        if int(self._cluster_info(ports[0]).get("cluster_known_nodes", 1)) < self.nodes:
            result = subprocess.run(
                [
                    shutil.which("redis-cli") or "redis-cli",
                    "--cluster",
                    "create",
                    *[f"{LOCAL}:{p}" for p in ports],
                    "--cluster-replicas",
                    "0",
                    "--cluster-yes",
                ],
                capture_output=True,
                text=True,
                check=False,
                timeout=60,
            )
            with open(self.log, "a") as out:
                out.write(result.stdout + result.stderr)
            if result.returncode != 0:
                raise SandboxError(f"redis_cluster: cluster create failed; see {self.log}")
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.cluster_ok():
                return
            time.sleep(0.2)
        raise SandboxError(f"redis_cluster: cluster_state is not ok; see {self.log}")

    def healthy(self) -> bool:
        try:
            return super().healthy() and self.cluster_ok()
        except Exception:
            return False

    def url(self) -> str:
        return f"redis://{LOCAL}:{self.ports()[0]}"

    def env(self) -> dict[str, str]:
        return {"SCALEOPS_REDIS__CLUSTER_URL": self.url()}

    def details(self) -> dict[str, Any]:
        return {"nodes": [f"{LOCAL}:{p}" for p in self.ports()]}


# ------------------------------------------------------------------------------------------------ s3
class S3(Service):
    name = "s3"
    description = "S3 server (moto) with a primary and a replica region, one bucket in each"
    access_key = "sandbox-access-key"

    @property
    def secret_key(self) -> str:
        return self.sb.secret("s3_secret_key")

    def start(self) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        args = [sys.executable, "-m", "moto.server", "-H", LOCAL, "-p", str(self.port)]
        env: dict[str, str | None] = {"MOTO_EC2_LOAD_DEFAULT_AMIS": "false", "AWS_CA_BUNDLE": None}
        spawn(args, cwd=self.home, log=self.log, pidfile=self.pidfiles()[0], env=env)

    def client(self, region: str) -> Any:
        import boto3
        from botocore.config import Config

        return boto3.session.Session().client(
            "s3",
            endpoint_url=self.url(),
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            config=Config(region_name=region, retries={"max_attempts": 1}, connect_timeout=2, read_timeout=5),
        )

    def bucket_names(self) -> set[str]:
        """ListBuckets as a plain GET: moto answers it unsigned, and boto3 costs a second or more to load."""
        status, body = http_request("GET", f"{self.url()}/", timeout=5)
        text = body.decode(errors="replace")
        if status != 200 or "<ListAllMyBucketsResult" not in text:
            raise SandboxError(f"s3: ListBuckets answered HTTP {status}: {text[:200]}")
        return set(re.findall(r"<Name>([^<]+)</Name>", text))  # bucket names need no XML escaping

    def probe(self) -> bool:
        self.bucket_names()
        return True

    def buckets(self) -> list[tuple[str, str]]:
        s3 = self.sb.settings.s3
        return [(s3.primary_bucket, s3.primary_region), (s3.replica_bucket, s3.replica_region)]

    def ready(self) -> None:
        existing = self.bucket_names()  # moto lists every region's buckets
        for bucket, region in self.buckets():
            if bucket in existing:
                continue
            client = self.client(region)
            kwargs: dict[str, Any] = {"Bucket": bucket}
            if region != "us-east-1":
                kwargs["CreateBucketConfiguration"] = {"LocationConstraint": region}
            client.create_bucket(**kwargs)

    def env(self) -> dict[str, str]:
        s3 = self.sb.settings.s3
        return {
            "SCALEOPS_S3__ENDPOINT_URL": self.url(),
            "SCALEOPS_S3__PRIMARY_REGION": s3.primary_region,
            "SCALEOPS_S3__PRIMARY_BUCKET": s3.primary_bucket,
            "SCALEOPS_S3__REPLICA_REGION": s3.replica_region,
            "SCALEOPS_S3__REPLICA_BUCKET": s3.replica_bucket,
            "SCALEOPS_S3__ACCESS_KEY_ID": self.access_key,
            "SCALEOPS_S3__SECRET_ACCESS_KEY": self.secret_key,
        }

    def details(self) -> dict[str, Any]:
        return {"buckets": {bucket: region for bucket, region in self.buckets()}}


class S3Replicator(Service):
    name = "s3_replicator"
    requires = ("s3",)
    description = "copies new and changed objects primary -> replica (stands in for S3 CRR)"
    heartbeat_max_age = 15.0

    @property
    def s3(self) -> S3:
        return self.sb.service("s3")  # type: ignore[return-value]

    def port_keys(self) -> list[str]:
        return []

    @property
    def heartbeat(self) -> Path:
        return self.home / "heartbeat"

    def start(self) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        s3 = self.sb.settings.s3
        args = [
            sys.executable,
            "-m",
            "scaleops.sandbox.replicator",
            "--endpoint-url",
            self.s3.url(),
            "--source",
            f"{s3.primary_bucket}@{s3.primary_region}",
            "--target",
            f"{s3.replica_bucket}@{s3.replica_region}",
            "--delay",
            str(self.sb.settings.sandbox.replication_delay_seconds),
            "--heartbeat",
            str(self.heartbeat.resolve()),
            "--state",
            str((self.home / "state.json").resolve()),
        ]
        env: dict[str, str | None] = {
            "AWS_ACCESS_KEY_ID": self.s3.access_key,
            "AWS_SECRET_ACCESS_KEY": self.s3.secret_key,
            "AWS_CA_BUNDLE": None,
        }
        self.heartbeat.unlink(missing_ok=True)
        spawn(args, cwd=self.home, log=self.log, pidfile=self.pidfiles()[0], env=env)

    def probe(self) -> bool:
        with contextlib.suppress(OSError):
            return time.time() - self.heartbeat.stat().st_mtime < self.heartbeat_max_age
        return False

    def url(self) -> str:
        s3 = self.sb.settings.s3
        return f"s3://{s3.primary_bucket} -> s3://{s3.replica_bucket}"

    def details(self) -> dict[str, Any]:
        return {"delay_seconds": self.sb.settings.sandbox.replication_delay_seconds}


# ------------------------------------------------------------------------------------------------ prefect
class PrefectServer(Service):
    """`prefect server start` on PostgreSQL, as production should run it: a role and database `prefect` of
    its own on the sandbox's primary (SQLite logged "database is locked" under concurrent alerts).

    A server still running on another database (the SQLite of older sandboxes, or a primary that moved
    to another port) is `outdated`: `up` migrates the new database while the old server still serves
    (`prepare`), then restarts the server alone, so the API is away only for a server start."""

    name = "prefect"
    requires = ("postgres",)  # its database lives on the primary: PostgreSQL first
    description = "prefect server start on PostgreSQL (database prefect on the primary), own PREFECT_HOME"
    database = "prefect"
    db_user = "prefect"
    migrate_timeout = 300.0

    @property
    def postgres(self) -> Postgres:
        return self.sb.service("postgres")  # type: ignore[return-value]

    @property
    def db_password(self) -> str:
        return self.sb.secret("prefect_db_password")

    def database_url(self, *, masked: bool = False) -> str:
        """`PREFECT_API_DATABASE_CONNECTION_URL` (asyncpg, Prefect's PostgreSQL driver)."""
        password = "****" if masked else self.db_password
        return f"postgresql+asyncpg://{self.db_user}:{password}@{LOCAL}:{self.postgres.port}/{self.database}"

    @property
    def database_marker(self) -> Path:
        """The (masked) database URL the running server was started with."""
        return self.home / "database"

    def outdated(self) -> bool:
        try:
            return self.database_marker.read_text().strip() != self.database_url(masked=True)
        except OSError:
            return True  # started before the sandbox's Prefect moved to PostgreSQL: it runs on SQLite

    def create_database(self) -> None:
        """Role and database `prefect` on the primary (idempotent; the role's password follows the state)."""
        from psycopg import sql

        with self.postgres.connect() as conn:
            role = sql.Identifier(self.db_user)
            password = sql.Literal(self.db_password)
            if conn.execute("select 1 from pg_roles where rolname = %s", (self.db_user,)).fetchone():
                conn.execute(sql.SQL("alter role {} login password {}").format(role, password))
            else:
                conn.execute(sql.SQL("create role {} login password {}").format(role, password))
            if not conn.execute("select 1 from pg_database where datname = %s", (self.database,)).fetchone():
                conn.execute(
                    sql.SQL("create database {} owner {}").format(sql.Identifier(self.database), role)
                )

    def server_env(self) -> dict[str, str | None]:
        prefect_home = self.home / "home"
        prefect_home.mkdir(parents=True, exist_ok=True)
        return {
            "PREFECT_HOME": str(prefect_home.resolve()),
            "PREFECT_API_DATABASE_CONNECTION_URL": self.database_url(),  # in the environment, never argv
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "PREFECT_API_URL": None,
            "PREFECT_UI_API_URL": f"{self.url()}/api",
            "PREFECT_LOGGING_LEVEL": "WARNING",
            "PREFECT_SERVER_LOGGING_LEVEL": "WARNING",
        }

    def prepare(self) -> None:
        """Create and migrate the database (`prefect server database upgrade`): the server then starts in
        seconds, and a restart onto PostgreSQL migrates while the old server still serves."""
        self.create_database()
        self.log.parent.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, **self.server_env()}
        with open(self.log, "a") as handle:
            result = subprocess.run(
                [sys.executable, "-m", "prefect", "--no-prompt", "server", "database", "upgrade", "-y"],
                cwd=self.home,
                env={key: value for key, value in env.items() if value is not None},
                stdout=handle,
                stderr=subprocess.STDOUT,
                timeout=self.migrate_timeout,
                check=False,
            )
        if result.returncode != 0:
            raise SandboxError(f"prefect: migrating its PostgreSQL database failed; see {self.log}")

    def start(self) -> None:
        env = self.server_env()
        self.database_marker.write_text(self.database_url(masked=True) + "\n")
        args = [sys.executable, "-m", "prefect", "server", "start", "--host", LOCAL, "--port", str(self.port)]
        spawn(args, cwd=self.home, log=self.log, pidfile=self.pidfiles()[0], env=env)

    def probe(self) -> bool:
        return http_ok(f"{self.url()}/api/health")

    def ready(self) -> None:
        """The process work pool every scaleops deployment names (`prefect deploy` needs it to exist)."""
        status, body = http_request(
            "POST",
            f"{self.url()}/api/work_pools/",
            {"name": WORK_POOL, "type": "process", "description": "scaleops duties (sandbox)"},
            timeout=10,
        )
        if status not in (201, 409):
            text = body[:200].decode(errors="replace")
            raise SandboxError(f"prefect: could not create work pool {WORK_POOL!r}: {text}")

    def stop(self) -> None:
        for pid in self.pids():
            stop_pid(pid, sig=signal.SIGINT, timeout=20)
        for f in self.pidfiles():
            f.unlink(missing_ok=True)

    def env(self) -> dict[str, str]:
        # not the database URL: clients never need it, and prefect_test_harness would pick it up
        return {"PREFECT_API_URL": f"{self.url()}/api"}

    def details(self) -> dict[str, Any]:
        return {"ui": self.url(), "database": self.database_url(masked=True)}


class PrefectWorker(Service):
    """A process worker on the `scaleops` pool: runs what schedules, triggers and backfills create."""

    name = "worker"
    requires = ("prefect",)
    after_all = True  # flow runs inherit the worker's environment: every service must be in it
    description = "prefect worker, process pool 'scaleops'"

    def port_keys(self) -> list[str]:
        return []

    @property
    def prefect(self) -> PrefectServer:
        return self.sb.service("prefect")  # type: ignore[return-value]

    def start(self) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        args = [
            sys.executable,
            "-m",
            "prefect",
            "worker",
            "start",
            "--pool",
            WORK_POOL,
            "--type",
            "process",
            "--name",
            self.worker_name,
        ]
        self.env_fingerprint.write_text(self._fingerprint())
        env: dict[str, str | None] = {
            **self.sb.env(),  # flow runs inherit the worker's environment: point them at the sandbox
            "SCALEOPS_HOME": str(PROJECT_ROOT),
            "PREFECT_WORKER_QUERY_SECONDS": "2",
            "PREFECT_WORKER_PREFETCH_SECONDS": "2",
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "AWS_CA_BUNDLE": None,
        }
        spawn(args, cwd=self.home, log=self.log, pidfile=self.pidfiles()[0], env=env)

    @property
    def env_fingerprint(self) -> Path:
        return self.home / "env.sha256"

    def _fingerprint(self) -> str:
        return hashlib.sha256(json.dumps(self.sb.env(), sort_keys=True).encode()).hexdigest()

    def outdated(self) -> bool:
        """A service added or moved since the worker started: its flow runs would miss the setting."""
        try:
            return self.env_fingerprint.read_text() != self._fingerprint()
        except OSError:
            return True

    @property
    def worker_name(self) -> str:
        return f"sandbox-{hashlib.sha256(str(self.sb.dir).encode()).hexdigest()[:8]}"

    def probe(self) -> bool:
        workers = http_json("POST", f"{self.prefect.url()}/api/work_pools/{WORK_POOL}/workers/filter", {})
        return any(w["name"] == self.worker_name and w.get("status") == "ONLINE" for w in workers)

    def stop(self) -> None:
        for pid in self.pids():
            stop_pid(pid, sig=signal.SIGINT, timeout=20)
        for f in self.pidfiles():
            f.unlink(missing_ok=True)

    def url(self) -> str:
        return f"{self.prefect.url()}/work-pools/work-pool/{WORK_POOL}"

    def details(self) -> dict[str, Any]:
        return {"pool": WORK_POOL, "worker": self.worker_name}
