"""The pay-once protocol without services: a fake gateway and an in-memory ledger record the order of
effects (write-ahead before every post, reconcile before any signing), the budget and the dedupe."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pytest

from scaleops.core.settings import ArchiveSettings, ConfigError, load_settings
from tasks.archive import archiver, ledger
from tasks.archive.ans104 import (
    Wallet,
    b64url,
    generate_jwk,
    unbundle,
    verify_transaction,
    wallet_from_jwk,
)
from tasks.archive.archiver import (
    BudgetError,
    Context,
    archive_queued,
    plan_bundles,
    reconcile,
    split_winston,
)
from tasks.archive.gateway import TxStatus
from tasks.archive.ledger import Item, NewContent
from tasks.archive.report import ArchiveReport
from tasks.archive.verify import Verdicts, check_bundle, verify_items

PRICE_PER_BYTE = 10


@pytest.fixture(scope="module")
def wallet() -> Wallet:
    return wallet_from_jwk(generate_jwk())


class FakeGateway:
    def __init__(self, balance: int = 10**15):
        self.balance_ = balance
        self.txs: dict[str, dict[str, Any]] = {}
        self.mined: dict[str, int] = {}
        self.current = 100
        self.log: list[str] = []
        self.nodes: list[dict[str, Any]] = []  # what GraphQL finds
        self.served: dict[str, bytes] = {}  # GET /{id}

    def price(self, size: int) -> int:
        return size * PRICE_PER_BYTE

    def anchor(self) -> str:
        return "A" * 64

    def balance(self, address: str) -> int:
        return self.balance_

    def height(self) -> int:
        return self.current

    def post_transaction(self, tx: dict[str, Any], data: bytes, chunked: bool = False) -> None:
        assert verify_transaction(tx, data)
        self.log.append(f"post {tx['id']}" + (" chunked" if chunked else ""))
        if tx["id"] not in self.txs:
            self.txs[tx["id"]] = tx
            self.balance_ -= int(tx["reward"])

    def find_by_tag(self, tag: str, values: list[str], owner: str | None = None) -> list[dict[str, Any]]:
        self.log.append("graphql")
        return [
            n
            for n in self.nodes
            if any(t["name"] == tag and t["value"] in values for t in n["tags"])
            and (owner is None or n["owner"]["address"] == owner)
        ]

    def data(self, tx_or_item_id: str) -> bytes | None:
        return self.served.get(tx_or_item_id)

    def status(self, tx_id: str) -> TxStatus:
        if tx_id not in self.txs:
            return TxStatus(known=False)
        if tx_id not in self.mined:
            return TxStatus(known=True)
        return TxStatus(True, self.current - self.mined[tx_id], self.mined[tx_id])


class FakeLedger:
    """The archiver's ledger calls, in memory, logging write-aheads into the gateway's log."""

    def __init__(self, gateway: FakeGateway):
        self.items: dict[str, Item] = {}
        self.bundles: dict[str, ledger.Bundle] = {}
        self.gw = gateway

    def add(self, *contents: NewContent) -> None:
        for c in contents:
            if c.sha256 in self.items:
                self.items[c.sha256].keys.append(c.key)
            else:
                self.items[c.sha256] = Item(
                    c.sha256, c.size, c.content_type, c.key, [c.key], "queued", body=c.body
                )

    def queued(self, conn: Any, limit: int = 10_000) -> list[Item]:
        return [i for i in self.items.values() if i.status == "queued"]

    def write_ahead(self, conn: Any, bundle: ledger.Bundle, data: bytes, members: Any) -> None:
        self.gw.log.append(f"write-ahead {bundle.tx_id}")
        bundle.data = data
        self.bundles[bundle.tx_id] = bundle
        for sha, item_id, winston in members:
            item = self.items[sha]
            assert item.status == "queued"
            item.status, item.item_id, item.bundle_id, item.winston = "signed", item_id, bundle.tx_id, winston

    def _set(self, tx_id: str, status: str, old: tuple[str, ...]) -> int:
        n = 0
        for item in self.items.values():
            if item.bundle_id == tx_id and item.status in old:
                item.status, n = status, n + 1
        return n

    def mark_posted(
        self, conn: Any, tx_id: str, height: int | None, receipts: Any = None, winston: int | None = None
    ) -> None:
        self.gw.log.append(f"mark-posted {tx_id}")
        b = self.bundles[tx_id]
        if b.status == "signed":
            b.status, b.posted_height = "posted", height
            b.winston = b.winston if winston is None else winston
        self._set(tx_id, "posted", ("signed",))

    def confirm_items(self, conn: Any, batch: str, confirmed: list[tuple[str, str]]) -> int:
        n = 0
        for item_id, bundle_id in confirmed:
            for item in self.items.values():
                if (
                    item.item_id == item_id
                    and item.bundle_id == batch
                    and item.status in ("signed", "posted")
                ):
                    item.status, item.bundle_id, n = "confirmed", bundle_id, n + 1
        if not any(i.bundle_id == batch for i in self.items.values()):
            self.bundles[batch].status = "confirmed"
        return n

    def live_bundles(self, conn: Any) -> list[ledger.Bundle]:
        return [b for b in self.bundles.values() if b.status in ("signed", "posted")]

    def mark_confirmed(self, conn: Any, tx_id: str, block_height: int | None) -> int:
        self.bundles[tx_id].status = "confirmed"
        return self._set(tx_id, "confirmed", ("signed", "posted"))

    def mark_dropped(self, conn: Any, tx_id: str, max_reposts: int = 1) -> tuple[list[str], list[str]]:
        self.bundles[tx_id].status = "dropped"
        requeued, failed = [], []
        for item in self.items.values():
            if item.bundle_id != tx_id:
                continue
            if item.reposts < max_reposts:
                item.status, item.item_id, item.bundle_id, item.reposts = (
                    "queued",
                    None,
                    None,
                    item.reposts + 1,
                )
                requeued.append(item.first_key)
            else:
                item.status = "failed"
                failed.append(item.first_key)
        return requeued, failed

    def items_of_bundle(self, conn: Any, tx_id: str) -> list[Item]:
        return [i for i in self.items.values() if i.bundle_id == tx_id]


@pytest.fixture
def world(monkeypatch: pytest.MonkeyPatch) -> tuple[FakeGateway, FakeLedger]:
    gw = FakeGateway()
    fake = FakeLedger(gw)
    for name in ("queued", "write_ahead", "mark_posted", "live_bundles", "mark_confirmed", "mark_dropped"):
        monkeypatch.setattr(archiver.ledger, name, getattr(fake, name))
    monkeypatch.setattr(archiver.ledger, "items_of_bundle", fake.items_of_bundle)
    monkeypatch.setattr(archiver.ledger, "confirm_items", fake.confirm_items)
    return gw, fake


def context(gw: FakeGateway, **settings: Any) -> Context:
    values = {"confirmations": 2, "drop_after_blocks": 5, **settings}
    return Context(None, gw, ArchiveSettings(**values), ArchiveReport(), lambda item: item.body or b"")  # type: ignore[arg-type]


def contents(n: int, size: int = 100) -> list[NewContent]:
    return [NewContent.of(f"key-{i}", hashlib.sha256(bytes([i])).digest() * (size // 32)) for i in range(n)]


def test_write_ahead_precedes_every_post(world: tuple[FakeGateway, FakeLedger], wallet: Wallet) -> None:
    gw, fake = world
    fake.add(*contents(5))
    ctx = context(gw, max_bundle_bytes=4000)
    archive_queued(ctx, wallet)
    assert len(ctx.report.bundles) == len(gw.txs) >= 2
    for tx_id in gw.txs:
        assert gw.log.index(f"write-ahead {tx_id}") < gw.log.index(f"post {tx_id}")
    assert ctx.report.winston_paid == sum(int(t["reward"]) for t in gw.txs.values())
    assert all(i.status == "posted" for i in fake.items.values())
    # every item's share adds up to its bundle's price
    for tx_id, tx in gw.txs.items():
        assert sum(i.winston for i in fake.items.values() if i.bundle_id == tx_id) == int(tx["reward"])


def test_items_are_tagged_and_signed(world: tuple[FakeGateway, FakeLedger], wallet: Wallet) -> None:
    gw, fake = world
    fake.add(NewContent.of("nft/1.json", b'{"a": 1}', "application/json"))
    archive_queued(context(gw), wallet)
    bundle = next(iter(fake.bundles.values()))
    (item_id, item), *_ = unbundle(bundle.data)
    assert item.verify() and item.data == b'{"a": 1}'
    assert dict(item.tags) == {
        "Content-Type": "application/json",
        "Content-SHA256": hashlib.sha256(b'{"a": 1}').hexdigest(),
        "App-Name": "scaleops",
        "App-Version": "1",
        "Source-Key": "nft/1.json",
    }


def test_a_crash_after_write_ahead_is_posted_by_the_next_run_once(
    world: tuple[FakeGateway, FakeLedger], wallet: Wallet, monkeypatch: pytest.MonkeyPatch
) -> None:
    gw, fake = world
    fake.add(*contents(3))

    def crash(step: str) -> None:
        if step == "signed":
            raise SystemExit("killed")

    monkeypatch.setattr(archiver, "crashpoint", crash)
    with pytest.raises(SystemExit):
        archive_queued(context(gw), wallet)
    assert gw.txs == {} and len(fake.bundles) == 1
    monkeypatch.setattr(archiver, "crashpoint", lambda step: None)
    ctx = context(gw)
    reconcile(ctx)
    archive_queued(ctx, wallet)
    assert list(gw.txs) == list(fake.bundles) and ctx.report.items_signed == 0
    before = gw.balance_
    reconcile(context(gw))  # again: the gateway knows it now, nothing is posted twice
    assert gw.balance_ == before and gw.log.count(f"post {next(iter(gw.txs))}") == 1


def test_confirmations_then_dropped_and_requeued_once(
    world: tuple[FakeGateway, FakeLedger], wallet: Wallet
) -> None:
    gw, fake = world
    fake.add(*contents(2))
    archive_queued(context(gw), wallet)
    first = next(iter(gw.txs))
    gw.mined[first] = gw.current
    gw.current += 1
    ctx = context(gw)
    reconcile(ctx)
    assert ctx.report.items_confirmed == 0 and len(ctx.report.pending) == 2  # 1 of 2 confirmations
    gw.current += 1
    ctx = context(gw)
    reconcile(ctx)
    assert ctx.report.items_confirmed == 2

    fake.add(NewContent.of("lost", b"lost bytes"))
    archive_queued(context(gw), wallet)
    lost = next(b for b in fake.bundles.values() if b.status == "posted")
    del gw.txs[lost.tx_id]  # the gateway forgot it
    gw.current += 10
    ctx = context(gw)
    reconcile(ctx)
    assert [f.key for f in ctx.report.reposted] == ["lost"]
    archive_queued(ctx, wallet)  # signed anew: a new id
    again = next(b for b in fake.bundles.values() if b.status == "posted")
    assert again.tx_id != lost.tx_id
    del gw.txs[again.tx_id]
    gw.current += 10
    ctx = context(gw)
    reconcile(ctx)
    assert ctx.report.reposted == [] and any("dropped by the gateway again" in p for p in ctx.report.problems)


def test_budget_cap_and_refusal(world: tuple[FakeGateway, FakeLedger], wallet: Wallet) -> None:
    gw, fake = world
    fake.add(*contents(4, size=1000))
    one = (archiver.estimated_size(fake.queued(None)[0]) + 32) * PRICE_PER_BYTE
    ctx = context(gw, max_bundle_bytes=2000, max_winston_per_run=int(one * 1.5))
    archive_queued(ctx, wallet)
    assert ctx.report.budget_capped and ctx.report.outcome() == "budget-cap" and len(ctx.report.bundles) == 1
    assert ctx.report.winston_paid <= int(one * 1.5) and len(fake.queued(None)) == 3

    gw.balance_ = 5
    with pytest.raises(BudgetError, match="holds 5 winston"):
        archive_queued(context(gw), wallet)
    assert len(gw.txs) == 1


def test_plan_and_split() -> None:
    items = [Item(str(i), 1000, "x", f"k{i}", [], "queued") for i in range(5)]
    plans = plan_bundles(items, 2 * archiver.estimated_size(items[0]) + 32)
    assert [len(p) for p in plans] == [2, 2, 1]
    assert [len(p) for p in plan_bundles(items[:1], 10)] == [1]  # too big alone: its own bundle
    assert split_winston(100, [1, 1, 1]) == [33, 33, 34]
    assert sum(split_winston(10**12 + 7, [5, 300, 12])) == 10**12 + 7


def test_check_bundle_flags_forged_and_foreign_items(wallet: Wallet) -> None:
    from tasks.archive.ans104 import DataItem, bundle_items, create_data_item

    good = create_data_item(wallet, b"good", [("a", "b")])
    bad = create_data_item(wallet, b"bad!", [("a", "b")])
    forged = DataItem(bad.raw[:-1] + b"?")
    data = bundle_items([good, forged])

    def member(item: DataItem, body: bytes, key: str) -> Item:
        return Item(hashlib.sha256(body).hexdigest(), len(body), "x", key, [key], "confirmed", item.id, "B")

    verdicts = Verdicts()
    passed = check_bundle(data, [member(good, b"good", "g"), member(bad, b"bad!", "f")], verdicts)
    assert [p.first_key for p in passed] == ["g"]
    assert [(i.first_key, why) for i, why in verdicts.corrupt] == [
        ("f", "data item signature does not verify")
    ]
    verdicts = Verdicts()
    check_bundle(b"\x00" * 10, [member(good, b"good", "g")], verdicts)
    assert "unreadable" in verdicts.corrupt[0][1]


def test_dedupe_is_by_content() -> None:
    a, b = NewContent.of("a.json", b"same"), NewContent.of("other/name", b"same")
    assert a.sha256 == b.sha256 == hashlib.sha256(b"same").hexdigest() and a.key != b.key


def test_bad_wallet_and_sources_name_the_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SCALEOPS_ARCHIVE__WALLET_JWK", '{"kty": "EC"}')
    monkeypatch.setenv("SCALEOPS_ARCHIVE__SOURCES", json.dumps({"m": {"kind": "s3", "url": "bucket/x"}}))
    with pytest.raises(ConfigError) as caught:
        load_settings()
    names = [name for name, _ in caught.value.problems]
    assert "SCALEOPS_ARCHIVE__WALLET_JWK" in names and "SCALEOPS_ARCHIVE__SOURCES__M" in names
    assert "EC" not in str(caught.value)


@pytest.mark.parametrize(
    "source",
    [
        {"kind": "postgres", "query": "select 1", "watermark": "id; drop table archive_items"},
        {"kind": "s3", "url": "s3://b/p", "watermark": "id"},
    ],
)
def test_a_bad_watermark_names_the_source(monkeypatch: pytest.MonkeyPatch, source: dict[str, str]) -> None:
    monkeypatch.setenv("SCALEOPS_ARCHIVE__SOURCES", json.dumps({"meta": source}))
    with pytest.raises(ConfigError) as caught:
        load_settings()
    assert [name for name, _ in caught.value.problems][0].startswith("SCALEOPS_ARCHIVE__SOURCES__META")


def test_the_wallet_private_parts_are_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    jwk = generate_jwk()
    monkeypatch.setenv("SCALEOPS_ARCHIVE__WALLET_JWK", json.dumps(jwk))
    secrets = load_settings().secrets()
    assert all(jwk[k] in secrets for k in ("d", "p", "q", "dp", "dq", "qi"))
    assert jwk["n"] not in secrets  # the public modulus is no secret


def graphql_node(wallet: Wallet, item: Any, data: bytes, height: int | None) -> dict[str, Any]:
    """What a gateway's GraphQL says about a data item (arlocal: no bundledIn)."""
    return {
        "id": item.id,
        "signature": b64url(item.signature),
        "anchor": "",
        "recipient": "",
        "owner": {"key": b64url(wallet.owner), "address": wallet.address},
        "tags": [{"name": n, "value": v} for n, v in item.tags],
        "block": {"height": height} if height is not None else None,
        "bundledIn": None,
    }


