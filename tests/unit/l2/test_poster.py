"""The posting lifecycle of tasks/l2/poster.py without services: a toy chain family over an in-memory
outbox (the same functions as tasks/l2/outbox.py, on dicts) and an in-memory node."""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Collection, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from typing import Any

import pytest

from scaleops.core.settings import ChainSettings
from tasks.l2 import poster
from tasks.l2.outbox import Attempt, Batch, Landing, Op, SignedTx
from tasks.l2.poster import (
    CRASH_ENV,
    BatchPoster,
    ChainReport,
    Draft,
    OverBlockLimit,
    Packing,
    PostingError,
    PostOptions,
    Rejected,
    Unpostable,
    crashpoint,
)

CHAIN, SIGNER = "toy", "toy-signer"


@dataclass
class Row:
    id: int
    key: str
    payload: Any
    status: str = "pending"
    batch_id: int | None = None
    error: str | None = None


@dataclass
class BatchRow:
    id: int
    status: str
    op_count: int
    error: str | None = None
    attempts: list[Attempt] = field(default_factory=list)
    landed: Landing | None = None


class MemoryOutbox:
    """What tasks/l2/outbox.py does to l2_operations and l2_batches, on dicts (one chain, one signer)."""

    def __init__(self, payloads: list[Any]):
        self.ops = {i: Row(i, f"key-{i}", p) for i, p in enumerate(payloads, 1)}
        self.batches: dict[int, BatchRow] = {}
        self.lock_held_elsewhere = False

    @contextmanager
    def posting_lock(self, conn: Any, key: str) -> Iterator[bool]:
        assert key == poster.lock_key(CHAIN, SIGNER)
        yield not self.lock_held_elsewhere

    def count_open(self, conn: Any, chain: str) -> int:
        return sum(r.status not in ("confirmed", "failed") for r in self.ops.values())

    def of(self, batch_id: int) -> list[Row]:
        return [r for r in self.ops.values() if r.batch_id == batch_id]

    def release_unsigned_batches(self, conn: Any, chain: str, signer: str) -> int:
        released = 0
        for b in self.batches.values():
            if b.status == "batched":
                b.status = "abandoned"
                for r in self.of(b.id):
                    r.status, r.batch_id, released = "pending", None, released + 1
        return released

    def live_batches(self, conn: Any, chain: str, signer: str) -> list[Batch]:
        return [
            Batch(b.id, b.status, None, b.op_count, 1, 1, 0, None, None, 0, None, list(b.attempts))
            for b in self.batches.values()
            if b.status in ("signed", "broadcast", "mined")
        ]

    def pending_operations(self, conn: Any, chain: str, limit: int) -> list[Op]:
        pending = [r for r in self.ops.values() if r.status == "pending"][:limit]
        return [Op(r.id, r.key, "toy", r.payload) for r in pending]

    def fail_unpostable(self, conn: Any, report: Any, chain: str, failures: list[tuple[int, str]]) -> None:
        for op_id, reason in failures:
            self.ops[op_id].status, self.ops[op_id].error = "failed", reason
        if failures:
            report.failed += len(failures)
            report.problems.append(f"{chain}: {len(failures)} operation(s) failed: {failures[0][1]}")

    def create_batch(self, conn: Any, chain: str, signer: str, ops: Collection[Op], size_bytes: int) -> int:
        batch_id = len(self.batches) + 1
        self.batches[batch_id] = BatchRow(batch_id, "batched", len(ops))
        for op in ops:
            self.ops[op.id].status, self.ops[op.id].batch_id = "batched", batch_id
        return batch_id

    def move(self, batch_id: int, status: str, op_status: str, reason: str | None = None) -> None:
        self.batches[batch_id].status, self.batches[batch_id].error = status, reason
        for r in self.of(batch_id):
            r.status, r.error = op_status, reason
            if op_status == "pending":
                r.batch_id = None

    def shrink_batch(self, conn: Any, batch_id: int, keep: Collection[int], size_bytes: int) -> int:
        assert self.batches[batch_id].status == "batched"
        released = 0
        for r in self.of(batch_id):
            if r.id not in keep:
                r.status, r.batch_id, released = "pending", None, released + 1
        self.batches[batch_id].op_count = len(keep)
        return released

    def release_batch(self, conn: Any, batch_id: int, reason: str) -> None:
        self.move(batch_id, "abandoned", "pending", reason)

    def record_signed(self, conn: Any, batch_id: int, tx: SignedTx) -> None:
        assert self.batches[batch_id].status == "batched"
        self.batches[batch_id].attempts.append(Attempt(tx.tx_hash, tx.raw))
        self.move(batch_id, "signed", "signed")

    def mark_broadcast(self, conn: Any, batch_id: int) -> None:
        if self.batches[batch_id].status in ("signed", "broadcast"):
            self.move(batch_id, "broadcast", "broadcast")

    def requeue_batch(self, conn: Any, batch_id: int, reason: str) -> None:
        self.move(batch_id, "failed", "pending", reason)

    def fail_batch(self, conn: Any, batch_id: int, reason: str) -> None:
        self.move(batch_id, "failed", "failed", reason)

    def confirm_batch(
        self,
        conn: Any,
        batch_id: int,
        landing: Landing,
        confirmations: int,
        unposted: Collection[int] = (),
        unposted_error: str = "",
    ) -> int | None:
        batch = self.batches[batch_id]
        for r in self.of(batch_id):
            if r.id in unposted:
                r.status, r.error = "failed", unposted_error
            elif r.status != "failed":
                r.status = "confirmed"
        if batch.status not in ("broadcast", "mined"):
            return None
        batch.status, batch.landed = "confirmed", landing
        return batch.op_count

    def statuses(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for r in self.ops.values():
            counts[r.status] = counts.get(r.status, 0) + 1
        return counts


@dataclass
class ToyDraft(Draft):
    batch_id: int
    ops: list[Op]


class ToyNode:
    def __init__(self, store: MemoryOutbox):
        self.store = store
        self.pool: list[bytes] = []
        self.refuse = False

    def send(self, raw: bytes) -> None:
        written_ahead = {a.raw for b in self.store.batches.values() for a in b.attempts}
        assert raw in written_ahead, "broadcast before the write-ahead"
        if self.refuse:
            raise Rejected("insufficient funds")
        self.pool.append(raw)


class Conn:
    """A connection whose transactions the in-memory outbox does not need."""

    def transaction(self) -> nullcontext[None]:
        return nullcontext()


class ToyPoster(BatchPoster[ToyDraft]):
    """One unit of fee per operation; a payload "huge" fits no batch, "bad" makes its batch unpostable,
    "giant" needs a block of its own and more; a block holds `block_ops` operations; whatever reached
    the node's pool lands and is confirmed at the next look."""

    def __init__(
        self,
        node: ToyNode,
        options: PostOptions,
        fee_cap: int = 1_000,
        max_batch_ops: int = 3,
        block_ops: int | None = None,
    ):
        cfg = ChainSettings(
            rpc_url="http://127.0.0.1:1",
            chain_id=1,
            kind="evm",
            max_batch_ops=max_batch_ops,
            max_fee_per_batch=fee_cap,
        )
        super().__init__(Conn(), CHAIN, cfg, options, SIGNER)
        self.node = node
        self.prepared = False
        self.block_ops = block_ops

    def before_posting(self) -> None:
        self.prepared = True

    def pack(self, ops: list[Op]) -> Packing:
        unfit = [(op.id, "payload does not fit") for op in ops if op.payload == "huge"]
        fit = [op for op in ops if op.payload != "huge"]
        return Packing(fit, len(fit), unfit)

    def price(self, batch_id: int, ops: list[Op]) -> ToyDraft:
        if any(op.payload == "bad" for op in ops):
            raise Unpostable("simulation failed")
        if any(op.payload == "giant" for op in ops) or len(ops) > (self.block_ops or len(ops)):
            raise OverBlockLimit(f"{len(ops)} ops need more gas than a block holds")
        return ToyDraft(len(ops), f"{len(ops)} units", batch_id, ops)

    def sign(self, draft: ToyDraft) -> SignedTx:
        raw = f"batch {draft.batch_id}: {[op.id for op in draft.ops]}".encode()
        return SignedTx(raw, f"0x{draft.batch_id:04x}", 1, 1, draft.max_cost)

    def send(self, raw: bytes) -> None:
        self.node.send(raw)

    def follow(self, batch: Batch) -> None:
        for attempt in batch.attempts:
            if attempt.raw in self.node.pool:
                self.confirm(batch, Landing(attempt.tx_hash, attempt.raw, 1, 1, fee_paid=batch.op_count), 1)
                return

    def count_fees(self, landing: Landing) -> None:
        self.report.l2_fee_wei += int(landing.fee_paid or 0)

    def fees_paid(self) -> int:
        return self.report.l2_fee_wei


@pytest.fixture
def steps(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The crash points passed, in order (none of them kills)."""
    passed: list[str] = []
    monkeypatch.setattr(poster, "crashpoint", passed.append)
    return passed


def toy(monkeypatch: pytest.MonkeyPatch, payloads: list[Any]) -> tuple[MemoryOutbox, ToyNode]:
    """An in-memory outbox holding `payloads` as pending operations (ids from 1), in place of the real
    one, and a node."""
    store = MemoryOutbox(payloads)
    monkeypatch.setattr(poster, "outbox", store)
    return store, ToyNode(store)


def run(node: ToyNode, fee_cap: int = 1_000, **options: Any) -> tuple[ToyPoster, ChainReport]:
    options.setdefault("wait_seconds", 1.0)
    options.setdefault("poll_seconds", 0.0)
    toy_poster = ToyPoster(node, PostOptions(**options), fee_cap)
    return toy_poster, toy_poster.run()


def test_drains_in_batches_written_ahead_and_confirms_each_once(
    monkeypatch: pytest.MonkeyPatch, steps: list[str]
) -> None:
    store, node = toy(monkeypatch, ["a"] * 7)
    _, report = run(node)
    assert store.statuses() == {"confirmed": 7}
    assert [b.op_count for b in store.batches.values()] == [3, 3, 1]
    assert (report.ops_posted, report.batches, report.txs, report.pending) == (7, 3, 3, 0)
    assert report.fee_per_op == 1 and report.problems == [] and len(report.batch_hashes) == 3
    # per batch: claimed, written ahead, sent, recorded as broadcast; then the confirmations
    assert steps == ["batched", "signed", "sent", "broadcast"] * 3 + ["confirmed"] * 3


def test_a_held_lock_or_a_dry_run_posts_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    store, node = toy(monkeypatch, ["a", "a"])
    store.lock_held_elsewhere = True
    toy_poster, report = run(node)
    assert "another run holds the posting lock for signer toy-signer" in report.problems[0]
    assert report.pending == 2 and not toy_poster.prepared and not store.batches
    store.lock_held_elsewhere = False
    toy_poster, report = run(node, dry_run=True)
    assert report.pending == 2 and report.problems == [] and not toy_poster.prepared and not store.batches


def test_fee_cap_releases_the_batch_unsigned_and_stops_draining(monkeypatch: pytest.MonkeyPatch) -> None:
    store, node = toy(monkeypatch, ["a"] * 5)
    _, report = run(node, fee_cap=2)
    assert report.fee_capped == 3 and report.txs == 0 and report.pending == 5
    assert report.problems == ["toy: fee cap: 3 units > MAX_FEE_PER_BATCH 2; operations left pending"]
    assert [b.status for b in store.batches.values()] == ["abandoned"]  # the next batch was not claimed
    assert store.statuses() == {"pending": 5} and node.pool == []


def test_a_refused_transaction_puts_its_operations_back_and_stops_draining(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    store, node = toy(monkeypatch, ["a"] * 5)
    node.refuse = True
    _, report = run(node)
    assert report.txs == 1 and report.pending == 5
    assert "batch 1 was rejected by the node (insufficient funds)" in report.problems[0]
    assert [b.status for b in store.batches.values()] == ["failed"]
    assert store.statuses() == {"pending": 5}
    node.refuse = False
    _, report = run(node)
    assert report.ops_posted == 5 and store.statuses() == {"confirmed": 5}


def test_unfit_operations_and_unpostable_batches_fail_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    store, node = toy(monkeypatch, ["huge", "bad", "a", "a", "a", "a"])
    _, report = run(node)
    # of the first three claimed, op 1 fits no batch and ops 2-3 make one that can never be posted;
    # ops 4-6 go on in the next batch
    assert report.failed == 3 and report.ops_posted == 3 and report.pending == 0
    assert store.ops[1].error == "payload does not fit"
    assert store.ops[2].error == store.ops[3].error == "simulation failed"
    assert report.problems == [
        "toy: 1 operation(s) failed: payload does not fit",
        "toy: batch 1 failed: simulation failed",
    ]


def test_a_batch_over_the_block_limit_is_halved_and_the_rest_posted_in_the_same_run(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    store, node = toy(monkeypatch, ["a"] * 10)
    toy_poster = ToyPoster(
        node, PostOptions(wait_seconds=1.0, poll_seconds=0.0), max_batch_ops=8, block_ops=3
    )
    report = toy_poster.run()
    # 8 claimed, cut to 4, then to 2, which fits; the run's next batches start at 2
    assert [b.op_count for b in store.batches.values()] == [2, 2, 2, 2, 2]
    assert report.split == 2 and report.problems == [] and report.failed == 0
    assert (report.ops_posted, report.batches, report.txs, report.pending) == (10, 5, 5, 0)
    assert store.statuses() == {"confirmed": 10}
    sent = [op_id for raw in node.pool for op_id in json.loads(raw.decode().split(": ", 1)[1])]
    assert sorted(sent) == list(range(1, 11))  # every operation sent once, in one batch


def test_an_operation_that_alone_passes_the_block_limit_fails_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    store, node = toy(monkeypatch, ["a", "giant", "a"])
    _, report = run(node)
    assert store.ops[2].status == "failed" and "one operation alone does not fit a block" in str(
        store.ops[2].error
    )
    assert store.ops[1].status == store.ops[3].status == "confirmed"
    assert report.failed == 1 and report.ops_posted == 2 and report.split == 1


def test_reconcile_releases_unsigned_batches_and_resends_signed_bytes_unchanged(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    store, node = toy(monkeypatch, ["a"] * 4)
    # the previous run died after claiming batch 1 and after writing batch 2 ahead
    batched = store.create_batch(None, CHAIN, SIGNER, [Op(1, "key-1", "toy", "a")], 1)
    signed = store.create_batch(None, CHAIN, SIGNER, [Op(2, "key-2", "toy", "a")], 1)
    store.record_signed(None, signed, SignedTx(b"written ahead", "0xabc", 1, 1, 1))
    _, report = run(node)
    assert store.batches[batched].status == "abandoned"
    assert node.pool[0] == b"written ahead"  # sent again as it was written
    assert store.batches[signed].attempts == [Attempt("0xabc", b"written ahead")]
    assert store.statuses() == {"confirmed": 4} and report.ops_posted == 4
    assert report.txs == 1  # batch 2 was not signed again; ops 1, 3 and 4 went out in a new batch


def test_a_batch_is_counted_once_however_often_it_is_confirmed(monkeypatch: pytest.MonkeyPatch) -> None:
    store, node = toy(monkeypatch, ["a"] * 3)
    toy_poster, report = run(node)
    assert report.ops_posted == 3
    [batch] = store.batches.values()
    again = Batch(batch.id, "mined", None, 3, 1, 1, 0, None, None, 0, None, batch.attempts)
    toy_poster.confirm(again, Landing("0x0001", b"", 1, 1, fee_paid=3), 1)
    assert (report.ops_posted, report.batches, report.l2_fee_wei) == (3, 1, 3)


def test_operations_not_on_chain_fail_instead_of_confirming(monkeypatch: pytest.MonkeyPatch) -> None:
    store, node = toy(monkeypatch, ["a"] * 3)
    toy_poster, report = run(node, limit=0)  # nothing drained: the batch is made by hand
    batch_id = store.create_batch(None, CHAIN, SIGNER, store.pending_operations(None, CHAIN, 3), 3)
    store.record_signed(None, batch_id, SignedTx(b"raw", "0xabc", 1, 1, 1))
    store.mark_broadcast(None, batch_id)
    [live] = store.live_batches(None, CHAIN, SIGNER)
    toy_poster.confirm(live, Landing("0xabc", b"raw", 1, 1, fee_paid=3), 1, {2}, "not on chain")
    assert store.statuses() == {"confirmed": 2, "failed": 1} and store.ops[2].error == "not on chain"
    assert (report.ops_posted, report.failed) == (2, 1)
    assert report.problems == ["toy: batch 1: 1 operation(s) failed: not on chain"]


def test_a_live_batch_without_a_transaction_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    _, node = toy(monkeypatch, [])
    toy_poster, _ = run(node)
    with pytest.raises(PostingError, match="batch 9 is broadcast without a signed transaction"):
        toy_poster.check(Batch(9, "broadcast", None, 1, 1, 1, 0, None, None, 0, None, []))


def test_crashpoint_kills_the_process_at_the_named_step_only(monkeypatch: pytest.MonkeyPatch) -> None:
    kills: list[tuple[int, int]] = []
    monkeypatch.setattr(os, "kill", lambda pid, sig: kills.append((pid, sig)))
    monkeypatch.setenv(CRASH_ENV, "signed")
    crashpoint("sent")
    assert kills == []
    crashpoint("signed")
    assert kills == [(os.getpid(), signal.SIGKILL)]
