"""The pay-once archiving protocol of duty arweave-archival.

    reconcile (every signed-but-unconfirmed bundle: post what was written ahead and never reached the
    gateway, confirm, re-queue what the gateway dropped) -> plan bundles -> price + budget
    -> sign items and the bundle transaction -> write ahead (ONE transaction) -> post -> mark posted

Why it pays once: a bundle transaction's id is fixed by its signature and stored (with its bytes)
before it is posted, so whatever crashes, the next run asks the gateway about that id and posts the
same bytes again if the gateway never saw them: a transaction is mined at most once, and nothing is
signed anew until the gateway has forgotten the old one for `drop_after_blocks`.

`SCALEOPS_ARCHIVE_CRASH_AT=<step>` makes the process SIGKILL itself at that step (crash tests only).
"""

from __future__ import annotations

import hashlib
import os
import signal
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from scaleops.core.settings import ArchiveSettings
from tasks.archive import ledger
from tasks.archive.ans104 import (
    MAX_TAGS,
    DataItem,
    Tag,
    Wallet,
    b64url,
    bundle_items,
    chunk_proofs,
    create_data_item,
    encode_tags,
    sign_transaction,
    unbundle,
)
from tasks.archive.bundler import Bundler
from tasks.archive.gateway import Gateway
from tasks.archive.report import ArchiveReport, BundleRecord, Finding
from tasks.archive.verify import find_archived

CRASH_ENV = "SCALEOPS_ARCHIVE_CRASH_AT"
CRASH_STEPS = ("collected", "signed", "sent", "posted")
APP_VERSION = "1"
BUNDLE_OVERHEAD = 32  # the bundle's item count
ITEM_OVERHEAD = 64 + 2 + 512 + 512 + 2 + 16  # header entry + fixed item fields
SIGNING_THREADS = max(1, min(4, os.cpu_count() or 1))  # OpenSSL signs outside the GIL


def crashpoint(step: str) -> None:
    """Failpoint for the crash tests: die here, as abruptly as a power cut, when asked to."""
    if os.environ.get(CRASH_ENV) == step:
        os.kill(os.getpid(), signal.SIGKILL)


class BudgetError(RuntimeError):
    """The wallet cannot pay for the first bundle: the run refuses to start archiving."""


SOURCE_KEY_BYTES = 2048  # a longer key is cut: our tags must leave room in an item's 4096 tag bytes
RESERVED_TAGS = ("Content-Type", "Content-SHA256", "App-Name", "App-Version", "Source-Key")


def standard_tags(sha256: str, content_type: str, key: str, app_name: str) -> list[Tag]:
    return [
        ("Content-Type", content_type),
        ("Content-SHA256", sha256),
        ("App-Name", app_name),
        ("App-Version", APP_VERSION),
        ("Source-Key", key.encode()[:SOURCE_KEY_BYTES].decode(errors="ignore")),
    ]


def item_tags(item: ledger.Item, app_name: str) -> list[Tag]:
    """The data item's tags: ours (what verification and GraphQL look up), then those given by hand."""
    return standard_tags(item.sha256, item.content_type, item.first_key, app_name) + list(item.tags)


def parse_tag(text: str) -> Tag:
    """`name=value` (the value may contain '='), or ValueError."""
    name, sep, value = text.partition("=")
    if not sep:
        raise ValueError(f"{text[:40]!r} is not name=value")
    return name, value


def check_user_tags(tags: Sequence[Tag], key: str, content_type: str, app_name: str) -> None:
    """ANS-104's limits for tags given by hand, with ours: names 1-1024 and values 1-3072 bytes, at
    most 128 tags and 4096 encoded bytes per item, and none of our own tag names (they are what
    verification trusts). ValueError naming the tag."""
    reserved = {n.lower() for n in RESERVED_TAGS}
    for name, _ in tags:
        if name.lower() in reserved:
            raise ValueError(f"tag {name!r} is set by scaleops itself ({', '.join(RESERVED_TAGS)})")
    if len(RESERVED_TAGS) + len(tags) > MAX_TAGS:
        raise ValueError(f"at most {MAX_TAGS - len(RESERVED_TAGS)} tags besides scaleops' own")
    encode_tags(standard_tags("0" * 64, content_type, key, app_name) + list(tags))


def estimated_size(item: ledger.Item) -> int:
    tags = sum(len(n.encode()) + len(v.encode()) + 4 for n, v in item.tags)
    return ITEM_OVERHEAD + item.size + 400 + len(item.first_key.encode()) + tags  # tags: a generous bound