@pytest.mark.parametrize("height", [90, 100, None])
def test_queued_content_already_on_the_gateway_is_found_by_tag_and_never_paid_again(
    world: tuple[FakeGateway, FakeLedger], wallet: Wallet, monkeypatch: pytest.MonkeyPatch, height: int | None
) -> None:
    gw, fake = world
    adopted: list[Any] = []

    def adopt(conn: Any, found: list[Any]) -> int:
        adopted.extend(found)
        return len(found)

    monkeypatch.setattr(archiver.ledger, "adopt", adopt)
    kept, new = contents(2)
    fake.add(kept, new)
    # the ledger lost the record of `kept` (say, a crash between posting and recording it)
    posted = archiver.create_data_item(
        wallet, kept.body or b"", archiver.item_tags(fake.items[kept.sha256], "scaleops")
    )
    gw.nodes.append(graphql_node(wallet, posted, kept.body or b"", height))
    gw.served[posted.id] = kept.body or b""
    ctx = context(gw)  # 2 confirmations; the chain is at 100
    archive_queued(ctx, wallet)
    assert gw.log[0] == "graphql"  # looked up before anything is signed
    assert ctx.report.items_signed == 1 and len(gw.txs) == 1  # only `new`
    assert [f.key for f in ctx.report.found_by_tag] == ["key-0"]
    if height == 90:  # 11 confirmations: recorded as confirmed with the id found
        assert adopted == [(kept.sha256, posted.id, None)] and ctx.report.items_confirmed == 1
    else:  # pending or too shallow: neither recorded nor signed again this run
        assert adopted == [] and [f.key for f in ctx.report.pending] == ["key-0"]
    assert fake.items[kept.sha256].status == "queued"  # (the fake ledger does not adopt)


