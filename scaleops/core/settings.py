"""The one settings model: environment (`SCALEOPS_*`, nested with `__`) over an optional TOML file.

Every system has one section here; every client is built from it in one place (`scaleops.core.clients`).
Secrets are `SecretStr` (or DSNs whose password is masked) and never leave this module in clear text
except through `.get_secret_value()` at the point where a client is made.
"""

from __future__ import annotations

import os
import re
import typing
from collections.abc import Callable
from contextvars import ContextVar
from pathlib import Path
from types import UnionType
from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit

from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    ModelWrapValidatorHandler,
    RedisDsn,
    SecretStr,
    TypeAdapter,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
    TomlConfigSettingsSource,
)

ENV_PREFIX = "SCALEOPS_"
NESTED_DELIMITER = "__"
CONFIG_FILE_ENV = "SCALEOPS_CONFIG"
MASK = "****"

_redis_dsn: TypeAdapter[RedisDsn] = TypeAdapter(RedisDsn)


class ConfigError(ValueError):
    """Settings could not be loaded; `problems` holds one (env-var name, message) per bad field."""

    def __init__(self, problems: list[tuple[str, str]]):
        self.problems = problems
        super().__init__("; ".join(f"{name}: {msg}" for name, msg in problems))


def mask_url_password(url: str) -> str:
    """`scheme://user:secret@host/db` -> `scheme://user:****@host/db`; key=value DSNs mask `password=`."""
    if "://" not in url:  # the whole value, quoted with spaces or not (not just its first word)
        return _KV_PASSWORD.sub(lambda m: m.group(0)[: m.start(1) - m.start(0)] + MASK, url)
    split = urlsplit(url)
    if split.password is None:
        return url
    userinfo = f"{split.username or ''}:{MASK}"
    host = split.netloc.rsplit("@", 1)[1]
    return urlunsplit(split._replace(netloc=f"{userinfo}@{host}"))


# password=... in a key=value DSN: quoted, or up to the next `key=` (so a malformed unquoted password
# with spaces is found whole, the way libpq then reports its pieces).
_KV_PASSWORD = re.compile(r"\bpassword\s*=\s*('(?:[^'\\]|\\.)*'?|.*?)(?=\s+\w+\s*=|\s*$)", re.I | re.S)


def url_password(url: str) -> str | None:
    """The password inside a URL or key=value DSN, if any (so the log filter can mask it)."""
    if "://" in url:
        try:
            return urlsplit(url).password
        except ValueError:  # e.g. a bad port or IPv6 host: take what sits between user: and @
            match = re.search(r"://[^:/@\s]*:([^@]*)@", url)
            return match.group(1) if match else None
    match = _KV_PASSWORD.search(url)
    return (match.group(1).strip("'") or None) if match else None


def _check_postgres_dsn(value: SecretStr | None) -> SecretStr | None:
    if value is None:
        return None
    from psycopg.conninfo import conninfo_to_dict

    try:
        conninfo_to_dict(value.get_secret_value())
    except Exception as exc:  # libpq's parser quotes the bad token, which may be (part of) the password
        from scaleops.core.redaction import Redactor

        raw = value.get_secret_value()
        redactor = Redactor([raw, url_password(raw) or ""])
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ValueError(f"not a valid PostgreSQL connection string ({redactor.text(reason)})") from None
    return value


def _http_url(kind: str = "URL") -> Callable[[str | None], str | None]:
    """A validator of an http(s) URL with a host (endpoints, RPC nodes, gateways); None stays None."""

    def check(value: str | None) -> str | None:
        if value is None:
            return None
        split = urlsplit(value)
        if split.scheme not in ("http", "https") or not split.hostname:
            raise ValueError(f"not a valid {kind} (expected http(s)://host[:port])")
        return value

    return check


def _check_redis_url(value: str | None) -> str | None:
    if value is None:
        return None
    try:
        _redis_dsn.validate_python(value)
    except ValidationError:
        raise ValueError(
            "not a valid Redis URL (expected redis://[user:password@]host:port[/db] or rediss://...)"
        ) from None
    split = urlsplit(value)
    try:
        split.port  # noqa: B018 - raises on a non-numeric port
    except ValueError:
        raise ValueError("not a valid Redis URL (the port is not a number)") from None
    if not split.hostname and split.scheme != "unix":
        raise ValueError("not a valid Redis URL (no host)")
    return value


class Section(BaseModel):
    # hide_input_in_errors: a ValidationError's text never quotes a value (it may be a secret)
    model_config = ConfigDict(extra="forbid", validate_default=True, hide_input_in_errors=True)


