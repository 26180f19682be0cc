"""The steps of duty arweave-archival: thin tasks over the plain functions, and the step functions
that fold what they return into the report."""

from __future__ import annotations

import hashlib
import random
from typing import TYPE_CHECKING, Any

from scaleops.core.clients import postgres_connect
from scaleops.core.redaction import REDACTOR
from scaleops.core.reporting import run_logger
from scaleops.core.retry import io_task
from scaleops.core.settings import Settings
from tasks.archive import ledger
from tasks.archive.ans104 import wallet_from_jwk
from tasks.archive.archiver import BudgetError, Context, archive_queued, crashpoint, reconcile
from tasks.archive.bundler import Bundler
from tasks.archive.collect import CHUNK, parse_s3_url, postgres_batches, postgres_rows, s3_new_objects
from tasks.archive.gateway import Gateway
from tasks.archive.ipfs import IMPORT_PARAMS, IpfsNode, raw_cid, same_cid
from tasks.archive.report import ArchiveReport, Finding, IpfsSummary
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


def bundler(settings: Settings) -> Any:
    """The upload service's client in mode bundler (or a context that yields None)."""
    from contextlib import nullcontext

    url = settings.archive.bundler_url
    if settings.archive.mode != "bundler":
        return nullcontext(None)
    if not url:
        raise ValueError("SCALEOPS_ARCHIVE__BUNDLER_URL is not set (SCALEOPS_ARCHIVE__MODE=bundler)")
    return Bundler(url, settings.archive.timeout_seconds)


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
    from scaleops.core.clients import s3_client

    source = settings.archive.sources[name]
    s3: list[Any] = []

    def s3_once() -> Any:
        if not s3:
            s3.append(s3_client(settings))
        return s3[0]

    added = deduplicated = 0
    with connect(settings) as conn:
        stored = ledger.source_watermark(conn, name)
        if source.kind == "postgres" and source.watermark:
            # batch by batch: the ledger commits a batch, then the watermark moves past it
            for batch, mark in postgres_batches(conn, source.query or "", source.watermark, stored, s3_once):
                a, d = ledger.add_content(conn, batch)
                added, deduplicated = added + a, deduplicated + d
                crashpoint("collected")
                ledger.set_source_watermark(conn, name, mark)
            return added, deduplicated
        if source.kind == "s3":
            found, watermark = s3_new_objects(s3_once(), source.url or "", stored)
        else:
            found, watermark = postgres_rows(conn, source.query or "", s3_once), None
        for start in range(0, len(found), CHUNK):
            a, d = ledger.add_content(conn, found[start : start + CHUNK])
            added, deduplicated = added + a, deduplicated + d
        crashpoint("collected")
        ledger.set_source_watermark(conn, name, watermark)
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
    with connect(settings) as conn, gateway(settings) as gw, bundler(settings) as up:
        ctx = Context(conn, gw, settings.archive, part, body_loader(settings, conn), up)
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
    report.found_by_tag += part.found_by_tag
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
@io_task(task_run_name="verify (sample {sample}, repair {repair})")
def verify_pass(
    settings: Settings, sample: float, repair: bool = False, seed: int | None = None
) -> dict[str, Any]:
    """Verify every confirmed item and a sample of verified ones on Arweave (and on IPFS where the item
    has a CID); record verdicts in the ledger; with `repair`, re-queue what Arweave lost and re-pin."""
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
        result: dict[str, Any] = {
            "verified": [i.first_key for i in verdicts.verified],
            "corrupt": [Finding(key=i.first_key, sha256=i.sha256, reason=why) for i, why in verdicts.corrupt],
            "missing": [Finding(key=i.first_key, sha256=i.sha256, reason=why) for i, why in verdicts.missing],
            "ipfs": IpfsSummary(),
            "repaired": [],
        }
        if settings.archive.ipfs_api_url:
            wanted = {i.sha256 for i in todo}
            on_ipfs = [
                (i, p)
                for i, p in ledger.with_cid(conn, ["verified", "corrupt", "missing"])
                if i.sha256 in wanted
            ]
            with IpfsNode(settings.archive.ipfs_api_url, settings.archive.timeout_seconds) as node:
                ok, lost = ipfs_check(node, on_ipfs)
                result["ipfs"] = IpfsSummary(verified=len(ok), missing=lost)
                if repair and lost:
                    load = body_loader(settings, conn)
                    by_sha = {i.sha256: i for i, _ in on_ipfs}
                    files = [(f.sha256, load(by_sha[f.sha256])) for f in lost]
                    cids = node.add(files)
                    ledger.set_cids(conn, [(sha, cids[sha], IMPORT_PARAMS) for sha, _ in files])
                    result["repaired"] += [
                        Finding(key=f.key, sha256=f.sha256, reason=f"re-pinned as {cids[f.sha256]}")
                        for f in lost
                    ]
        if repair:
            lost_arweave = result["corrupt"] + result["missing"]
            ledger.requeue(conn, [f.sha256 for f in lost_arweave])
            result["repaired"] += [
                Finding(key=f.key, sha256=f.sha256, reason="re-queued for archiving") for f in lost_arweave
            ]
    return result