def test_a_forged_or_foreign_item_found_by_tag_is_not_adopted(
    world: tuple[FakeGateway, FakeLedger], wallet: Wallet
) -> None:
    gw, fake = world
    (c,) = contents(1)
    fake.add(c)
    tags = archiver.item_tags(fake.items[c.sha256], "scaleops")
    other = wallet_from_jwk(generate_jwk())
    forged = archiver.create_data_item(wallet, c.body or b"", tags)
    node = graphql_node(wallet, forged, c.body or b"", 1)
    node["tags"] = [*node["tags"], {"name": "Extra", "value": "x"}]  # the signature no longer covers it
    foreign = archiver.create_data_item(other, c.body or b"", tags)  # the same bytes, someone else's
    gw.nodes += [node, graphql_node(other, foreign, c.body or b"", 1)]
    gw.served.update({forged.id: c.body or b"", foreign.id: c.body or b""})
    ctx = context(gw)
    archive_queued(ctx, wallet)
    assert ctx.report.found_by_tag == [] and ctx.report.items_signed == 1


def test_verify_by_tag_checks_the_rebuilt_item(wallet: Wallet) -> None:
    gw = FakeGateway()
    good, bad, gone = contents(3)
    items = []
    for c in (good, bad, gone):
        tags = archiver.item_tags(
            Item(c.sha256, c.size, c.content_type, c.key, [c.key], "queued"), "scaleops"
        )
        d = archiver.create_data_item(wallet, c.body or b"", tags)
        gw.nodes.append(graphql_node(wallet, d, c.body or b"", 1))
        gw.served[d.id] = c.body or b""
        items.append(Item(c.sha256, c.size, c.content_type, c.key, [c.key], "confirmed", item_id=d.id))
    gw.served[items[1].item_id or ""] = b"other bytes"
    gw.nodes = gw.nodes[:2]  # GraphQL no longer finds the third
    verdicts = verify_items(gw, items)  # type: ignore[arg-type]
    assert [i.first_key for i in verdicts.verified] == ["key-0"]
    assert [(i.first_key, "other bytes" in why) for i, why in verdicts.corrupt] == [("key-1", True)]
    assert [(i.first_key, "GraphQL finds no item" in why) for i, why in verdicts.missing] == [("key-2", True)]


