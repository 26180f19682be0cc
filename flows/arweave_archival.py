"""Duty `arweave-archival`: make each piece of the platform's lasting content permanent on Arweave,
paid for once, and proven retrievable later.

Steps: collect new content from the configured sources into the ledger (deduplicated by SHA-256),
reconcile every bundle written ahead and not yet confirmed (post what never reached the gateway,
confirm, re-queue what the gateway dropped), bundle, price (within the run's budget), sign (ANS-104
data items in a format-2 transaction) with write-ahead in the ledger, post, and verify confirmed items
and a sample of old ones on our side (signature, id, SHA-256); the same bytes are added to IPFS (CIDv1,
raw leaves), pinned, and checked by `cat` and a recomputed CID. One report, one artifact, one event.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated

from pydantic import Field

from scaleops.core.duties import duty
from scaleops.core.reporting import as_datetime
from scaleops.core.settings import Settings
from tasks.archive.report import ArchiveReport
from tasks.archive.steps import archive, collect_sources, pin, verify


def needs(settings: Settings) -> list[str]:
    missing = []
    if not settings.archive.gateway_url:
        missing.append("no Arweave gateway (SCALEOPS_ARCHIVE__GATEWAY_URL)")
    if settings.archive.wallet_jwk is None:
        missing.append("no archive wallet (SCALEOPS_ARCHIVE__WALLET_JWK)")
    if settings.archive.mode == "bundler" and not settings.archive.bundler_url:
        missing.append("mode bundler without an upload service (SCALEOPS_ARCHIVE__BUNDLER_URL)")
    return missing


@duty(
    "arweave-archival",
    namespace="archive",
    report=ArchiveReport,
    summary="archive new content on Arweave (deduplicated, bundled, signed, paid once within a budget), "
    "confirm it, and verify archived bytes and signatures later",
    needs=needs,
)
def arweave_archival(
    settings: Settings,
    as_of: datetime | date | None = None,
    verify_sample: Annotated[float, Field(ge=0, le=1)] = 0.01,
    repair: bool = False,
    dry_run: bool = False,
) -> ArchiveReport:
    """Collect, reconcile, archive the queue, pin on IPFS, verify.

    Args:
        as_of: the run's clock (default now).
        verify_sample: fraction of already verified items downloaded and checked again (0 to 1).
        repair: re-queue content corrupt or missing on Arweave (paid again) and re-pin content missing
            on IPFS from its source.
        dry_run: report what is queued; collect, sign, post and pin nothing.
    """
    report = ArchiveReport(as_of=as_datetime(as_of), dry_run=dry_run)
    if not dry_run:
        collect_sources(settings, report)
    archive(settings, report, dry_run)
    if not dry_run:
        pin(settings, report)
        verify(settings, report, verify_sample, repair)
    return report