class PostgresSettings(Section):
    """The platform's PostgreSQL primary and its streaming replica."""

    dsn: SecretStr = Field(
        default=SecretStr("postgresql://postgres@127.0.0.1:5432/postgres"),
        description="primary server (libpq URL or key=value string)",
    )
    replica_dsn: SecretStr | None = Field(default=None, description="streaming replica, read-only")
    restore_dsn: SecretStr | None = Field(
        default=None, description="server that restore tests write scratch databases to (default: dsn)"
    )
    connect_timeout_seconds: float = Field(default=10, gt=0)

    _check = field_validator("dsn", "replica_dsn", "restore_dsn")(_check_postgres_dsn)


class RedisSettings(Section):
    """The cache: a standalone Redis and a Redis Cluster."""

    url: str = Field(default="redis://127.0.0.1:6379/0", description="standalone Redis")
    cluster_url: str | None = Field(default=None, description="any node of the Redis Cluster")
    socket_timeout_seconds: float = Field(default=10, gt=0)

    _check = field_validator("url", "cluster_url")(_check_redis_url)


class S3Settings(Section):
    """Object storage in two regions: the primary bucket and its cross-region replica."""

    endpoint_url: str | None = Field(default=None, description="S3 endpoint; unset means AWS itself")
    primary_region: str = "us-east-1"
    primary_bucket: str = "scaleops-backups"
    replica_region: str = "us-west-2"
    replica_bucket: str = "scaleops-backups-replica"
    access_key_id: SecretStr | None = Field(default=None, description="unset: the default AWS chain")
    secret_access_key: SecretStr | None = None
    max_pool_connections: int = Field(default=32, ge=1)

    _endpoint = field_validator("endpoint_url")(_http_url("endpoint URL"))

    @field_validator("primary_bucket", "replica_bucket")
    @classmethod
    def _bucket(cls, value: str) -> str:
        ok = 3 <= len(value) <= 63 and value[0].isalnum() and value[-1].isalnum()
        ok = ok and all(c.islower() or c.isdigit() or c in "-." for c in value)
        if not ok:
            raise ValueError("not a valid S3 bucket name (3-63 of a-z, 0-9, '-', '.')")
        return value


class BackupSettings(Section):
    """Duty backup-verification: what is backed up, where under the buckets, and how long it is kept.

    The buckets are the S3 section's; the restore server is SCALEOPS_POSTGRES__RESTORE_DSN."""

    prefix: str = Field(default="backups/", description="key prefix of every backup object in both buckets")
    databases: list[str] = Field(default_factory=list, description="databases to back up (JSON list)")
    replication_sla_seconds: float = Field(
        default=900, gt=0, description="an object younger than this and not yet in the replica is pending"
    )
    keep_daily: int = Field(default=7, ge=0, description="GFS retention: newest backup of each of N days")
    keep_weekly: int = Field(default=4, ge=0, description="... of each of N ISO weeks")
    keep_monthly: int = Field(default=12, ge=0, description="... of each of N months")
    rpo_target_seconds: float = Field(
        default=26 * 3600, gt=0, description="a newest verified backup older than this is a problem"
    )
    part_size_mb: int = Field(default=16, ge=5, le=5120, description="multipart upload part size (MiB)")
    restore_wait_seconds: float = Field(
        default=60, ge=0, description="how long to wait for the newest backup to reach the replica region"
    )
    leftover_after_seconds: float = Field(
        default=6 * 3600,
        gt=0,
        description="scratch databases and incomplete uploads older than this were left by a run that died",
    )

    @field_validator("prefix")
    @classmethod
    def _prefix(cls, value: str) -> str:
        if not value or value.startswith("/") or not value.endswith("/"):
            raise ValueError("must be a key prefix ending in '/' and not starting with '/' (e.g. backups/)")
        return value

    @field_validator("databases")
    @classmethod
    def _databases(cls, value: list[str]) -> list[str]:
        bad = [d for d in value if not d or len(d) > 63 or "/" in d or d.startswith("scaleops_restore_")]
        if bad:
            raise ValueError("must be a list of database names (no '/', not a scratch restore db)")
        return value