def test_a_bundle_above_the_threshold_goes_by_chunks(
    world: tuple[FakeGateway, FakeLedger], wallet: Wallet
) -> None:
    gw, fake = world
    fake.add(*contents(3, size=200 * 1024))  # one bundle of ~600 KiB
    ctx = context(gw, chunked_above_bytes=512 * 1024)
    archive_queued(ctx, wallet)
    (bundle,) = ctx.report.bundles
    assert bundle.bytes > 512 * 1024 and bundle.chunks == 3  # 256 KiB chunks, the last two balanced
    assert [line for line in gw.log if line.startswith("post")] == [f"post {bundle.tx_id} chunked"]

    fake.add(*contents(1, size=1000))
    small = context(gw, chunked_above_bytes=512 * 1024)
    archive_queued(small, wallet)
    assert small.report.bundles[0].chunks == 0 and not gw.log[-1].endswith("chunked")


class FakeBundler:
    """A Turbo-compatible upload service: verifies items, dedupes ids, bundles when asked."""

    def __init__(self, gw: FakeGateway):
        self.gw = gw
        self.items: dict[str, str | None] = {}  # id -> bundle id
        self.uploads = 0

    def upload(self, raw: bytes) -> tuple[dict[str, Any], bool]:
        item = archiver.DataItem(raw)
        assert item.verify()
        self.gw.log.append(f"upload {item.id}")
        self.uploads += 1
        new = item.id not in self.items
        self.items.setdefault(item.id, None)
        return {"id": item.id, "winc": str(len(raw))}, new

    def status(self, item_id: str) -> dict[str, Any] | None:
        if item_id not in self.items:
            return None
        return {"status": "CONFIRMED", "bundleId": self.items[item_id]}

    def balance(self, address: str) -> int:
        return 10**15

    def bundle(self, tx_id: str, height: int) -> None:
        for item_id in self.items:
            self.items[item_id] = tx_id
        self.gw.txs[tx_id] = {"id": tx_id}
        self.gw.mined[tx_id] = height