def verify(settings: Settings, report: ArchiveReport, sample: float, repair: bool = False) -> None:
    result = verify_pass(settings, sample, repair)
    report.items_verified += len(result["verified"])
    report.corrupt += result["corrupt"]
    report.missing += result["missing"]
    report.ipfs.verified += result["ipfs"].verified
    report.ipfs.missing += result["ipfs"].missing
    report.repaired += result["repaired"]
    repaired = {f.sha256 for f in result["repaired"]}
    for finding in result["corrupt"]:
        report.problem(f"{finding.key}: corrupt on Arweave ({finding.reason})")
    for finding in result["missing"]:
        report.problem(f"{finding.key}: missing on Arweave ({finding.reason})")
    for finding in result["ipfs"].missing:
        message = f"{finding.key}: missing on IPFS ({finding.reason})"
        report.problem(message, severity="warn" if finding.sha256 in repaired else "error")


def pin(settings: Settings, report: ArchiveReport) -> None:
    report.ipfs.pinned += ipfs_pin_pass(settings)


# ------------------------------------------------------------------------------------------------ IPFS
IPFS_BATCH_BYTES = 32 * 1024 * 1024


@io_task(task_run_name="ipfs add + pin")
def ipfs_pin_pass(settings: Settings) -> int:
    """Add every archived item not yet on IPFS (CIDv1, raw leaves), pinned, in batches; record CIDs."""
    url = settings.archive.ipfs_api_url
    if not url:
        return 0
    pinned = 0
    with connect(settings) as conn, IpfsNode(url, settings.archive.timeout_seconds) as node:
        load = body_loader(settings, conn)
        todo = ledger.without_cid(conn)
        batch: list[tuple[str, bytes]] = []
        size = 0

        def flush() -> int:
            cids = node.add(batch)
            for sha, body in batch:
                local = raw_cid(body)
                if local is not None and not same_cid(local, cids[sha]):
                    raise RuntimeError(f"IPFS node gave {cids[sha]} for {sha}, expected {local}")
            ledger.set_cids(conn, [(sha, cids[sha], IMPORT_PARAMS) for sha, _ in batch])
            return len(batch)

        for item in todo:
            body = load(item)
            batch.append((item.sha256, body))
            size += len(body)
            if size >= IPFS_BATCH_BYTES or len(batch) >= 200:
                pinned += flush()
                batch, size = [], 0
        if batch:
            pinned += flush()
    return pinned


def ipfs_check(
    node: IpfsNode, items: list[tuple[ledger.Item, dict[str, Any]]]
) -> tuple[list[str], list[Finding]]:
    """(keys verified, findings missing) for items on IPFS: pinned, `cat` gives the ledger's bytes, and the
    CID recomputed from those bytes with the recorded import parameters is the recorded CID."""
    pins = node.pinned() if items else set()
    ok: list[str] = []
    missing: list[Finding] = []
    from tasks.archive.ipfs import cid_bytes

    for item, params in items:
        cid = item.ipfs_cid or ""
        if cid_bytes(cid) not in pins:
            missing.append(Finding(key=item.first_key, sha256=item.sha256, reason=f"{cid} is not pinned"))
            continue
        data = node.cat(cid)
        if data is None:
            missing.append(
                Finding(key=item.first_key, sha256=item.sha256, reason=f"{cid}: the node has no bytes")
            )
            continue
        if hashlib.sha256(data).hexdigest() != item.sha256:
            missing.append(Finding(key=item.first_key, sha256=item.sha256, reason=f"{cid}: other bytes"))
            continue
        again = raw_cid(data) if params.get("raw_leaves") and params.get("cid_version") == 1 else None
        again = again or node.only_hash(data, params or IMPORT_PARAMS)
        if not same_cid(again, cid):
            missing.append(
                Finding(key=item.first_key, sha256=item.sha256, reason=f"{cid}: recomputed {again}")
            )
            continue
        ok.append(item.first_key)
    return ok, missing
