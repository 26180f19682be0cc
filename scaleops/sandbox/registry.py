"""Every sandbox service, in start order (dependencies before dependents). A new service lives in its
own module under scaleops/sandbox/ and is added here."""

from __future__ import annotations

from scaleops.sandbox.alerting import AlertBridge, Alertmanager
from scaleops.sandbox.anvil import AnvilArbitrum, AnvilOptimism, AnvilZkSync
from scaleops.sandbox.arweave import Arlocal, TurboStandin
from scaleops.sandbox.backup_sample import BackupSample
from scaleops.sandbox.cache_source import CacheSource
from scaleops.sandbox.cost_estate import CostEstate
from scaleops.sandbox.ipfs import Ipfs
from scaleops.sandbox.prometheus import Prometheus
from scaleops.sandbox.services import (
    S3,
    Postgres,
    PostgresReplica,
    PrefectServer,
    PrefectWorker,
    Redis,
    RedisCluster,
    S3Replicator,
    Service,
)
from scaleops.sandbox.solana import SolanaLiteSvm

SERVICES: tuple[type[Service], ...] = (
    Postgres,
    PostgresReplica,
    BackupSample,
    Redis,
    RedisCluster,
    S3,
    S3Replicator,
    PrefectServer,
    CacheSource,
    AlertBridge,
    Alertmanager,
    AnvilOptimism,
    AnvilArbitrum,
    AnvilZkSync,
    SolanaLiteSvm,
    Arlocal,
    TurboStandin,
    Ipfs,
    CostEstate,
    Prometheus,
    PrefectWorker,  # last: it starts once every other service is up (see Service.after_all)
)