def test_bundler_mode_writes_ahead_uploads_and_confirms_through_the_service(
    world: tuple[FakeGateway, FakeLedger], wallet: Wallet, monkeypatch: pytest.MonkeyPatch
) -> None:
    gw, fake = world
    service = FakeBundler(gw)
    fake.add(*contents(3))
    ctx = context(gw, mode="bundler")
    ctx.bundler = service  # type: ignore[assignment]
    monkeypatch.setattr(archiver, "crashpoint", lambda step: None)
    archive_queued(ctx, wallet)
    (batch,) = ctx.report.bundles
    assert batch.mode == "bundler" and batch.tx_id.startswith("bundler-") and ctx.report.items_posted == 3
    raws = [item.raw for _, item in archiver.unbundle(fake.bundles[batch.tx_id].data)]
    assert batch.winston == ctx.report.winston_paid == sum(len(r) for r in raws)  # the receipts' winc
    order = [
        line.split()[0] for line in gw.log if line.split()[0] in ("write-ahead", "upload", "mark-posted")
    ]
    assert order == ["write-ahead", "upload", "upload", "upload", "mark-posted"]
    assert gw.txs == {}  # nothing posted to the gateway by us

    later = context(gw, mode="bundler")
    later.bundler = service  # type: ignore[assignment]
    reconcile(later)  # not yet in a bundle: pending
    assert len(later.report.pending) == 3 and "not yet in a bundle" in later.report.pending[0].reason
    service.bundle("L1" * 21 + "x", height=95)  # 6 confirmations at height 100
    done = context(gw, mode="bundler")
    done.bundler = service  # type: ignore[assignment]
    reconcile(done)
    assert done.report.items_confirmed == 3 and fake.bundles[batch.tx_id].status == "confirmed"
    assert {i.bundle_id for i in fake.items.values()} == {"L1" * 21 + "x"}