class WarmSet(Section):
    """One set of keys cache-warming loads: SQL returning `key, value[, updated_at]`, hottest first."""

    query: str = Field(description="SQL on the PostgreSQL primary; rows hottest first")
    key_prefix: str = Field(default="", description="prepended to every key")
    ttl_seconds: int = Field(default=3600, gt=0, le=365 * 24 * 3600)
    ttl_jitter: float = Field(default=0.1, ge=0, lt=1, description="TTL spread uniformly over ttl*(1±jitter)")
    serializer: Literal["text", "json", "bytea"] = Field(
        default="text", description="value as text (UTF-8), as JSON (to_json), or raw bytea"
    )

    @field_validator("query")
    @classmethod
    def _query(cls, value: str) -> str:
        value = value.strip().rstrip(";").strip()
        if not value:
            raise ValueError("the query is empty")
        if ";" in value:
            raise ValueError("the query must be one statement (no ';')")
        return value


class CacheSettings(Section):
    """cache-warming: the warm sets (queries live here, never in flow parameters) and tuning."""

    warm_sets: dict[str, WarmSet] = Field(
        default_factory=dict,
        description="name -> {query, key_prefix, ttl_seconds, ttl_jitter, serializer} (JSON in the env)",
    )
    batch_size: int = Field(default=2000, ge=1, le=100_000, description="rows per fetch and per pipeline")
    state_prefix: str = Field(
        default="scaleops:cache", min_length=1, description="Redis keys for watermarks and hit counters"
    )
    invalidation_overlap_seconds: float = Field(
        default=0,
        ge=0,
        description="also rescan rows whose updated_at is this much older than the watermark (set it to "
        "the longest write transaction when updated_at is stamped before commit)",
    )

    @field_validator("warm_sets")
    @classmethod
    def _names(cls, value: dict[str, WarmSet]) -> dict[str, WarmSet]:
        for name in value:
            if not name or not all(c.isalnum() or c in "-_." for c in name):
                raise ValueError(f"warm set name {name!r}: use letters, digits, '-', '_', '.'")
        return value


class SandboxSettings(Section):
    """The local sandbox of real services (`scaleops sandbox ...`)."""

    dir: Path = Field(default=Path(".sandbox"), description="state, data, logs and PID files")
    replication_delay_seconds: float = Field(
        default=1.0, ge=0, description="how long the S3 replicator waits before copying an object"
    )
    start_timeout_seconds: float = Field(default=90, gt=0)


class AlertsSettings(Section):
    """The alert bridge (`scaleops alerts serve`): Alertmanager/Grafana webhooks -> Prefect events."""

    token: SecretStr | None = Field(default=None, description="bearer token senders must present")
    host: str = Field(default="127.0.0.1", description="address the bridge listens on")
    port: int = Field(default=9095, ge=1, le=65535)
    max_body_bytes: int = Field(default=1024 * 1024, ge=1024)
    url: str | None = Field(default=None, description="where senders reach the bridge (informational)")
    max_depth: int = Field(default=32, ge=4, le=500, description="deepest JSON nesting a webhook may have")
    max_labels: int = Field(
        default=100, ge=1, le=490, description="labels per alert (Prefect allows 500 per event resource)"
    )
    max_label_bytes: int = Field(default=2048, ge=64, description="UTF-8 bytes of a label's name and value")
    dedupe: bool = Field(
        default=True,
        description="keep emitted alerts in PostgreSQL (SCALEOPS_POSTGRES__DSN, table alert_emissions) "
        "so that a repeat (fingerprint + start + status) is emitted once, across restarts",
    )
    dedupe_claim_seconds: float = Field(
        default=60, gt=0, description="a claimed but unconfirmed emission may be claimed again after this"
    )
    dedupe_retention_days: float = Field(default=30, ge=1, description="forget alerts unseen this long")
    coalesce_seconds: float = Field(
        default=600,
        ge=0,
        description="alerts for one duty within this many seconds of the first start one run; the others "
        "are attached to it as scaleops.alert.coalesced (needs the dedupe store; 0 turns it off)",
    )
    prefect_file: str | None = Field(
        default=None,
        description="the prefect.yaml whose alert triggers say which alerts belong to which duty "
        "(default: the project's own prefect.yaml)",
    )
    header_timeout_seconds: float = Field(
        default=10, gt=0, description="a connection must send its request headers within this"
    )
    keepalive_timeout_seconds: float = Field(default=5, ge=1, description="idle keep-alive connections close")
    body_timeout_seconds: float = Field(
        default=30, gt=0, description="the body must arrive within this (408)"
    )
    max_connections: int = Field(default=1000, ge=1, description="open connections at most (more: 503)")


class AlertmanagerSettings(Section):
    """The Alertmanager that routes alerts to the bridge."""

    url: str | None = Field(default=None, description="Alertmanager base URL")


class LoggingSettings(Section):
    """Extra values to mask in every log line, artifact and event, beyond the secrets above."""

    extra_secrets: list[SecretStr] = Field(default_factory=list)


