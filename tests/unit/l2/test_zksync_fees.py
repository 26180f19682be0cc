"""The zkSync fee path without a node: the sandbox stand-in's Era fee model (pubdata from a state diff)
and the poster's checking of a zks_estimateFee answer."""

from __future__ import annotations

from typing import Any

import pytest

from scaleops.sandbox import zksync_rpc
from tasks.l2 import evm

SIGNER = "0xca68a23c433025564132eda8d9e1811dd25e619a"
CONTRACT = "0x912b10c403b8bdabb9f863d219e5471c58af2b69"
SLOT_A, SLOT_B = "0x" + "9c" * 32, "0x" + "01" * 32
# a prestateTracer diff of one postBatch: one bitmap word written for the first time, one written before,
# the sender's nonce and balance
DIFF = {
    "pre": {
        SIGNER: {"balance": "0x21e19e035f6ebc7374f", "nonce": 4102},
        CONTRACT: {"balance": "0x0", "nonce": 1, "storage": {SLOT_B: "0x01"}},
    },
    "post": {
        SIGNER: {"balance": "0x21e19e035f6ebc70000", "nonce": 4103},
        CONTRACT: {"storage": {SLOT_A: "0x7c" + "00" * 31, SLOT_B: "0x03"}},
    },
}


def test_pubdata_counts_initial_and_repeated_writes_account_fields_and_the_fee_payment() -> None:
    fee_payment = zksync_rpc.FEE_PAYMENT_WRITES * zksync_rpc.ACCOUNT_WRITE_BYTES
    slots = zksync_rpc.INITIAL_WRITE_BYTES + zksync_rpc.REPEATED_WRITE_BYTES
    # the payer's nonce is counted; its balance belongs to the fee payment, counted once
    assert zksync_rpc.pubdata_bytes(DIFF, SIGNER) == slots + zksync_rpc.ACCOUNT_WRITE_BYTES + fee_payment
    # a call by someone else: the signer's nonce and balance are two more writes
    other = "0x" + "77" * 20
    assert zksync_rpc.pubdata_bytes(DIFF, other) == slots + 2 * zksync_rpc.ACCOUNT_WRITE_BYTES + fee_payment
    assert zksync_rpc.pubdata_bytes({"pre": {}, "post": {}}, SIGNER) == fee_payment


def test_estimate_fee_is_execution_plus_pubdata_plus_overhead() -> None:
    calls: list[str] = []

    def upstream(method: str, params: list[Any]) -> Any:
        calls.append(method)
        return {
            "eth_estimateGas": "0x186a0",  # 100,000
            "debug_traceCall": DIFF,
            "eth_getBlockByNumber": {"baseFeePerGas": hex(25_000_000)},
        }[method]

    fee = zksync_rpc.estimate_fee(upstream, {"from": SIGNER, "to": CONTRACT, "data": "0x"})
    per_byte = zksync_rpc.L1_PUBDATA_PRICE_WEI // 25_000_000
    assert int(fee["gas_limit"], 16) == 120_000 + zksync_rpc.pubdata_bytes(DIFF, SIGNER) * per_byte + 10_000
    assert int(fee["max_fee_per_gas"], 16) == 30_000_000 and fee["max_priority_fee_per_gas"] == "0x0"
    assert int(fee["gas_per_pubdata_limit"], 16) == zksync_rpc.GAS_PER_PUBDATA_LIMIT
    assert calls == ["eth_estimateGas", "debug_traceCall", "eth_getBlockByNumber"]
    with pytest.raises(zksync_rpc.RpcError, match="needs from and to"):
        zksync_rpc.estimate_fee(upstream, {"to": CONTRACT})


def test_gas_per_pubdata_is_capped_as_on_era_when_the_base_fee_falls() -> None:
    """anvil's base fee decays towards a few wei under automine; uncapped, 1 gwei of pubdata price over
    7 wei of base fee made every pubdata byte cost ~143M gas and every batch's gas limit pass any block's.
    Era raises the base fee instead, so a byte never costs more than MAX_GAS_PER_PUBDATA_BYTE gas."""

    def upstream(method: str, params: list[Any]) -> Any:
        return {
            "eth_estimateGas": "0x186a0",
            "debug_traceCall": DIFF,
            "eth_getBlockByNumber": {"baseFeePerGas": hex(7)},
        }[method]

    fee = zksync_rpc.estimate_fee(upstream, {"from": SIGNER, "to": CONTRACT, "data": "0x"})
    cap = zksync_rpc.MAX_GAS_PER_PUBDATA_BYTE
    assert int(fee["gas_limit"], 16) == 120_000 + zksync_rpc.pubdata_bytes(DIFF, SIGNER) * cap + 10_000
    assert int(fee["gas_limit"], 16) < 30_000_000
    raised = zksync_rpc.L1_PUBDATA_PRICE_WEI // cap  # the base fee Era quotes instead of 7 wei
    assert int(fee["max_fee_per_gas"], 16) == raised * 6 // 5
    # above the floor nothing changes: the node's base fee, its gas per pubdata byte
    assert zksync_rpc.derive_base_fee_and_gas_per_pubdata(10**9, 25_000_000) == (25_000_000, 40)
    assert zksync_rpc.derive_base_fee_and_gas_per_pubdata(10**9, 0) == (20_000, 50_000)


class FakeZkNode:
    """Answers eth_feeHistory and zks_estimateFee (with `fee`) like a provider."""

    def __init__(self, fee: Any):
        self.fee = fee
        self.provider = self

    def make_request(self, method: str, params: list[Any]) -> dict[str, Any]:
        if method == "eth_feeHistory":
            return {"result": {"baseFeePerGas": [hex(25_000_000)] * 2, "reward": [["0x0"]]}}
        assert method == "zks_estimateFee" and params[0]["to"] == CONTRACT
        return {"result": self.fee}


def quote(fee: Any) -> evm.FeeQuote:
    return evm.quote_fees(FakeZkNode(fee), "zksync", SIGNER, CONTRACT, b"\x01", 324, 0, 10**6)


def test_zksync_quote_takes_the_gas_limit_and_the_higher_max_fee() -> None:
    answer = {
        "gas_limit": hex(300_000),
        "max_fee_per_gas": hex(10**12),
        "max_priority_fee_per_gas": "0x0",
        "gas_per_pubdata_limit": hex(50_000),
    }
    got = quote(answer)
    assert (got.gas_limit, got.max_fee_per_gas, got.l1_fee_wei) == (300_000, 10**12, 0)
    assert got.l2_fee_wei == 300_000 * 10**12


@pytest.mark.parametrize(
    ("answer", "field"),
    [
        ({"max_fee_per_gas": "0x1"}, "gas_limit"),
        ({"gas_limit": 5, "max_fee_per_gas": "0x1"}, "gas_limit"),
        ({"gas_limit": "0x10", "max_fee_per_gas": "lots"}, "max_fee_per_gas"),
        (None, "gas_limit"),
    ],
)
def test_a_malformed_zks_estimate_fee_answer_names_the_field(answer: Any, field: str) -> None:
    with pytest.raises(evm.RpcFailure, match=f"zks_estimateFee: answer field {field} "):
        quote(answer)
