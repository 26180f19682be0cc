"""The one place each system's client is built from settings. Nothing else reads connection secrets.

Callers own what they get (close it, or use it as a context manager); there are no module-level
connections, except `aws_client`'s boto3 clients, kept once per process (thread-safe, costly to make).
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any, Literal

from scaleops.core.settings import Settings

if TYPE_CHECKING:
    import psycopg
    import redis
    import redis.cluster

PostgresRole = Literal["primary", "replica", "restore"]
S3Region = Literal["primary", "replica"]


def postgres_dsn(settings: Settings, role: PostgresRole = "primary") -> str:
    """The libpq connection string for a role (the restore server falls back to the primary)."""
    pg = settings.postgres
    secret = {"primary": pg.dsn, "replica": pg.replica_dsn, "restore": pg.restore_dsn or pg.dsn}[role]
    if secret is None:
        raise ValueError(f"SCALEOPS_POSTGRES__{role.upper()}_DSN is not set")
    return secret.get_secret_value()


def postgres_connect(
    settings: Settings, role: PostgresRole = "primary", *, dbname: str | None = None, **kwargs: Any
) -> psycopg.Connection[Any]:
    """Open a psycopg 3 connection; `dbname` overrides the DSN's database."""
    import psycopg
    from psycopg.conninfo import make_conninfo

    conninfo = postgres_dsn(settings, role)
    extra: dict[str, Any] = {"connect_timeout": int(settings.postgres.connect_timeout_seconds)}
    if dbname:
        extra["dbname"] = dbname
    return psycopg.connect(make_conninfo(conninfo, **extra), application_name="scaleops", **kwargs)


def redis_client(settings: Settings, **kwargs: Any) -> redis.Redis:
    """A client for the standalone Redis."""
    import redis

    timeout = settings.redis.socket_timeout_seconds
    return redis.Redis.from_url(
        settings.redis.url, socket_timeout=timeout, socket_connect_timeout=timeout, **kwargs
    )


def redis_cluster_client(settings: Settings, **kwargs: Any) -> redis.cluster.RedisCluster:
    """A cluster-aware client that discovers every node from the one in SCALEOPS_REDIS__CLUSTER_URL."""
    from redis.cluster import RedisCluster

    if not settings.redis.cluster_url:
        raise ValueError("SCALEOPS_REDIS__CLUSTER_URL is not set")
    timeout = settings.redis.socket_timeout_seconds
    return RedisCluster.from_url(
        settings.redis.cluster_url, socket_timeout=timeout, socket_connect_timeout=timeout, **kwargs
    )


def s3_client(settings: Settings, region: S3Region = "primary") -> Any:
    """A boto3 S3 client for the primary or the replica region (adaptive retries for throttling)."""
    import boto3
    from botocore.config import Config

    s3 = settings.s3
    config = Config(
        region_name=s3.primary_region if region == "primary" else s3.replica_region,
        retries={"mode": "adaptive", "max_attempts": 5},
        max_pool_connections=s3.max_pool_connections,
        s3={"addressing_style": "path"} if s3.endpoint_url else {},
    )
    credentials: dict[str, str] = {}
    if s3.access_key_id and s3.secret_access_key:
        credentials = {
            "aws_access_key_id": s3.access_key_id.get_secret_value(),
            "aws_secret_access_key": s3.secret_access_key.get_secret_value(),
        }
    return boto3.session.Session().client("s3", endpoint_url=s3.endpoint_url, config=config, **credentials)


def s3_bucket(settings: Settings, region: S3Region = "primary") -> str:
    return settings.s3.primary_bucket if region == "primary" else settings.s3.replica_bucket


def evm_client(settings: Settings, chain: str) -> Any:
    """A web3 client for a configured EVM chain (SCALEOPS_CHAINS__<NAME>__RPC_URL); web3's own
    retries are off: the shared policy (scaleops.core.retry) decides what to retry."""
    from web3 import HTTPProvider, Web3

    try:
        cfg = settings.chains[chain]
    except KeyError:
        raise ValueError(f"unknown chain {chain!r}: SCALEOPS_CHAINS__{chain.upper()}__* is not set") from None
    provider = HTTPProvider(
        cfg.rpc_url, request_kwargs={"timeout": cfg.rpc_timeout_seconds}, exception_retry_configuration=None
    )
    return Web3(provider)


def prometheus_http(settings: Settings) -> Any:
    """An httpx client for the Prometheus HTTP API in SCALEOPS_CAPACITY__PROMETHEUS_URL."""
    import httpx

    url = settings.capacity.prometheus_url
    if not url:
        raise ValueError("SCALEOPS_CAPACITY__PROMETHEUS_URL is not set")
    return httpx.Client(base_url=url.rstrip("/"), timeout=settings.capacity.timeout_seconds)


def cloudwatch_client(settings: Settings) -> Any:
    """A boto3 CloudWatch client (default AWS credential chain; endpoint overridable for emulators)."""
    import boto3
    from botocore.config import Config

    capacity = settings.capacity
    config = Config(region_name=capacity.cloudwatch_region, retries={"mode": "adaptive", "max_attempts": 5})
    return boto3.session.Session().client(
        "cloudwatch", endpoint_url=capacity.cloudwatch_endpoint_url, config=config
    )


# cost-cleanup's clients: one AWS account in many regions, and Kubernetes clusters by kubeconfig context.
_AWS_CLIENTS: dict[tuple[str, str, str | None, str | None, str | None], Any] = {}
_AWS_SESSIONS: dict[tuple[str | None, str | None], Any] = {}
_AWS_LOCK = threading.Lock()


def aws_client(
    service: str,
    region: str,
    *,
    endpoint_url: str | None = None,
    access_key_id: str | None = None,
    secret_access_key: str | None = None,
) -> Any:
    """A boto3 client for one service in one region (adaptive retries; the default AWS credential chain
    unless both keys are given), made once per process for the same arguments, from one boto3 session
    per credentials: a new session loads botocore's endpoint and service data again (~0.5 s a client
    here), a client from a warm session ~20 ms. Clients are thread-safe; sessions are not (the lock)."""
    key = (service, region, endpoint_url, access_key_id, secret_access_key)
    with _AWS_LOCK:
        made = _AWS_CLIENTS.get(key)
        if made is None:
            import boto3
            from botocore.config import Config

            keys = (access_key_id, secret_access_key) if access_key_id and secret_access_key else (None, None)
            session = _AWS_SESSIONS.get(keys)
            if session is None:
                session = _AWS_SESSIONS[keys] = boto3.session.Session(
                    aws_access_key_id=keys[0], aws_secret_access_key=keys[1]
                )
            config = Config(region_name=region, retries={"mode": "adaptive", "max_attempts": 5})
            made = _AWS_CLIENTS[key] = session.client(service, endpoint_url=endpoint_url, config=config)
    return made


def cost_aws_options(settings: Settings) -> dict[str, str | None]:
    """cost-cleanup's AWS endpoint and credentials (SCALEOPS_COST__*), as `aws_client` keywords."""
    cost = settings.cost
    return {
        "endpoint_url": cost.aws_endpoint_url,
        "access_key_id": cost.access_key_id.get_secret_value() if cost.access_key_id else None,
        "secret_access_key": cost.secret_access_key.get_secret_value() if cost.secret_access_key else None,
    }


def kube_api_client(kubeconfig: str | None, context: str | None = None) -> Any:
    """A `kubernetes` ApiClient for one context of a kubeconfig (None: the default file, its current
    context)."""
    from kubernetes import config

    return config.new_client_from_config(config_file=kubeconfig, context=context)