ChainKind = Literal["op", "arbitrum", "zksync", "evm", "solana"]
_EVM_ADDRESS = re.compile(r"0x[0-9a-fA-F]{40}")
_EVM_KEY = re.compile(r"(0x)?[0-9a-fA-F]{64}")


class ChainSettings(Section):
    """One chain the outbox posts to (`SCALEOPS_CHAINS__<NAME>__...`; duty l2-batch-posting)."""

    rpc_url: str = Field(description="JSON-RPC endpoint")
    chain_id: int = Field(gt=0)
    kind: ChainKind = "evm"
    contract: str | None = Field(default=None, description="the OperationLog contract (EVM chains)")
    signer_address: str | None = Field(default=None, description="address (or Solana pubkey) that signs")
    signer_key: SecretStr | None = Field(default=None, description="private key of the signer (secret)")
    max_batch_ops: int = Field(default=200, ge=1, le=10_000)
    max_batch_bytes: int = Field(default=60_000, ge=256, description="calldata bytes of one batch")
    max_fee_per_batch: int = Field(default=10**16, ge=0, description="wei (lamports on Solana), L2 + L1")
    confirmations: int = Field(default=1, ge=1, le=1000)
    rpc_timeout_seconds: float = Field(default=10, gt=0)
    from_block: int = Field(default=0, ge=0, description="the contract's deployment block (log searches)")
    logs_block_range: int = Field(
        default=0, ge=0, description="blocks per eth_getLogs request (0: one request); providers cap it"
    )
    explorer_url: str | None = Field(
        default=None,
        description="block explorer: the L2 report links each tx to <explorer>/tx/<hash> (its query kept, "
        "e.g. https://explorer.solana.com?cluster=devnet)",
    )

    _rpc = field_validator("rpc_url")(_http_url("RPC URL"))
    _explorer = field_validator("explorer_url")(_http_url("explorer URL"))

    @field_validator("contract", "signer_address")
    @classmethod
    def _evm_address(cls, value: str | None, info: ValidationInfo) -> str | None:
        """On EVM chains an address is 0x + 40 hex digits (Solana's are base58, checked by the poster)."""
        if value is None or info.data.get("kind") == "solana" or _EVM_ADDRESS.fullmatch(value):
            return value
        raise ValueError("not an EVM address (expected 0x and 40 hex digits)")

    @field_validator("signer_key")
    @classmethod
    def _evm_key(cls, value: SecretStr | None, info: ValidationInfo) -> SecretStr | None:
        """On EVM chains a private key is 32 bytes: 64 hex digits, with or without 0x (never echoed)."""
        if value is None or info.data.get("kind") == "solana":
            return value
        if not _EVM_KEY.fullmatch(value.get_secret_value()):
            raise ValueError("not an EVM private key (expected 64 hex digits, with or without 0x)")
        return value


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|min|h|d|w)\s*$", re.IGNORECASE)


def _check_duration(value: str | None) -> str | None:
    """'30s', '5m', '6h', '1d', '2w' (the same grammar as tasks.capacity.models.parse_duration)."""
    if value is None:
        return None
    match = _DURATION.match(value)
    if not match or float(match.group(1)) <= 0:
        raise ValueError(f"not a duration: {value!r} (expected e.g. 30s, 5m, 6h, 1d, 2w)")
    return value


class SeriesSettings(Section):
    """One metric series to forecast (an item of SCALEOPS_CAPACITY__SERIES, a JSON list)."""

    name: str = Field(min_length=1, description="resource id of events, e.g. disk-db-1")
    source: Literal["prometheus", "cloudwatch", "csv", "postgres"]
    query: str | None = Field(default=None, description="PromQL (prometheus) or SQL returning ts, value")
    step: str | None = Field(default=None, description="cadence, e.g. 5m, 1h (prometheus: default 1h)")
    namespace: str | None = Field(default=None, description="cloudwatch namespace, e.g. AWS/EC2")
    metric: str | None = Field(default=None, description="cloudwatch metric name")
    dimensions: dict[str, str] = Field(default_factory=dict, description="cloudwatch dimensions")
    stat: str = Field(default="Average", description="cloudwatch statistic")
    path: Path | None = Field(default=None, description="csv file with timestamp,value")
    threshold: float
    direction: Literal["above", "below"] = Field(
        default="above", description="breach when the series rises above (usage) or falls below (free space)"
    )
    unit: str = ""
    capacity_per_unit: float | None = Field(default=None, gt=0, description="metric units one unit adds")
    unit_cost_per_month: float | None = Field(default=None, ge=0, description="USD a month per unit")
    bounds: tuple[float | None, float | None] | None = Field(default=None, description="e.g. [0, 100]")
    lead_time: str | None = Field(default=None, description="default: capacity.lead_time")

    _durations = field_validator("step", "lead_time")(_check_duration)

    @model_validator(mode="after")
    def _source_fields(self) -> SeriesSettings:
        needed = {
            "prometheus": ("query",),
            "postgres": ("query",),
            "cloudwatch": ("namespace", "metric"),
            "csv": ("path",),
        }[self.source]
        missing = [n for n in needed if getattr(self, n) in (None, "")]
        if missing:
            raise ValueError(f"source {self.source} needs {', '.join(missing)}")
        if self.bounds and None not in self.bounds and self.bounds[0] >= self.bounds[1]:  # type: ignore[operator]
            raise ValueError("bounds must be [low, high] with low < high")
        return self


