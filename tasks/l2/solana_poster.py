"""The exactly-once posting protocol for Solana (duty l2-batch-posting, chains of KIND=solana).

Same outbox, same lock, same write-ahead as the EVM poster (tasks/l2_posting.py); what differs is the
replay protection. A Solana transaction has no nonce: it is valid until its blockhash expires
(`lastValidBlockHeight`). So a batch is re-signed (new blockhash, same operations) only after the block
height has passed the last valid height of every transaction signed for it AND none of their signatures
has a status: from then on none of them can ever land, so no operation is sent twice.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

from scaleops.core.settings import ChainSettings
from tasks.l2 import solana
from tasks.l2.evm_poster import (
    ChainReport,
    PostingError,
    PostOptions,
    crashpoint,
    lock_key,
    track_live_batches,
)
from tasks.l2.outbox import Op, fail_unpostable

MIN_CU_PRICE = 1  # micro-lamports per compute unit
REBROADCAST_AFTER_SECONDS = 2.0
MEASURE_BLOCKHASH = "11111111111111111111111111111111"  # same size as any blockhash


class SolanaPoster:
    def __init__(
        self,
        conn: Any,
        client: solana.SolanaRpc,
        chain: str,
        cfg: ChainSettings,
        options: PostOptions,
        log: Any = None,
    ):
        if cfg.signer_key is None:
            raise PostingError(f"chain {chain}: SCALEOPS_CHAINS__{chain.upper()}__SIGNER_KEY not set")
        try:
            self.keypair = solana.keypair_from_secret(cfg.signer_key.get_secret_value())
        except ValueError as exc:
            raise PostingError(
                f"chain {chain}: SCALEOPS_CHAINS__{chain.upper()}__SIGNER_KEY: {exc}"
            ) from None
        self.signer = str(self.keypair.pubkey())
        if cfg.signer_address and cfg.signer_address != self.signer:
            raise PostingError(
                f"chain {chain}: SCALEOPS_CHAINS__{chain.upper()}__SIGNER_ADDRESS is not the key's public key"
            )
        self.conn, self.client, self.chain, self.cfg, self.opts = conn, client, chain, cfg, options
        self.log = log or logging.getLogger(__name__)
        self.max_ops = min(options.max_batch_ops or cfg.max_batch_ops, cfg.max_batch_ops)
        self.max_bytes = min(solana.PACKET_DATA_SIZE, cfg.max_batch_bytes)
        self.report = ChainReport(chain=chain, kind="solana", signer=self.signer, lamports=0, max_tx_bytes=0)

    # -- the run -------------------------------------------------------------------------------------
    def run(self) -> ChainReport:
        key = lock_key(self.chain, self.signer)
        got = self.conn.execute("select pg_try_advisory_lock(hashtextextended(%s, 0))", (key,)).fetchone()[0]
        if not got:
            self.report.problems.append(f"{self.chain}: another run holds the posting lock; nothing done")
        else:
            try:
                if not self.opts.dry_run:  # a dry run signs and sends nothing
                    self.reconcile()
                    self.drain()
                    self.track()
            finally:
                self.conn.execute("select pg_advisory_unlock(hashtextextended(%s, 0))", (key,))
        self.report.pending = int(
            self.conn.execute(
                "select count(*) from l2_operations where chain = %s and status not in ('confirmed',"
                " 'failed')",
                (self.chain,),
            ).fetchone()[0]
        )
        lamports = self.report.lamports or 0
        self.report.fee_per_op = lamports // self.report.ops_posted if self.report.ops_posted else 0
        return self.report

    def reconcile(self) -> None:
        with self.conn.transaction():
            self.conn.execute(
                "with b as (update l2_batches set status = 'abandoned', updated_at = now(),"
                "   error = 'released: not signed before the previous run stopped'"
                "   where chain = %s and signer = %s and status = 'batched' returning id)"
                " update l2_operations set status = 'pending', batch_id = null, updated_at = now()"
                " where batch_id in (select id from b) and status = 'batched'",
                (self.chain, self.signer),
            )
        for batch in self.live_batches():
            self.check(batch)

    def live_batches(self) -> list[dict[str, Any]]:
        rows = self.conn.execute(
            "select id, status, op_count, gas_limit, max_fee_per_gas, last_sent_at from l2_batches"
            " where chain = %s and signer = %s and status in ('signed', 'broadcast', 'mined') order by id",
            (self.chain, self.signer),
        ).fetchall()
        batches = [
            {
                "id": r[0],
                "status": r[1],
                "op_count": r[2],
                "cu_limit": r[3],
                "cu_price": r[4],
                "last_sent_at": r[5],
            }
            for r in rows
        ]
        for batch in batches:
            batch["attempts"] = [
                {"sig": a[0], "raw": bytes(a[1]), "last_valid": int(a[2])}
                for a in self.conn.execute(
                    "select tx_hash, raw_tx, last_valid_block_height from l2_batch_txs"
                    " where batch_id = %s order by created_at",
                    (batch["id"],),
                ).fetchall()
            ]
        return batches

    # -- drain ---------------------------------------------------------------------------------------
    def drain(self) -> None:
        remaining = self.opts.limit
        price = self.client.priority_fee([self.signer], MIN_CU_PRICE)
        while remaining > 0:
            claimed = self.claim(min(self.max_ops, remaining), price)
            if claimed is None:
                return
            batch_id, ops = claimed
            crashpoint("batched")
            if ops and not self.sign_and_send(batch_id, ops, price):
                return
            remaining -= max(len(ops), 1)

    def claim(self, limit: int, price: int) -> tuple[int, list[Op]] | None:
        """Pack the oldest pending operations into one transaction, measured on signed bytes."""
        with self.conn.transaction():
            rows = self.conn.execute(
                "select id, key, kind, payload from l2_operations where chain = %s and status = 'pending'"
                " order by id limit %s for update skip locked",
                (self.chain, limit),
            ).fetchall()
            if not rows:
                return None
            packed: list[Op] = []
            instructions: list[Any] = []
            failed: list[tuple[int, str]] = []
            for row in rows:
                op = Op(row[0], row[1], row[2], row[3])
                try:
                    ix = solana.op_instruction(op, self.keypair.pubkey())
                except ValueError as exc:
                    failed.append((op.id, str(exc)))
                    continue
                size = len(
                    solana.build_tx(
                        [*instructions, ix], self.keypair, MEASURE_BLOCKHASH, solana.MAX_COMPUTE_UNITS, price
                    )
                )
                if size > self.max_bytes:
                    if not packed:
                        failed.append(
                            (op.id, f"payload does not fit: a transaction of {size} bytes > {self.max_bytes}")
                        )
                        continue
                    break
                packed.append(op)
                instructions.append(ix)
            fail_unpostable(self.conn, self.report, self.chain, failed)
            if not packed:
                return (0, [])
            batch_id = self.conn.execute(
                "insert into l2_batches (chain, signer, status, op_count) values (%s, %s, 'batched', %s)"
                " returning id",
                (self.chain, self.signer, len(packed)),
            ).fetchone()[0]
            self.conn.execute(
                "update l2_operations set status = 'batched', batch_id = %s, updated_at = now() where id ="
                " any(%s)",
                (batch_id, [op.id for op in packed]),
            )
        return int(batch_id), packed

    def batch_ops(self, batch_id: int) -> list[Op]:
        rows = self.conn.execute(
            "select id, key, kind, payload from l2_operations where batch_id = %s order by id", (batch_id,)
        ).fetchall()
        return [Op(r[0], r[1], r[2], r[3]) for r in rows]

    def sign(self, ops: list[Op], price: int) -> tuple[bytes, str, int, int, int]:
        """(raw, signature, last valid block height, CU limit, fee in lamports) with a fresh blockhash;
        the CU limit is what simulation consumed plus a margin."""
        instructions = [solana.op_instruction(op, self.keypair.pubkey()) for op in ops]
        blockhash, last_valid = self.client.latest_blockhash()
        probe = solana.build_tx(instructions, self.keypair, blockhash, solana.MAX_COMPUTE_UNITS, price)
        units, error = self.client.simulate_units(probe)
        if error:
            raise PostingError(f"simulation failed: {error}")
        limit = solana.units_limit(units)
        raw = solana.build_tx(instructions, self.keypair, blockhash, limit, price)
        return raw, solana.signature_of(raw), last_valid, limit, solana.fee_lamports(1, limit, price)

    def sign_and_send(self, batch_id: int, ops: list[Op], price: int) -> bool:
        try:
            raw, signature, last_valid, limit, fee = self.sign(ops, price)
        except PostingError as exc:
            self.fail_batch(batch_id, len(ops), str(exc))
            return True
        if fee > self.cfg.max_fee_per_batch:
            reason = f"fee cap: {fee} lamports > MAX_FEE_PER_BATCH {self.cfg.max_fee_per_batch}"
            with self.conn.transaction():
                self.conn.execute(
                    "update l2_batches set status = 'abandoned', error = %s, updated_at = now() where id ="
                    " %s",
                    (reason, batch_id),
                )
                self.conn.execute(
                    "update l2_operations set status = 'pending', batch_id = null, updated_at = now()"
                    " where batch_id = %s",
                    (batch_id,),
                )
            self.report.fee_capped += len(ops)
            self.report.problems.append(f"{self.chain}: {reason}; operations left pending")
            return False
        with self.conn.transaction():
            self.conn.execute(
                "update l2_batches set status = 'signed', tx_hash = %s, raw_tx = %s, gas_limit = %s,"
                " max_fee_per_gas = %s, est_l2_fee_wei = %s, calldata_bytes = %s, last_valid_block_height"
                " = %s,"
                " signed_at = now(), updated_at = now() where id = %s and status = 'batched'",
                (signature, raw, limit, price, fee, len(raw), last_valid, batch_id),
            )
            self.record_attempt(batch_id, signature, raw, price, last_valid)
            self.conn.execute(
                "update l2_operations set status = 'signed', updated_at = now() where batch_id = %s",
                (batch_id,),
            )
        self.report.txs += 1
        self.report.max_tx_bytes = max(self.report.max_tx_bytes or 0, len(raw))
        crashpoint("signed")
        self.broadcast(batch_id, raw)
        return True

    def record_attempt(self, batch_id: int, signature: str, raw: bytes, price: int, last_valid: int) -> None:
        self.conn.execute(
            "insert into l2_batch_txs (tx_hash, batch_id, nonce, raw_tx, max_fee_per_gas,"
            " max_priority_fee_per_gas, last_valid_block_height) values (%s, %s, null, %s, %s, null, %s)",
            (signature, batch_id, raw, price, last_valid),
        )

    def broadcast(self, batch_id: int, raw: bytes) -> None:
        try:
            self.client.send(raw)
        except solana.SolanaRpcError as exc:
            if "blockhash not found" not in str(exc).lower():  # expiry is handled by `check`
                raise
        crashpoint("sent")
        with self.conn.transaction():
            self.conn.execute(
                "update l2_batches set status = 'broadcast', broadcast_at = coalesce(broadcast_at, now()),"
                " last_sent_at = now(), updated_at = now() where id = %s and status in ('signed',"
                " 'broadcast')",
                (batch_id,),
            )
            self.conn.execute(
                "update l2_operations set status = 'broadcast', updated_at = now()"
                " where batch_id = %s and status = 'signed'",
                (batch_id,),
            )
        crashpoint("broadcast")

    # -- track ---------------------------------------------------------------------------------------
    def track(self) -> None:
        track_live_batches(self.live_batches, self.check, self.opts)

    def check(self, batch: dict[str, Any]) -> None:
        attempts = batch["attempts"]
        if not attempts:
            raise PostingError(f"batch {batch['id']} is {batch['status']} without a signed transaction")
        if batch["status"] == "signed":
            self.broadcast(batch["id"], attempts[-1]["raw"])
            return
        statuses = self.client.statuses([a["sig"] for a in attempts])
        for attempt, status in zip(attempts, statuses, strict=True):
            if status is None:
                continue
            if status.get("err") is not None:
                self.fail_batch(
                    batch["id"], batch["op_count"], f"transaction {attempt['sig']} failed: {status['err']}"
                )
                return
            deep_enough = status.get("confirmationStatus") == "finalized" or (
                int(status.get("confirmations") or 0) + 1 >= self.cfg.confirmations
            )
            if deep_enough:
                self.confirm(batch, attempt, int(status["slot"]))
            return
        # no signature has a status: expired (re-sign) or not yet seen (rebroadcast)
        if self.client.block_height() > max(a["last_valid"] for a in attempts):
            if any(s is not None for s in self.client.statuses([a["sig"] for a in attempts])):
                return  # landed meanwhile: the next check confirms it
            self.resign(batch)
            return
        sent = batch["last_sent_at"]
        if sent is None or (datetime.now(UTC) - sent).total_seconds() >= REBROADCAST_AFTER_SECONDS:
            self.broadcast(batch["id"], attempts[-1]["raw"])

    def resign(self, batch: dict[str, Any]) -> None:
        """Every transaction of the batch has expired unseen: sign the same operations again."""
        ops = self.batch_ops(batch["id"])
        price = int(batch["cu_price"] or MIN_CU_PRICE)
        raw, signature, last_valid, limit, fee = self.sign(ops, price)
        with self.conn.transaction():
            self.record_attempt(batch["id"], signature, raw, price, last_valid)
            self.conn.execute(
                "update l2_batches set status = 'signed', tx_hash = %s, raw_tx = %s, gas_limit = %s,"
                " est_l2_fee_wei = %s, last_valid_block_height = %s, updated_at = now() where id = %s",
                (signature, raw, limit, fee, last_valid, batch["id"]),
            )
        self.report.txs += 1
        self.report.resigned += 1
        self.log.warning("%s: batch %d expired unseen; re-signed as %s", self.chain, batch["id"], signature)
        self.broadcast(batch["id"], raw)

    def confirm(self, batch: dict[str, Any], attempt: dict[str, Any], slot: int) -> None:
        fee = self.client.fee_of(attempt["sig"])
        with self.conn.transaction():
            row = self.conn.execute(
                "update l2_batches set status = 'confirmed', tx_hash = %s, raw_tx = %s, block_number = %s,"
                " gas_used = %s, fee_paid = %s, confirmations = %s, confirmed_at = now(), updated_at = now()"
                " where id = %s and status in ('broadcast', 'mined') returning op_count",
                (
                    attempt["sig"],
                    attempt["raw"],
                    slot,
                    batch["cu_limit"],
                    fee,
                    self.cfg.confirmations,
                    batch["id"],
                ),
            ).fetchone()
            self.conn.execute(
                "update l2_operations set status = 'confirmed', confirmed_at = now(), updated_at = now()"
                " where batch_id = %s",
                (batch["id"],),
            )
        crashpoint("confirmed")
        if row:
            self.report.ops_posted += int(row[0])
            self.report.batches += 1
            self.report.lamports = (self.report.lamports or 0) + fee
            self.report.batch_hashes.append(attempt["sig"])

    def fail_batch(self, batch_id: int, op_count: int, reason: str) -> None:
        with self.conn.transaction():
            self.conn.execute(
                "update l2_batches set status = 'failed', error = %s, updated_at = now() where id = %s",
                (reason, batch_id),
            )
            self.conn.execute(
                "update l2_operations set status = 'failed', error = %s, updated_at = now() where batch_id"
                " = %s",
                (reason, batch_id),
            )
        self.report.failed += op_count
        self.report.problems.append(f"{self.chain}: batch {batch_id} failed: {reason}")


def post_solana_chain(settings: Any, chain: str, options: PostOptions, log: Any = None) -> ChainReport:
    from scaleops.core.clients import postgres_connect
    from tasks.l2.outbox import ensure_schema

    cfg = settings.chains[chain]
    client = solana.SolanaRpc(cfg.rpc_url, cfg.rpc_timeout_seconds)
    try:
        with postgres_connect(settings, autocommit=True) as conn:
            ensure_schema(conn)
            return SolanaPoster(conn, client, chain, cfg, options, log).run()
    finally:
        client.close()