def plan_bundles(items: Sequence[ledger.Item], max_bytes: int) -> list[list[ledger.Item]]:
    """Pack items in order into bundles of at most `max_bytes` (an item larger alone gets its own)."""
    bundles: list[list[ledger.Item]] = []
    current: list[ledger.Item] = []
    size = BUNDLE_OVERHEAD
    for item in items:
        need = estimated_size(item)
        if current and size + need > max_bytes:
            bundles.append(current)
            current, size = [], BUNDLE_OVERHEAD
        current.append(item)
        size += need
    if current:
        bundles.append(current)
    return bundles


def split_winston(total: int, sizes: Sequence[int]) -> list[int]:
    """Each item's share of its bundle's price, in proportion to its size; the shares add up to total."""
    whole = sum(sizes) or 1
    shares = [total * s // whole for s in sizes]
    if shares:
        shares[-1] += total - sum(shares)
    return shares


@dataclass
class Context:
    conn: Any
    gateway: Gateway
    settings: ArchiveSettings
    report: ArchiveReport
    load_body: Callable[[ledger.Item], bytes]
    bundler: Bundler | None = None  # mode bundler: the Turbo-compatible upload service


# ------------------------------------------------------------------------------------------------ bundler
UPLOAD_THREADS = 8  # uploads wait on the service, not on our CPU


def need_bundler(ctx: Context) -> Bundler:
    if ctx.bundler is None:
        raise ValueError("SCALEOPS_ARCHIVE__BUNDLER_URL is not set (SCALEOPS_ARCHIVE__MODE=bundler)")
    return ctx.bundler


def batch_id(signed: Sequence[DataItem]) -> str:
    """The ledger's name of a batch of items uploaded to the service (fixed by the items' signatures)."""
    return "bundler-" + b64url(hashlib.sha256(b"".join(s.raw_id for s in signed)).digest())


def upload_items(bundler: Bundler, items: Sequence[DataItem]) -> tuple[dict[str, Any], int, int]:
    """Upload every item (an id the service already has answers with its receipt again, unpaid):
    (receipts by item id, winston of all the receipts, winston charged now for items it did not have)."""
    with ThreadPoolExecutor(UPLOAD_THREADS) as pool:
        answers = list(pool.map(lambda item: bundler.upload(item.raw), items))
    receipts = {item.id: receipt for item, (receipt, _) in zip(items, answers, strict=True)}
    total = sum(int(receipt.get("winc", 0)) for receipt, _ in answers)
    charged = sum(int(receipt.get("winc", 0)) for receipt, new in answers if new)
    return receipts, total, charged


def write_signed_ahead(
    ctx: Context,
    record: ledger.Bundle,
    data: bytes,
    members: Sequence[ledger.Item],
    signed: Sequence[DataItem],
    shares: Sequence[int],
) -> None:
    """Both modes: the signed batch and each item's share of its price are in the ledger before a byte
    leaves (what a crash after this point finds, and never pays for again)."""
    ledger.write_ahead(
        ctx.conn,
        record,
        data,
        [(item.sha256, s.id, w) for item, s, w in zip(members, signed, shares, strict=True)],
    )
    ctx.report.items_signed += len(signed)
    crashpoint("signed")


def upload_batch(
    ctx: Context, members: Sequence[ledger.Item], signed: Sequence[DataItem], data: bytes, price: int
) -> int:
    """Mode bundler: write the batch's items ahead (as one ledger bundle, its bytes the items in ANS-104
    bundle layout), upload each signed item, store the receipts. Returns the winston charged."""
    name = batch_id(signed)
    shares = split_winston(price, [len(s.raw) for s in signed])
    raw_tx = {"id": name, "items": [s.id for s in signed]}
    record = ledger.Bundle(name, "bundler", "signed", raw_tx, len(signed), len(data), price)
    write_signed_ahead(ctx, record, data, members, signed, shares)
    receipts, total, charged = upload_items(need_bundler(ctx), signed)
    crashpoint("sent")
    ledger.mark_posted(ctx.conn, name, ctx.gateway.height(), receipts=receipts, winston=total)
    crashpoint("posted")
    ctx.report.items_posted += len(signed)
    ctx.report.pay(
        BundleRecord(tx_id=name, items=len(signed), bytes=len(data), winston=charged, mode="bundler")
    )
    return charged


def reconcile_bundler(ctx: Context, bundle: ledger.Bundle, height: int) -> None:
    """A batch uploaded to the service and not yet confirmed: upload again what it may not have (after a
    crash; the service answers a known id with its receipt), then confirm each item whose bundle (as the
    service names it) has enough confirmations on the gateway."""
    bundler = need_bundler(ctx)
    if bundle.status == "signed":
        items = [item for _, item in unbundle(bundle.data)]
        receipts, total, charged = upload_items(bundler, items)
        ledger.mark_posted(ctx.conn, bundle.tx_id, height, receipts=receipts, winston=total)
        ctx.report.items_posted += bundle.items
        if charged:
            ctx.report.pay(
                BundleRecord(
                    tx_id=bundle.tx_id, items=bundle.items, bytes=bundle.size, winston=charged, mode="bundler"
                )
            )
        return
    raw = {item_id: item for item_id, item in unbundle(bundle.data)}
    confirmed: list[tuple[str, str]] = []
    for item in ledger.items_of_bundle(ctx.conn, bundle.tx_id):
        said = bundler.status(item.item_id or "")
        if said is None:  # the service lost it: the same signed item again (its id, paid once)
            bundler.upload(raw[item.item_id or ""].raw)
            reason = "the upload service did not know it: uploaded again"
        elif not said.get("bundleId"):
            reason = f"the upload service has it ({said.get('status')}), not yet in a bundle"
        else:
            status = ctx.gateway.status(str(said["bundleId"]))
            if status.known and status.confirmations >= ctx.settings.confirmations:
                confirmed.append((item.item_id or "", str(said["bundleId"])))
                continue
            have = status.confirmations if status.known else 0
            reason = f"in bundle {said['bundleId']}: {have}/{ctx.settings.confirmations} confirmations"
        ctx.report.pending.append(Finding(key=item.first_key, sha256=item.sha256, reason=reason))
    ctx.report.items_confirmed += ledger.confirm_items(ctx.conn, bundle.tx_id, confirmed)


def has_data(gateway: Gateway, bundle: ledger.Bundle) -> bool:
    """Does the gateway serve all of a bundle's bytes (after a crash in the middle of its chunks)?"""
    served = gateway.data(bundle.tx_id)
    return served is not None and len(served) == bundle.size


def reconcile(ctx: Context) -> None:
    """Ask the gateway about every bundle written ahead and not yet confirmed, before signing anything."""
    live = ledger.live_bundles(ctx.conn)
    if not live:
        return
    height = ctx.gateway.height()
    for bundle in live:
        if bundle.mode == "bundler":
            reconcile_bundler(ctx, bundle, height)
            continue
        status = ctx.gateway.status(bundle.tx_id)
        if bundle.status == "signed":
            chunked = bundle.mode == "gateway" and bundle.size > ctx.settings.chunked_above_bytes
            if not status.known:  # written ahead, never reached the gateway: the same bytes, paid once
                ctx.gateway.post_transaction(bundle.raw_tx, bundle.data, chunked)
            elif chunked and not has_data(ctx.gateway, bundle):  # the header went, not all chunks
                ctx.gateway.post_chunks(bundle.raw_tx, bundle.data)
            ledger.mark_posted(ctx.conn, bundle.tx_id, height)
            ctx.report.items_posted += bundle.items
            if not status.known:
                ctx.report.pay(
                    BundleRecord(
                        tx_id=bundle.tx_id,
                        items=bundle.items,
                        bytes=bundle.size,
                        winston=bundle.winston,
                        mode=bundle.mode,
                        chunks=len(chunk_proofs(bundle.data)) if chunked else 0,
                    )
                )
            continue
        if status.known and status.confirmations >= ctx.settings.confirmations:
            ctx.report.items_confirmed += ledger.mark_confirmed(ctx.conn, bundle.tx_id, status.block_height)
        elif not status.known and height - (bundle.posted_height or height) > ctx.settings.drop_after_blocks:
            requeued, failed = ledger.mark_dropped(ctx.conn, bundle.tx_id)
            for key in requeued:
                ctx.report.reposted.append(
                    Finding(key=key, sha256="", reason=f"bundle {bundle.tx_id} dropped")
                )
            for key in failed:
                ctx.report.problem(f"{key}: dropped by the gateway again after a re-post")
        else:
            for item in ledger.items_of_bundle(ctx.conn, bundle.tx_id):
                confirmations = status.confirmations if status.known else 0
                ctx.report.pending.append(
                    Finding(
                        key=item.first_key,
                        sha256=item.sha256,
                        reason=f"bundle {bundle.tx_id}: {confirmations}/{ctx.settings.confirmations} "
                        "confirmations"
                        if status.known
                        else f"bundle {bundle.tx_id} not seen by the gateway",
                    )
                )


def adopt_archived(ctx: Context, owner: str, queue: Sequence[ledger.Item]) -> set[str]:
    """Queued items the gateway already holds, signed by our wallet (GraphQL by `Content-SHA256`,
    checked on our side): recorded, never signed nor paid again. Mined with enough confirmations they
    are `confirmed` (verification checks them by tag); otherwise they stay queued and are skipped this
    run, so a transaction still pending is not paid twice either. Returns their SHA-256s."""
    found = find_archived(ctx.gateway, queue, owner)
    if not found:
        return set()
    height = ctx.gateway.height()
    by_sha = {item.sha256: item for item in queue}
    confirmed = []
    for sha, hit in found.items():
        item = by_sha[sha]
        depth = height - hit.block_height + 1 if hit.block_height is not None else 0
        where = f"item {hit.item_id}" + (f" in bundle {hit.bundle_id}" if hit.bundle_id else "")
        if depth >= ctx.settings.confirmations:
            confirmed.append((sha, hit.item_id, hit.bundle_id))
            reason = f"{where}, {depth} confirmations: recorded, not signed again"
        else:
            reason = f"{where}, {depth}/{ctx.settings.confirmations} confirmations: not signed again"
            ctx.report.pending.append(
                Finding(key=item.first_key, sha256=sha, reason=f"found by tag: {reason}")
            )
        ctx.report.found_by_tag.append(Finding(key=item.first_key, sha256=sha, reason=reason))
    ctx.report.items_confirmed += ledger.adopt(ctx.conn, confirmed)
    return set(found)


def archive_queued(ctx: Context, wallet: Wallet) -> None:
    """Bundle, price, sign, write ahead and post every queued item, within the run's budget."""
    queue = ledger.queued(ctx.conn)
    ctx.report.items_queued = len(queue)
    if not queue:
        return
    adopted = adopt_archived(ctx, wallet.address, queue)
    queue = [item for item in queue if item.sha256 not in adopted]
    if not queue:
        return
    plans = plan_bundles(queue, ctx.settings.max_bundle_bytes)
    spent = 0
    for number, members in enumerate(plans):
        bodies = [ctx.load_body(item) for item in members]
        for item, body in zip(members, bodies, strict=True):
            if hashlib.sha256(body).hexdigest() != item.sha256:
                raise RuntimeError(f"{item.first_key}: its source no longer holds the queued bytes")
        with ThreadPoolExecutor(SIGNING_THREADS) as pool:  # RSA-4096 signing: ~12 ms per item
            signed = list(
                pool.map(
                    lambda pair: create_data_item(wallet, pair[1], item_tags(pair[0], ctx.settings.app_name)),
                    zip(members, bodies, strict=True),
                )
            )
        data = bundle_items(signed)
        price = ctx.gateway.price(len(data))
        if number == 0:
            if ctx.settings.mode == "bundler":
                balance, payer = need_bundler(ctx).balance(wallet.address), "the upload service's credit for"
            else:
                balance, payer = ctx.gateway.balance(wallet.address), "wallet"
            if balance < price:
                raise BudgetError(
                    f"{payer} {wallet.address} holds {balance} winston; the first bundle costs {price}"
                )
        if spent + price > ctx.settings.max_winston_per_run:
            ctx.report.budget_capped = True
            ctx.report.problem(
                f"budget cap: {len(queue) - sum(len(p) for p in plans[:number])} item(s) left queued; "
                f"the next bundle ({price} winston) would pass SCALEOPS_ARCHIVE__MAX_WINSTON_PER_RUN "
                f"({ctx.settings.max_winston_per_run}; {spent} spent)"
            )
            return
        if ctx.settings.mode == "bundler":
            spent += upload_batch(ctx, members, signed, data, price)
            continue
        tx = sign_transaction(wallet, data, price, ctx.gateway.anchor())
        shares = split_winston(price, [len(s.raw) for s in signed])
        record = ledger.Bundle(tx["id"], "gateway", "signed", tx, len(signed), len(data), price)
        write_signed_ahead(ctx, record, data, members, signed, shares)
        chunked = len(data) > ctx.settings.chunked_above_bytes
        ctx.gateway.post_transaction(tx, data, chunked)
        crashpoint("sent")
        ledger.mark_posted(ctx.conn, tx["id"], ctx.gateway.height())
        crashpoint("posted")
        spent += price
        ctx.report.items_posted += len(signed)
        ctx.report.pay(
            BundleRecord(
                tx_id=tx["id"],
                items=len(signed),
                bytes=len(data),
                winston=price,
                mode="gateway",
                chunks=len(chunk_proofs(data)) if chunked else 0,
            )
        )