class CapacitySettings(Section):
    """Capacity forecasting: which series, where to read them, how far to look back and ahead."""

    series: list[SeriesSettings] = Field(default_factory=list, description="JSON list of series")
    prometheus_url: str | None = Field(default=None, description="Prometheus HTTP API, e.g. http://host:9090")
    cloudwatch_region: str = "us-east-1"
    cloudwatch_endpoint_url: str | None = Field(default=None, description="unset: AWS itself")
    lookback: str = Field(default="28d", description="history fetched, ending at as_of")
    horizon: str = Field(default="30d", description="how far ahead to forecast")
    lead_time: str = Field(default="14d", description="warn when the upper 95% crosses within this")
    max_staleness: str = Field(default="2h", description="newest point must be at most this old")
    max_gap_steps: int = Field(default=6, ge=0, description="gaps the suite tolerates (after repair)")
    duplicates: Literal["mean", "max", "last"] = Field(
        default="mean", description="how repeated timestamps are merged before validation"
    )
    max_fill: str = Field(
        default="1d", description="gaps up to this long are interpolated; history is cut at a longer one"
    )
    dst_repair: bool = Field(default=True, description="undo local-time daylight-saving folds and gaps")
    headroom: float = Field(default=0.0, ge=0, description="extra fraction over the upper-95% peak")
    workers: int = Field(default=2, ge=1, description="processes that fit series in parallel")
    dask_address: str | None = Field(
        default=None, description="Dask scheduler (tcp://host:8786): fit the series on its workers instead"
    )
    timeout_seconds: float = Field(default=30, gt=0)

    _durations = field_validator("lookback", "horizon", "lead_time", "max_staleness", "max_fill")(
        _check_duration
    )

    _url = field_validator("prometheus_url", "cloudwatch_endpoint_url")(_http_url())

    @field_validator("series")
    @classmethod
    def _unique_names(cls, value: list[SeriesSettings]) -> list[SeriesSettings]:
        names = [s.name for s in value]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise ValueError(f"series names must be unique; repeated: {', '.join(repeated)}")
        return value


class CostSettings(Section):
    """Duty cost-cleanup: the policy file, where to look (AWS regions, Kubernetes contexts), its guards
    and its cap. Defaults touch nothing: no policies, no regions, no allowed account."""

    policies: Path | None = Field(
        default=None, description="policy file (YAML); the project ships deployments/cost-policies.yml"
    )
    regions: list[str] = Field(default_factory=list, description="AWS regions to clean (JSON list)")
    aws_endpoint_url: str | None = Field(default=None, description="AWS endpoint; unset means AWS itself")
    access_key_id: SecretStr | None = Field(default=None, description="unset: the default AWS chain")
    secret_access_key: SecretStr | None = None
    allowed_accounts: list[str] = Field(
        default_factory=list, description="AWS account ids the duty may touch (JSON list); none: no AWS"
    )
    blocked_alias_terms: list[str] = Field(
        default_factory=lambda: ["prod"],
        description="an account whose alias contains one of these is refused unless the alias is listed "
        "in allowed_aliases too (aws-nuke's guard)",
    )
    allowed_aliases: list[str] = Field(
        default_factory=list, description="account aliases allowed although they contain a blocked term"
    )
    kubeconfig: Path | None = Field(default=None, description="unset: KUBECONFIG or ~/.kube/config")
    contexts: list[str] = Field(default_factory=list, description="kubeconfig contexts (default: current)")
    protected_namespaces: list[str] = Field(
        default_factory=lambda: ["kube-system", "kube-public", "default"],
        description="namespaces never touched",
    )
    max_actions: int = Field(default=50, ge=0, description="actions per run and per policy, at most")
    prices: Path | None = Field(default=None, description="price table (JSON); unset: the shipped one")

    _endpoint = field_validator("aws_endpoint_url")(_http_url("endpoint URL"))

    @field_validator("allowed_accounts")
    @classmethod
    def _accounts(cls, value: list[str]) -> list[str]:
        bad = [a for a in value if not (len(a) == 12 and a.isdigit())]
        if bad:
            raise ValueError("must be a list of 12-digit AWS account ids")
        return value


