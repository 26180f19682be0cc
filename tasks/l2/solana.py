"""Solana: what the L2 poster asks of a Solana RPC node, and how operations become instructions.

Operations of kind `memo` (payload: any JSON, written as canonical JSON with its key to the Memo
program) and `transfer` (payload `{"to": <pubkey>, "lamports": n}`, a System transfer from the signer)
are packed into as few transactions as fit the 1232-byte packet limit, measured on the signed bytes.
"""

from __future__ import annotations

import base64
import statistics
from typing import Any

import httpx

from tasks.l2.outbox import Op, canonical_json

PACKET_DATA_SIZE = 1232  # bytes of one serialized transaction (IPv6 MTU minus headers)
MEMO_PROGRAM = "MemoSq4gqABAXKb96qnH8TysNcWxMyWCqXgDLGmfcHr"
MAX_COMPUTE_UNITS = 1_400_000
CU_MARGIN_PERCENT = 10
CU_MARGIN_MIN = 1_000
LAMPORTS_PER_SIGNATURE = 5_000
SUPPORTED_KINDS = ("memo", "transfer")


class SolanaRpcError(RuntimeError):
    def __init__(self, method: str, code: int | None, message: str):
        super().__init__(f"{method}: {message}")
        self.code = code
        self.rpc_response = {"error": {"code": code, "message": message}}


class SolanaRpc:
    """A thin JSON-RPC client (httpx): the few methods the poster uses."""

    def __init__(self, url: str, timeout: float = 10.0):
        self.url = url
        self.http = httpx.Client(timeout=timeout)

    def close(self) -> None:
        self.http.close()

    def call(self, method: str, params: list[Any] | None = None) -> Any:
        response = self.http.post(
            self.url, json={"jsonrpc": "2.0", "id": 1, "method": method, "params": params or []}
        )
        response.raise_for_status()
        body = response.json()
        if "error" in body:
            error = body["error"]
            raise SolanaRpcError(method, error.get("code"), str(error.get("message")))
        return body["result"]

    def latest_blockhash(self) -> tuple[str, int]:
        value = self.call("getLatestBlockhash", [{"commitment": "confirmed"}])["value"]
        return str(value["blockhash"]), int(value["lastValidBlockHeight"])

    def block_height(self) -> int:
        return int(self.call("getBlockHeight", [{"commitment": "confirmed"}]))

    def simulate_units(self, raw: bytes) -> tuple[int, str | None]:
        value = self.call(
            "simulateTransaction",
            [base64.b64encode(raw).decode(), {"encoding": "base64", "sigVerify": False}],
        )["value"]
        return int(value.get("unitsConsumed") or 0), value.get("err")

    def priority_fee(self, accounts: list[str], floor: int) -> int:
        """Median recent prioritization fee (micro-lamports per CU), never below `floor`."""
        fees = [int(f["prioritizationFee"]) for f in self.call("getRecentPrioritizationFees", [accounts])]
        return max(int(statistics.median(fees)) if fees else 0, floor)

    def send(self, raw: bytes) -> str:
        """'sent', or 'known' if the cluster has already processed this very transaction."""
        try:
            self.call("sendTransaction", [base64.b64encode(raw).decode(), {"encoding": "base64"}])
        except SolanaRpcError as exc:
            if "already been processed" in str(exc) or "AlreadyProcessed" in str(exc):
                return "known"
            raise
        return "sent"

    def statuses(self, signatures: list[str]) -> list[dict[str, Any] | None]:
        value = self.call("getSignatureStatuses", [signatures, {"searchTransactionHistory": True}])["value"]
        return list(value)

    def fee_of(self, signature: str) -> int:
        tx = self.call(
            "getTransaction", [signature, {"encoding": "json", "maxSupportedTransactionVersion": 0}]
        )
        return int(tx["meta"]["fee"]) if tx else 0


def keypair_from_secret(secret: str) -> Any:
    from solders.keypair import Keypair

    try:
        return Keypair.from_base58_string(secret)
    except Exception:
        raise ValueError("the Solana signer key is not a base58 64-byte keypair") from None


def op_instruction(op: Op, payer: Any) -> Any:
    """The instruction that carries one operation (ValueError names what is wrong with its payload)."""
    from solders.instruction import Instruction
    from solders.pubkey import Pubkey
    from solders.system_program import TransferParams, transfer

    if op.kind == "memo":
        return Instruction(
            Pubkey.from_string(MEMO_PROGRAM), canonical_json({"key": op.key, "p": op.payload}), []
        )
    if op.kind == "transfer":
        payload = op.payload if isinstance(op.payload, dict) else {}
        try:
            to = Pubkey.from_string(str(payload["to"]))
            lamports = int(payload["lamports"])
        except (KeyError, ValueError, TypeError):
            raise ValueError('transfer payload must be {"to": <base58 pubkey>, "lamports": <int>}') from None
        if lamports <= 0:
            raise ValueError("transfer lamports must be positive")
        return transfer(TransferParams(from_pubkey=payer, to_pubkey=to, lamports=lamports))
    raise ValueError(f"kind {op.kind!r} is not posted on Solana (supported: {', '.join(SUPPORTED_KINDS)})")


def build_tx(instructions: list[Any], keypair: Any, blockhash: str, cu_limit: int, cu_price: int) -> bytes:
    from solders.compute_budget import set_compute_unit_limit, set_compute_unit_price
    from solders.hash import Hash
    from solders.transaction import Transaction

    budget = [set_compute_unit_limit(cu_limit), set_compute_unit_price(cu_price)]
    tx = Transaction.new_signed_with_payer(
        [*budget, *instructions], keypair.pubkey(), [keypair], Hash.from_string(blockhash)
    )
    return bytes(tx)


def signature_of(raw: bytes) -> str:
    from solders.transaction import Transaction

    return str(Transaction.from_bytes(raw).signatures[0])


def units_limit(consumed: int) -> int:
    return min(MAX_COMPUTE_UNITS, consumed + max(CU_MARGIN_MIN, consumed * CU_MARGIN_PERCENT // 100))


def fee_lamports(signatures: int, cu_limit: int, cu_price: int) -> int:
    """Base fee per signature plus the priority fee (limit x price, micro-lamports, rounded up)."""
    return signatures * LAMPORTS_PER_SIGNATURE + -(-cu_limit * cu_price // 1_000_000)
