"""The steps of duty arweave-archival: thin tasks over the plain functions, and the step functions
that fold what they return into the report."""

from __future__ import annotations

import random
from typing import TYPE_CHECKING, Any

from scaleops.core.clients import postgres_connect
from scaleops.core.redaction import REDACTOR
from scaleops.core.reporting import run_logger
from scaleops.core.retry import io_task
from scaleops.core.settings import Settings
from tasks.archive import ledger
from tasks.archive.ans104 import wallet_from_jwk
from tasks.archive.archiver import BudgetError, Context, archive_queued, reconcile
from tasks.archive.collect import CHUNK, parse_s3_url, postgres_rows, s3_new_objects
from tasks.archive.gateway import Gateway
from tasks.archive.report import ArchiveReport, Finding
from tasks.archive.verify import verify_items

if TYPE_CHECKING:
    import psycopg


def connect(settings: Settings) -> psycopg.Connection[Any]:
    conn = postgres_connect(settings, autocommit=True)
    ledger.ensure_schema(conn)
    return conn


def gateway(settings: Settings) -> Gateway:
    if not settings.archive.gateway_url:
        raise ValueError("SCALEOPS_ARCHIVE__GATEWAY_URL is not set")
    return Gateway(settings.archive.gateway_url, settings.archive.timeout_seconds)


def body_loader(settings: Settings, conn: Any) -> Any:
    """Bytes of a queued item: kept in the ledger, or read again from its S3 source."""
    s3: Any = None

    def load(item: ledger.Item) -> bytes:
        nonlocal s3
        body, url = (
            (item.body, item.source_url) if item.body is not None else ledger.item_body(conn, item.sha256)
        )
        if body is not None:
            return body
        if url is None:
            raise RuntimeError(f"{item.first_key}: the ledger holds neither its bytes nor a source URL")
        if s3 is None:
            from scaleops.core.clients import s3_client

            s3 = s3_client(settings)
        bucket, key = parse_s3_url(url)
        return bytes(s3.get_object(Bucket=bucket, Key=key)["Body"].read())

    return load


# ------------------------------------------------------------------------------------------------ collect
@io_task(task_run_name="collect {name}")
def collect_source(settings: Settings, name: str) -> tuple[int, int]:
    """New content of one configured source into the ledger: (added, deduplicated)."""
    source = settings.archive.sources[name]
    with connect(settings) as conn:
        if source.kind == "s3":
            from scaleops.core.clients import s3_client

            row = conn.execute("select watermark from archive_sources where name = %s", (name,)).fetchone()
            found, watermark = s3_new_objects(s3_client(settings), source.url or "", row[0] if row else None)
        else:
            found, watermark = postgres_rows(conn, source.query or ""), None
        added = deduplicated = 0
        for start in range(0, len(found), CHUNK):
            a, d = ledger.add_content(conn, found[start : start + CHUNK])
            added, deduplicated = added + a, deduplicated + d
        conn.execute(
            "insert into archive_sources (name, watermark) values (%s, %s) on conflict (name) do update"
            " set watermark = coalesce(excluded.watermark, archive_sources.watermark), updated_at = now()",
            (name, watermark),
        )
    return added, deduplicated


def collect_sources(settings: Settings, report: ArchiveReport) -> None:
    for name in sorted(settings.archive.sources):
        try:
            added, deduplicated = collect_source(settings, name)
        except Exception as exc:
            report.step_failed(f"source {name}: {REDACTOR.text(str(exc))}")
            continue
        report.collected[name] = added
        report.deduplicated += deduplicated


# ------------------------------------------------------------------------------------------------ archive
@io_task(task_run_name="archive (dry run: {dry_run})")
def archive_pass(settings: Settings, dry_run: bool) -> ArchiveReport:
    """Reconcile what was written ahead, then bundle, price, sign, write ahead and post the queue."""
    part = ArchiveReport(dry_run=dry_run)
    jwk = settings.archive.wallet_jwk
    with connect(settings) as conn, gateway(settings) as gw:
        ctx = Context(conn, gw, settings.archive, part, body_loader(settings, conn))
        if dry_run:
            part.items_queued = len(ledger.queued(conn))
            return part
        reconcile(ctx)
        if jwk is None:
            raise ValueError("SCALEOPS_ARCHIVE__WALLET_JWK is not set")
        try:
            archive_queued(ctx, wallet_from_jwk(jwk.get_secret_value()))
        except BudgetError as exc:
            part.problem(f"refused to start: {exc}")
    return part


def archive(settings: Settings, report: ArchiveReport, dry_run: bool) -> None:
    part = archive_pass(settings, dry_run)
    for name in ("items_queued", "items_signed", "items_posted", "items_confirmed"):
        setattr(report, name, getattr(report, name) + getattr(part, name))
    for bundle in part.bundles:
        report.pay(bundle)
    report.pending += part.pending
    report.reposted += part.reposted
    report.budget_capped = report.budget_capped or part.budget_capped
    for problem in part.problems:
        report.problem(problem)
    run_logger().info(
        "archive: %d signed, %d posted, %d confirmed, %d winston",
        report.items_signed,
        report.items_posted,
        report.items_confirmed,
        report.winston_paid,
    )


# ------------------------------------------------------------------------------------------------ verify
@io_task(task_run_name="verify (sample {sample})")
def verify_pass(settings: Settings, sample: float, seed: int | None = None) -> dict[str, list[Any]]:
    """Verify every confirmed item and a sample of verified ones; record verdicts in the ledger."""
    with connect(settings) as conn, gateway(settings) as gw:
        todo = ledger.items(conn, ["confirmed"])
        old = ledger.items(conn, ["verified"])
        rng = random.Random(seed)
        todo += [i for i in old if rng.random() < sample]
        verdicts = verify_items(gw, todo)
        updates: list[tuple[str, str, str | None]] = [(i.sha256, "verified", None) for i in verdicts.verified]
        updates += [(i.sha256, "corrupt", why) for i, why in verdicts.corrupt]
        updates += [(i.sha256, "missing", why) for i, why in verdicts.missing]
        ledger.set_item_status(conn, updates)
    return {
        "verified": [i.first_key for i in verdicts.verified],
        "corrupt": [Finding(key=i.first_key, sha256=i.sha256, reason=why) for i, why in verdicts.corrupt],
        "missing": [Finding(key=i.first_key, sha256=i.sha256, reason=why) for i, why in verdicts.missing],
    }


def verify(settings: Settings, report: ArchiveReport, sample: float) -> None:
    result = verify_pass(settings, sample)
    report.items_verified += len(result["verified"])
    report.corrupt += result["corrupt"]
    report.missing += result["missing"]
    for finding in result["corrupt"]:
        report.problem(f"{finding.key}: corrupt on Arweave ({finding.reason})")
    for finding in result["missing"]:
        report.problem(f"{finding.key}: missing on Arweave ({finding.reason})")