def test_bundler_mode_after_a_crash_uploads_again_and_pays_once(
    world: tuple[FakeGateway, FakeLedger], wallet: Wallet, monkeypatch: pytest.MonkeyPatch
) -> None:
    gw, fake = world
    service = FakeBundler(gw)
    fake.add(*contents(2))

    class Crash(Exception):
        pass

    def crash(step: str) -> None:
        if step == "sent":
            raise Crash

    monkeypatch.setattr(archiver, "crashpoint", crash)
    ctx = context(gw, mode="bundler")
    ctx.bundler = service  # type: ignore[assignment]
    with pytest.raises(Crash):  # uploaded, receipts never recorded
        archive_queued(ctx, wallet)
    (batch,) = fake.bundles.values()
    assert batch.status == "signed" and service.uploads == 2
    again = context(gw, mode="bundler")
    again.bundler = service  # type: ignore[assignment]
    reconcile(again)
    assert batch.status == "posted" and service.uploads == 4 and len(service.items) == 2
    assert again.report.winston_paid == 0  # the service had both: nothing charged again
    assert batch.winston == sum(len(archiver.unbundle(batch.data)[i][1].raw) for i in range(2))


def test_mode_bundler_needs_the_service(monkeypatch: pytest.MonkeyPatch) -> None:
    from flows.arweave_archival import needs

    monkeypatch.setenv("SCALEOPS_ARCHIVE__MODE", "bundler")
    monkeypatch.delenv("SCALEOPS_ARCHIVE__BUNDLER_URL", raising=False)
    assert any("SCALEOPS_ARCHIVE__BUNDLER_URL" in m for m in needs(load_settings()))
    monkeypatch.setenv("SCALEOPS_ARCHIVE__BUNDLER_URL", "http://127.0.0.1:1")
    assert not any("BUNDLER_URL" in m for m in needs(load_settings()))
