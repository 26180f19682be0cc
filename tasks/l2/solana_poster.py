"""Posting to Solana (chains of KIND=solana): what differs from the lifecycle in tasks/l2/poster.py.

A Solana transaction has no nonce: it is valid until its blockhash expires (`lastValidBlockHeight`). So
a batch is re-signed (new blockhash, same operations) only after the block height has passed the last
valid height of every transaction signed for it AND none of their signatures has a status: from then on
none of them can ever land, so no operation is sent twice. Operations are packed while the signed
transaction stays within 1232 bytes; the compute-unit limit comes from simulation.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from scaleops.core.settings import ChainSettings
from tasks.l2 import outbox, solana
from tasks.l2.outbox import Batch, Landing, Op, SignedTx
from tasks.l2.poster import (
    BatchPoster,
    ChainReport,
    Draft,
    Packing,
    PostingError,
    PostOptions,
    Unpostable,
)

MIN_CU_PRICE = 1  # micro-lamports per compute unit
REBROADCAST_AFTER_SECONDS = 2.0
MEASURE_BLOCKHASH = "11111111111111111111111111111111"  # same size as any blockhash


@dataclass
class SolanaDraft(Draft):
    instructions: list[Any]
    blockhash: str
    last_valid: int
    cu_limit: int
    cu_price: int


class SolanaPoster(BatchPoster[SolanaDraft]):
    """Memo and transfer instructions, a ComputeBudget limit from simulation and a priority fee."""

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
        signer = str(self.keypair.pubkey())
        if cfg.signer_address and cfg.signer_address != signer:
            raise PostingError(
                f"chain {chain}: SCALEOPS_CHAINS__{chain.upper()}__SIGNER_ADDRESS is not the key's public key"
            )
        super().__init__(conn, chain, cfg, options, signer, log)
        self.client = client
        self.max_bytes = min(solana.PACKET_DATA_SIZE, cfg.max_batch_bytes)
        self.cu_price = MIN_CU_PRICE  # of this run's new batches, asked of the node before draining
        self.report.lamports, self.report.max_tx_bytes = 0, 0

    def before_posting(self) -> None:
        self.cu_price = self.client.priority_fee([self.signer], MIN_CU_PRICE)

    # -- build, price, sign, send -----------------------------------------------------------------------
    def pack(self, ops: list[Op]) -> Packing:
        """As many operations as fit one transaction, measured on signed bytes."""
        packed: list[Op] = []
        instructions: list[Any] = []
        packed_size = 0
        unfit: list[tuple[int, str]] = []
        for op in ops:
            try:
                ix = solana.op_instruction(op, self.keypair.pubkey())
            except ValueError as exc:
                unfit.append((op.id, str(exc)))
                continue
            size = len(
                solana.build_tx(
                    [*instructions, ix],
                    self.keypair,
                    MEASURE_BLOCKHASH,
                    solana.MAX_COMPUTE_UNITS,
                    self.cu_price,
                )
            )
            if size > self.max_bytes:
                if not packed:
                    unfit.append(
                        (op.id, f"payload does not fit: a transaction of {size} bytes > {self.max_bytes}")
                    )
                    continue
                break
            packed.append(op)
            instructions.append(ix)
            packed_size = size
        return Packing(packed, packed_size, unfit)

    def price(self, batch_id: int, ops: list[Op]) -> SolanaDraft:
        return self.draft(ops, self.cu_price)

    def draft(self, ops: list[Op], cu_price: int) -> SolanaDraft:
        """The operations' instructions under a fresh blockhash; the CU limit is what simulation consumed
        plus a margin, the fee 5,000 lamports per signature plus limit x price."""
        instructions = [solana.op_instruction(op, self.keypair.pubkey()) for op in ops]
        blockhash, last_valid = self.client.latest_blockhash()
        probe = solana.build_tx(instructions, self.keypair, blockhash, solana.MAX_COMPUTE_UNITS, cu_price)
        units, error = self.client.simulate_units(probe)
        if error:
            raise Unpostable(f"simulation failed: {error}")
        limit = solana.units_limit(units)
        fee = solana.fee_lamports(1, limit, cu_price)
        return SolanaDraft(fee, f"{fee} lamports", instructions, blockhash, last_valid, limit, cu_price)

    def sign(self, draft: SolanaDraft) -> SignedTx:
        raw = solana.build_tx(
            draft.instructions, self.keypair, draft.blockhash, draft.cu_limit, draft.cu_price
        )
        return SignedTx(
            raw,
            solana.signature_of(raw),
            draft.cu_limit,
            draft.cu_price,
            draft.max_cost,
            last_valid_block_height=draft.last_valid,
            tx_bytes=len(raw),
        )

    def send(self, raw: bytes) -> None:
        try:
            self.client.send(raw)
        except solana.SolanaRpcError as exc:
            if "blockhash not found" not in str(exc).lower():  # expiry is handled by `follow`
                raise

    def count_signed(self, tx: SignedTx) -> None:
        super().count_signed(tx)
        self.report.max_tx_bytes = max(self.report.max_tx_bytes or 0, len(tx.raw))

    # -- follow: signature statuses, expiry ---------------------------------------------------------------
    def follow(self, batch: Batch) -> None:
        attempts = batch.attempts
        statuses = self.client.statuses([a.tx_hash for a in attempts])
        for attempt, status in zip(attempts, statuses, strict=True):
            if status is None:
                continue
            if status.get("err") is not None:
                self.fail_batch(
                    batch.id, batch.op_count, f"transaction {attempt.tx_hash} failed: {status['err']}"
                )
                return
            deep_enough = status.get("confirmationStatus") == "finalized" or (
                int(status.get("confirmations") or 0) + 1 >= self.cfg.confirmations
            )
            if deep_enough:
                fee = self.client.fee_of(attempt.tx_hash)
                landing = Landing(
                    attempt.tx_hash, attempt.raw, int(status["slot"]), batch.gas_limit, fee_paid=fee
                )
                self.confirm(batch, landing, self.cfg.confirmations)
            return
        # no signature has a status: expired (re-sign) or not yet seen (rebroadcast)
        if self.client.block_height() > max(int(a.last_valid_block_height or 0) for a in attempts):
            if any(s is not None for s in self.client.statuses([a.tx_hash for a in attempts])):
                return  # landed meanwhile: the next check confirms it
            self.resign(batch)
            return
        sent = batch.last_sent_at
        if sent is None or (datetime.now(UTC) - sent).total_seconds() >= REBROADCAST_AFTER_SECONDS:
            self.broadcast(batch.id, attempts[-1].raw, None)

    def resign(self, batch: Batch) -> None:
        """Every transaction of the batch has expired unseen: sign the same operations again."""
        ops = outbox.batch_operations(self.conn, batch.id)
        tx = self.sign(self.draft(ops, int(batch.max_fee_per_gas or MIN_CU_PRICE)))
        outbox.record_resigned(self.conn, batch.id, tx)
        self.count_signed(tx)
        self.report.resigned += 1
        self.log.warning("%s: batch %d expired unseen; re-signed as %s", self.chain, batch.id, tx.tx_hash)
        self.broadcast(batch.id, tx.raw, None)

    # -- the report -----------------------------------------------------------------------------------
    def count_fees(self, landing: Landing) -> None:
        self.report.lamports = (self.report.lamports or 0) + int(landing.fee_paid or 0)

    def fees_paid(self) -> int:
        return self.report.lamports or 0


def post_solana_chain(settings: Any, chain: str, options: PostOptions, log: Any = None) -> ChainReport:
    """Connect, make sure the schema exists, and run the protocol for one Solana chain."""
    from scaleops.core.clients import postgres_connect

    cfg = settings.chains[chain]
    client = solana.SolanaRpc(cfg.rpc_url, cfg.rpc_timeout_seconds)
    try:
        with postgres_connect(settings, autocommit=True) as conn:
            outbox.ensure_schema(conn)
            return SolanaPoster(conn, client, chain, cfg, options, log).run()
    finally:
        client.close()