class ArchiveSource(Section):
    """One source of content to archive (an entry of SCALEOPS_ARCHIVE__SOURCES, a JSON map by name)."""

    kind: Literal["s3", "postgres"]
    url: str | None = Field(default=None, description="s3: s3://bucket/prefix (new or changed objects)")
    query: str | None = Field(
        default=None, description="postgres: SQL returning key, content_type, bytes (or an s3:// url)"
    )
    watermark: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
        description="postgres: a column of the query that grows (id, updated_at); only rows past the "
        "source's stored watermark are read",
    )

    @model_validator(mode="after")
    def _kind_fields(self) -> ArchiveSource:
        if self.kind == "s3" and not (self.url or "").startswith("s3://"):
            raise ValueError("an s3 source needs url: s3://bucket/prefix")
        if self.kind == "postgres" and not (self.query or "").strip():
            raise ValueError("a postgres source needs query")
        if self.kind == "s3" and self.watermark:
            raise ValueError("watermark is a postgres source's column (an s3 source uses LastModified)")
        return self


def _check_jwk(value: SecretStr | None) -> SecretStr | None:
    if value is None:
        return None
    import json

    try:
        jwk = json.loads(value.get_secret_value())
    except ValueError:
        raise ValueError("not a JSON Web Key (expected the wallet's JWK as JSON)") from None
    if not isinstance(jwk, dict) or jwk.get("kty") != "RSA" or not all(k in jwk for k in ("n", "e", "d")):
        raise ValueError("not an Arweave wallet JWK (expected an RSA key with n, e, d)")
    return value


