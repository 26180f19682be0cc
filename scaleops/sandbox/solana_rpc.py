"""A Solana JSON-RPC endpoint backed by `solders.litesvm` (no solana-test-validator installs offline).

Real transactions run in LiteSVM (signatures, fees, compute units, programs incl. Memo and System); the
server adds what a validator's RPC has around them: block height, blockhash expiry (a blockhash is valid
for 150 blocks), signature statuses, recent prioritization fees. Each landed transaction is one block.
Sandbox-only method: `litesvm_advanceBlocks [n]` moves the block height on (expiring old blockhashes).

    python -m scaleops.sandbox.solana_rpc --port 8899
"""

from __future__ import annotations

import argparse
import base64
import statistics
import threading
from collections import deque
from collections.abc import Callable
from typing import Any

from scaleops.sandbox.jsonrpc import answer, serve

BLOCKHASH_VALIDITY = 150
COMPUTE_BUDGET = "ComputeBudget111111111111111111111111111111"


class RpcError(Exception):
    def __init__(self, code: int, message: str):
        super().__init__(message)
        self.code = code


class LiteSvmNode:
    def __init__(self) -> None:
        from solders.litesvm import LiteSVM

        self.svm = LiteSVM()
        self.lock = threading.Lock()
        self.height = 1
        self.slot = 1
        self.blockhash_height = self.height  # when the current blockhash became the latest
        self.statuses: dict[str, dict[str, Any]] = {}
        self.priority_fees: deque[tuple[int, int]] = deque(maxlen=150)

    # -- helpers ---------------------------------------------------------------------------------------
    def context(self) -> dict[str, Any]:
        return {"slot": self.slot, "apiVersion": "litesvm"}

    def last_valid(self) -> int:
        return self.blockhash_height + BLOCKHASH_VALIDITY

    def advance(self, blocks: int) -> None:
        self.height += blocks
        self.slot += blocks
        if self.height > self.last_valid():
            self.svm.expire_blockhash()
            self.blockhash_height = self.height

    @staticmethod
    def decode_tx(params: list[Any]) -> Any:
        from solders.transaction import Transaction

        encoding = (params[1] if len(params) > 1 and isinstance(params[1], dict) else {}).get("encoding")
        if encoding != "base64":
            raise RpcError(-32602, "only base64 encoding is supported")
        return Transaction.from_bytes(base64.b64decode(params[0]))

    @staticmethod
    def cu_price(tx: Any) -> int:
        message = tx.message
        for ix in message.instructions:
            program = str(message.account_keys[ix.program_id_index])
            if program == COMPUTE_BUDGET and ix.data and ix.data[0] == 3:
                return int.from_bytes(bytes(ix.data[1:9]), "little")
        return 0

    # -- methods ----------------------------------------------------------------------------------------
    def call(self, method: str, params: list[Any]) -> Any:
        handler = getattr(self, "m_" + method, None)
        if handler is None:
            raise RpcError(-32601, f"Method not found: {method}")
        with self.lock:
            return handler(params)

    def m_getHealth(self, params: list[Any]) -> Any:  # noqa: N802 - JSON-RPC method names
        return "ok"

    def m_getVersion(self, params: list[Any]) -> Any:  # noqa: N802
        return {"solana-core": "litesvm (solders 0.29)", "feature-set": 0}

    def m_getSlot(self, params: list[Any]) -> Any:  # noqa: N802
        return self.slot

    def m_getBlockHeight(self, params: list[Any]) -> Any:  # noqa: N802
        return self.height

    def m_getLatestBlockhash(self, params: list[Any]) -> Any:  # noqa: N802
        value = {"blockhash": str(self.svm.latest_blockhash()), "lastValidBlockHeight": self.last_valid()}
        return {"context": self.context(), "value": value}

    def m_isBlockhashValid(self, params: list[Any]) -> Any:  # noqa: N802
        valid = params[0] == str(self.svm.latest_blockhash()) and self.height <= self.last_valid()
        return {"context": self.context(), "value": valid}

    def m_getBalance(self, params: list[Any]) -> Any:  # noqa: N802
        from solders.pubkey import Pubkey

        return {
            "context": self.context(),
            "value": int(self.svm.get_balance(Pubkey.from_string(params[0])) or 0),
        }

    def m_requestAirdrop(self, params: list[Any]) -> Any:  # noqa: N802
        from solders.pubkey import Pubkey

        result = self.svm.airdrop(Pubkey.from_string(params[0]), int(params[1]))
        if hasattr(result, "err"):
            raise RpcError(-32002, f"airdrop failed: {result.err()}")
        signature = str(result.signature())
        self.statuses[signature] = {"slot": self.slot, "err": None, "fee": 0, "logs": [], "units": 0}
        return signature

    def m_getRecentPrioritizationFees(self, params: list[Any]) -> Any:  # noqa: N802
        return [{"slot": slot, "prioritizationFee": fee} for slot, fee in self.priority_fees]

    def m_simulateTransaction(self, params: list[Any]) -> Any:  # noqa: N802
        tx = self.decode_tx(params)
        result = self.svm.simulate_transaction(tx)
        if hasattr(result, "err"):
            meta = result.meta()
            value = {
                "err": str(result.err()),
                "logs": meta.logs(),
                "unitsConsumed": meta.compute_units_consumed(),
            }
        else:
            meta = result.meta()
            value = {"err": None, "logs": meta.logs(), "unitsConsumed": meta.compute_units_consumed()}
        return {"context": self.context(), "value": value}

    def m_sendTransaction(self, params: list[Any]) -> Any:  # noqa: N802
        tx = self.decode_tx(params)
        signature = str(tx.signatures[0])
        if signature in self.statuses:
            raise RpcError(
                -32002, "Transaction simulation failed: This transaction has already been processed"
            )
        result = self.svm.send_transaction(tx)
        if hasattr(result, "err"):
            error = str(result.err())
            if "BlockhashNotFound" in error:
                raise RpcError(-32002, "Transaction simulation failed: Blockhash not found")
            raise RpcError(-32002, f"Transaction simulation failed: {error}")
        self.advance(1)
        self.statuses[signature] = {
            "slot": self.slot,
            "err": None,
            "fee": int(result.fee()),
            "logs": list(result.logs()),
            "units": int(result.compute_units_consumed()),
        }
        self.priority_fees.append((self.slot, self.cu_price(tx)))
        return signature

    def m_getSignatureStatuses(self, params: list[Any]) -> Any:  # noqa: N802
        values: list[dict[str, Any] | None] = []
        for signature in params[0]:
            status = self.statuses.get(signature)
            if status is None:
                values.append(None)
                continue
            depth = self.slot - status["slot"]
            values.append(
                {
                    "slot": status["slot"],
                    "confirmations": None if depth >= 31 else depth,
                    "err": status["err"],
                    "status": {"Ok": None},
                    "confirmationStatus": "finalized" if depth >= 31 else "confirmed",
                }
            )
        return {"context": self.context(), "value": values}

    def m_getTransaction(self, params: list[Any]) -> Any:  # noqa: N802
        status = self.statuses.get(params[0])
        if status is None:
            return None
        meta = {
            "err": status["err"],
            "fee": status["fee"],
            "logMessages": status["logs"],
            "computeUnitsConsumed": status["units"],
        }
        return {"slot": status["slot"], "meta": meta}

    def m_litesvm_advanceBlocks(self, params: list[Any]) -> Any:  # noqa: N802
        self.advance(int(params[0]) if params else 1)
        return self.height

    def m_getFeeMedian(self, params: list[Any]) -> Any:  # noqa: N802 - debugging aid
        fees = [fee for _slot, fee in self.priority_fees]
        return statistics.median(fees) if fees else 0


def answerer(node: LiteSvmNode) -> Callable[[dict[str, Any]], dict[str, Any]]:
    """How the server answers one request: the node's method, or an error saying what went wrong."""

    def answer_one(request: dict[str, Any]) -> dict[str, Any]:
        rid = request.get("id")
        try:
            result = node.call(str(request.get("method")), list(request.get("params") or []))
        except RpcError as exc:
            return answer(rid, error={"code": exc.code, "message": str(exc)})
        except Exception as exc:  # a malformed request: say what, keep serving
            return answer(rid, error={"code": -32602, "message": f"Invalid params: {exc}"})
        return answer(rid, result=result)

    return answer_one


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="scaleops.sandbox.solana_rpc")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    answer_one = answerer(LiteSvmNode())
    print(f"LiteSVM JSON-RPC on http://{args.host}:{args.port}", flush=True)
    serve(args.host, args.port, answer_one)


if __name__ == "__main__":
    main()
