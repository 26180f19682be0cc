"""A zkSync-style JSON-RPC endpoint for the sandbox: anvil behind a proxy that adds `zks_estimateFee`.

No zkSync node installs offline here (anvil-zksync is downloaded from GitHub at run time), and anvil has
no `zks_` methods, so this proxy forwards every request to an anvil node and answers `zks_estimateFee`
itself with the shape and the fee model of zkSync Era: the gas limit covers execution (anvil's
`eth_estimateGas` + 20%) plus the pubdata the transaction publishes to L1 (its state diffs, read from
anvil's `prestateTracer` in diff mode) times the gas per pubdata byte, plus a fixed per-transaction
overhead. As on Era, the gas per pubdata byte never exceeds MAX_GAS_PER_PUBDATA_BYTE: when the L2 base
fee is too low for that, the quoted base fee is raised instead (`derive_base_fee_and_gas_per_pubdata`),
so a falling base fee cannot blow the gas limit up past any block's. Execution on anvil is EVM
execution, not zkEVM: gas used is anvil's, the fee model is Era's.

    python -m scaleops.sandbox.zksync_rpc --port 3050 --upstream http://127.0.0.1:8545
"""

from __future__ import annotations

import argparse
from typing import Any

import httpx

from scaleops.sandbox.jsonrpc import answer, serve

L1_PUBDATA_PRICE_WEI = 1_000_000_000  # per pubdata byte: a blob-era L1 price (Era derives it from L1)
GAS_PER_PUBDATA_LIMIT = 50_000  # what Era's SDKs put in a transaction by default
MAX_GAS_PER_PUBDATA_BYTE = 50_000  # Era's system constant: the most gas one pubdata byte can cost
TX_OVERHEAD_GAS = 10_000  # Era charges each transaction a share of its batch's fixed costs
INITIAL_WRITE_BYTES = 64  # a slot written for the first time: derived key + compressed value
REPEATED_WRITE_BYTES = 40  # a slot written before: enumeration index + compressed value
ACCOUNT_WRITE_BYTES = 40  # nonce and balance of an account live in system contracts' slots on Era
FEE_PAYMENT_WRITES = 2  # the payer's balance and the operator's
EXECUTION_MARGIN_PERCENT = 20
STATE_DIFF_TRACER = {"tracer": "prestateTracer", "tracerConfig": {"diffMode": True}}


class RpcError(Exception):
    def __init__(self, code: int, message: str):
        super().__init__(message)
        self.code = code


def pubdata_bytes(diff: dict[str, Any], payer: str) -> int:
    """Bytes of L1 pubdata for a `prestateTracer` diff (`{"pre": {...}, "post": {...}}`) of a call from
    `payer`, as Era publishes state diffs: one entry per storage slot written, one per account nonce or
    balance changed, and the fee payment's two balances (the payer's and the operator's), which a traced
    call without a gas price does not make."""
    total = FEE_PAYMENT_WRITES * ACCOUNT_WRITE_BYTES
    pre = diff.get("pre") or {}
    for address, after in (diff.get("post") or {}).items():
        before = pre.get(address) or {}
        before_slots = before.get("storage") or {}
        for slot in after.get("storage") or {}:
            # Era counts a write as initial when the slot was never written; a slot that is zero now may
            # have been written before: close enough for a stand-in
            written_before = int(before_slots.get(slot, "0x0"), 16) != 0
            total += REPEATED_WRITE_BYTES if written_before else INITIAL_WRITE_BYTES
        changed = [f for f in ("nonce", "balance") if f in after]
        if address.lower() == payer.lower() and "balance" in changed:
            changed.remove("balance")  # counted with the fee payment
        total += ACCOUNT_WRITE_BYTES * len(changed)
    return total


def derive_base_fee_and_gas_per_pubdata(pubdata_price: int, l2_gas_price: int) -> tuple[int, int]:
    """(base fee, gas per pubdata byte) as Era's fee model derives them: the base fee is raised so that
    one pubdata byte never costs more than MAX_GAS_PER_PUBDATA_BYTE gas (zksync-era
    `derive_base_fee_and_gas_per_pubdata`)."""
    base_fee = max(l2_gas_price, -(-pubdata_price // MAX_GAS_PER_PUBDATA_BYTE), 1)
    return base_fee, -(-pubdata_price // base_fee)


def estimate_fee(upstream: Any, call: dict[str, Any]) -> dict[str, str]:
    """zks_estimateFee: {gas_limit, max_fee_per_gas, max_priority_fee_per_gas, gas_per_pubdata_limit}."""
    if not isinstance(call, dict) or not call.get("from") or not call.get("to"):
        raise RpcError(-32602, "zks_estimateFee: the call needs from and to")
    execution = int(upstream("eth_estimateGas", [call]), 16)
    diff = upstream("debug_traceCall", [call, "latest", STATE_DIFF_TRACER])
    node_base_fee = int(upstream("eth_getBlockByNumber", ["latest", False])["baseFeePerGas"], 16)
    base_fee, gas_per_pubdata = derive_base_fee_and_gas_per_pubdata(L1_PUBDATA_PRICE_WEI, node_base_fee)
    gas_limit = (
        execution * (100 + EXECUTION_MARGIN_PERCENT) // 100
        + pubdata_bytes(diff, str(call["from"])) * gas_per_pubdata
        + TX_OVERHEAD_GAS
    )
    return {
        "gas_limit": hex(gas_limit),
        "max_fee_per_gas": hex(base_fee * 6 // 5),  # Era quotes the base fee with a margin, tip 0
        "max_priority_fee_per_gas": "0x0",
        "gas_per_pubdata_limit": hex(GAS_PER_PUBDATA_LIMIT),
    }


class Proxy:
    def __init__(self, upstream_url: str):
        self.url = upstream_url
        self.client = httpx.Client(timeout=30)

    def forward(self, body: Any) -> Any:
        try:
            return self.client.post(self.url, json=body).json()
        except (httpx.HTTPError, ValueError) as exc:
            request_id = body.get("id") if isinstance(body, dict) else None
            return answer(request_id, error={"code": -32603, "message": f"upstream node: {exc}"})

    def call(self, method: str, params: list[Any]) -> Any:
        reply = self.forward({"jsonrpc": "2.0", "id": 1, "method": method, "params": params})
        if "error" in reply:
            error = reply["error"]
            raise RpcError(int(error.get("code", -32000)), str(error.get("message")))
        return reply.get("result")

    def handle(self, request: dict[str, Any]) -> Any:
        if request.get("method") != "zks_estimateFee":
            return self.forward(request)
        try:
            params = request.get("params")
            if not isinstance(params, list) or not params:
                raise RpcError(-32602, "zks_estimateFee: params must be [call]")
            return answer(request.get("id"), result=estimate_fee(self.call, params[0]))
        except RpcError as exc:
            return answer(request.get("id"), error={"code": exc.code, "message": str(exc)})
        except Exception as exc:  # the upstream node down or answering oddly: an error, not a dropped line
            return answer(request.get("id"), error={"code": -32603, "message": f"zks_estimateFee: {exc}"})


def main() -> None:
    parser = argparse.ArgumentParser(prog="scaleops.sandbox.zksync_rpc", description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", required=True, help="the anvil node's JSON-RPC URL")
    args = parser.parse_args()
    serve(args.host, args.port, Proxy(args.upstream).handle)


if __name__ == "__main__":
    main()