class ArchiveSettings(Section):
    """Duty arweave-archival: the gateway, the IPFS node, the wallet and the budget."""

    gateway_url: str | None = Field(
        default=None, description="Arweave gateway (/price, /tx, /graphql, /{id})"
    )
    ipfs_api_url: str | None = Field(default=None, description="IPFS node RPC (Kubo-compatible /api/v0)")
    bundler_url: str | None = Field(
        default=None, description="Turbo-compatible upload service (mode bundler)"
    )
    mode: Literal["gateway", "bundler"] = "gateway"
    wallet_jwk: SecretStr | None = Field(default=None, description="the archive wallet's JWK (secret)")
    sources: dict[str, ArchiveSource] = Field(default_factory=dict, description="name -> source (JSON)")
    max_winston_per_run: int = Field(default=10**12, ge=0, description="budget of one run (1 AR = 10^12)")
    max_bundle_bytes: int = Field(default=8 * 1024 * 1024, ge=1024, description="bytes of one bundle")
    chunked_above_bytes: int = Field(
        default=4 * 1024 * 1024,
        ge=256 * 1024,
        description="a bundle larger than this goes as a transaction header and POST /chunk uploads",
    )
    confirmations: int = Field(default=10, ge=1, le=1000)
    drop_after_blocks: int = Field(default=50, ge=1, description="unknown this long after posting: re-post")
    app_name: str = Field(default="scaleops", min_length=1, description="the App-Name tag")
    timeout_seconds: float = Field(default=30, gt=0)

    _jwk = field_validator("wallet_jwk")(_check_jwk)

    @field_validator("gateway_url", "ipfs_api_url", "bundler_url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        checked = _http_url()(value)
        return None if checked is None else checked.rstrip("/")


class Settings(BaseSettings):
    """Everything scaleops reads from its environment. See README "Configuration"."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter=NESTED_DELIMITER,
        extra="ignore",
        validate_default=True,
        hide_input_in_errors=True,
    )

    postgres: PostgresSettings = Field(default_factory=PostgresSettings)
    redis: RedisSettings = Field(default_factory=RedisSettings)
    s3: S3Settings = Field(default_factory=S3Settings)
    cache: CacheSettings = Field(default_factory=CacheSettings)
    sandbox: SandboxSettings = Field(default_factory=SandboxSettings)
    backup: BackupSettings = Field(default_factory=BackupSettings)
    logging: LoggingSettings = Field(default_factory=LoggingSettings)
    alerts: AlertsSettings = Field(default_factory=AlertsSettings)
    alertmanager: AlertmanagerSettings = Field(default_factory=AlertmanagerSettings)
    chains: dict[str, ChainSettings] = Field(default_factory=dict, description="L2 posting targets by name")
    capacity: CapacitySettings = Field(default_factory=CapacitySettings)
    archive: ArchiveSettings = Field(default_factory=ArchiveSettings)
    cost: CostSettings = Field(default_factory=CostSettings)
    retries: int = Field(
        default=4,
        ge=0,
        le=10,
        description="retries of a transient error (refused, reset, timeout, 429/5xx) per task, with "
        "backoff 2, 4, 8, 16 s; read when the tasks are imported (scaleops.core.retry)",
    )
    prefect_api_url: str | None = Field(
        default=None,
        validation_alias=AliasChoices("PREFECT_API_URL", "SCALEOPS_PREFECT_API_URL"),
        description="Prefect API (PREFECT_API_URL); unset runs flows on a temporary local server",
    )

    _prefect_api = field_validator("prefect_api_url")(_http_url("Prefect API URL"))

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        config_file = os.environ.get(CONFIG_FILE_ENV)
        if config_file:
            path = Path(config_file)
            if not path.is_file():
                raise ConfigError([(CONFIG_FILE_ENV, f"config file {path} does not exist")])
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=path))
        return tuple(sources)

    @model_validator(mode="wrap")
    @classmethod
    def _remember_input_secrets(cls, data: Any, handler: ModelWrapValidatorHandler[Settings]) -> Settings:
        """When validation fails, keep the secret values of the input (no Settings exists to list them)
        so that `load_settings` masks them in whatever message a validator wrote."""
        try:
            return handler(data)
        except ValidationError:
            found: list[str] = []
            _input_secrets(cls, data, found)
            _FAILED_INPUT_SECRETS.set(tuple(found))
            raise

    def secrets(self) -> list[str]:
        """Every secret value in the settings, for the log filter and the report publisher."""
        found: list[str] = []

        def walk(value: Any) -> None:
            if isinstance(value, SecretStr):
                raw = value.get_secret_value()
                found.append(raw)
                password = url_password(raw)
                if password:
                    found.append(password)
            elif isinstance(value, str) and ("://" in value):
                password = url_password(value)
                if password:
                    found.append(password)
            elif isinstance(value, BaseModel):
                for name in type(value).model_fields:
                    walk(getattr(value, name))
            elif isinstance(value, list | tuple):
                for item in value:
                    walk(item)
            elif isinstance(value, dict):  # e.g. cache.warm_sets
                for item in value.values():
                    walk(item)

        walk(self)
        for chain in self.chains.values():
            if chain.signer_key is not None:  # a key also shows up without its 0x prefix
                found.append(chain.signer_key.get_secret_value().removeprefix("0x"))
            split = urlsplit(chain.rpc_url)
            if split.path.strip("/") or split.query:  # provider URLs carry API keys in the path or query
                found += [chain.rpc_url, split.path.strip("/"), split.query]
        if self.archive.wallet_jwk is not None:  # a JWK's private parts may show up one by one
            import json

            jwk = json.loads(self.archive.wallet_jwk.get_secret_value())
            found += [str(jwk[k]) for k in ("d", "p", "q", "dp", "dq", "qi") if k in jwk]
        return sorted({s for s in found if s and len(s) >= 4}, key=len, reverse=True)

    def masked(self) -> dict[str, Any]:
        """The effective settings as plain data, every secret masked (for `config show`)."""

        def dump(value: Any) -> Any:
            if isinstance(value, SecretStr):
                raw = value.get_secret_value()
                return mask_url_password(raw) if url_password(raw) else MASK
            if isinstance(value, str) and "://" in value:
                return mask_url_password(value)
            if isinstance(value, BaseModel):
                return {name: dump(getattr(value, name)) for name in type(value).model_fields}
            if isinstance(value, list | tuple):
                return [dump(v) for v in value]
            if isinstance(value, dict):  # e.g. cache.warm_sets
                return {str(k): dump(v) for k, v in value.items()}
            if isinstance(value, Path):
                return str(value)
            return value

        return dump(self)


_FAILED_INPUT_SECRETS: ContextVar[tuple[str, ...]] = ContextVar("scaleops_failed_input_secrets", default=())


def _input_secrets(model: type[BaseModel], data: Any, found: list[str]) -> None:
    """Collect, from raw settings input (env, TOML, overrides), every value given for a secret field,
    and the password of every URL or DSN, whatever its field."""
    if not isinstance(data, dict):
        return
    given = {str(k).lower(): v for k, v in data.items()}
    for name, field in model.model_fields.items():
        if name.lower() in given:
            _collect_secrets(field.annotation, given[name.lower()], found)
    if model is ChainSettings and isinstance(given.get("rpc_url"), str):
        split = urlsplit(given["rpc_url"])  # provider URLs carry API keys in the path or query
        found += [given["rpc_url"], split.path.strip("/"), split.query]


def _collect_secrets(annotation: Any, value: Any, found: list[str]) -> None:
    if isinstance(value, str) and ("://" in value or "=" in value):
        found.append(url_password(value) or "")
    if annotation is SecretStr:
        found.extend(_strings(value))
        return
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (typing.Union, UnionType):
        for arg in args:
            _collect_secrets(arg, value, found)
    elif origin in (list, tuple, set) and isinstance(value, list | tuple):
        for item in value:
            for arg in args:
                _collect_secrets(arg, item, found)
    elif origin is dict and isinstance(value, dict) and len(args) == 2:
        for item in value.values():
            _collect_secrets(args[1], item, found)
    elif isinstance(annotation, type) and issubclass(annotation, BaseModel):
        _input_secrets(annotation, value, found)


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value, url_password(value) or ""]
    if isinstance(value, list | tuple):
        return [s for item in value for s in _strings(item)]
    if isinstance(value, dict):
        return [s for item in value.values() for s in _strings(item)]
    return []


def env_name(loc: tuple[Any, ...]) -> str:
    """('redis', 'url') -> 'SCALEOPS_REDIS__URL' (the name a person sets)."""
    parts = [str(p) for p in loc if not isinstance(p, int)]
    if [p.lower() for p in parts] == ["prefect_api_url"]:  # the loc is the alias when given by it
        return "PREFECT_API_URL"
    return ENV_PREFIX + NESTED_DELIMITER.join(p.upper() for p in parts)


def load_settings(**overrides: Any) -> Settings:
    """Load and validate; raise ConfigError naming every bad field (never echoing its value)."""
    from scaleops.core.redaction import REDACTOR, Redactor

    token = _FAILED_INPUT_SECRETS.set(())
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        # A validator's message may quote what it could not parse (libpq quotes the bad token): mask
        # every secret of the input wherever it appears, and keep them masked in later logs too.
        secrets = [s for s in _FAILED_INPUT_SECRETS.get() if s]
        REDACTOR.add(*secrets)
        redactor = Redactor(secrets)
        problems = []
        for err in exc.errors(include_input=False, include_url=False):
            message = str(err["msg"]).removeprefix("Value error, ")
            problems.append((env_name(tuple(err["loc"])), redactor.text(message)))
        raise ConfigError(problems) from None
    except SettingsError as exc:  # a list/dict/model setting whose value is not JSON
        raise ConfigError(_unparsable(exc)) from None
    finally:
        _FAILED_INPUT_SECRETS.reset(token)


def _unparsable(exc: SettingsError) -> list[tuple[str, str]]:
    """pydantic-settings refuses a list, dict or model setting whose value is not JSON with an error
    naming only the top-level section (`error parsing value for field "backup"`): name the variable."""
    import json

    found = re.search(r'field "(\w+)"', str(exc))
    prefix = ENV_PREFIX + (found.group(1).upper() if found else "")
    problems = []
    for name, value in sorted(os.environ.items()):
        upper = name.upper()
        if upper != prefix and not upper.startswith(prefix + NESTED_DELIMITER):
            continue
        if not _is_structured(upper.removeprefix(ENV_PREFIX).lower().split(NESTED_DELIMITER)):
            continue
        try:
            json.loads(value)
        except ValueError as err:
            reason = getattr(err, "msg", "not JSON")
            problems.append((upper, f"not valid JSON ({reason}); a list or table is given as JSON"))
    return problems or [(prefix, "a list or table setting is not valid JSON")]


def _is_structured(path: list[str]) -> bool:
    """Whether the setting at `path` (field names, dict keys) is a list, dict or model (given as JSON)."""
    annotation: Any = Settings
    for part in path:
        annotation = _without_none(annotation)
        if typing.get_origin(annotation) is dict:
            annotation = typing.get_args(annotation)[1]
        elif isinstance(annotation, type) and issubclass(annotation, BaseModel):
            field = annotation.model_fields.get(part)
            if field is None:
                return False
            annotation = field.annotation
        else:
            return False
    annotation = _without_none(annotation)
    if typing.get_origin(annotation) in (list, tuple, set, dict):
        return True
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def _without_none(annotation: Any) -> Any:
    if typing.get_origin(annotation) in (typing.Union, UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return args[0] if len(args) == 1 else annotation
    return annotation
