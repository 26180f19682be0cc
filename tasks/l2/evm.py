"""EVM chains (OP-stack, Arbitrum, zkSync, plain EVM): everything the L2 poster asks of a node.

Plain functions over a web3 `Web3` (built in scaleops.core.clients.evm_client): fee quotes from
eth_feeHistory, the L1 data fee from each stack's oracle, the OperationLog call data, signing, broadcast
and receipts. The signer key is only ever passed to `sign`, never logged or put in an exception.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from eth_abi import decode, encode
from eth_utils import keccak

from scaleops.core.retry import TRANSIENT_RPC_CODES, TRANSIENT_RPC_WORDS
from tasks.l2.fees import eip1559_fees

GAS_PRICE_ORACLE = "0x420000000000000000000000000000000000000F"
NODE_INTERFACE = "0x00000000000000000000000000000000000000C8"
POST_BATCH = keccak(text="postBatch(uint64,uint64,bytes)")[:4]
OP_HEADER_BYTES = 42  # a packed operation's id (8), opKey (32) and payload length (2)
MAX_PAYLOAD_BYTES = 2**16 - 1  # the length is a uint16
TOPICS_PER_QUERY = 100  # opKeys OR-listed in one eth_getLogs
IS_POSTED = keccak(text="isPosted(uint64,uint64)")[:4]
OPERATION_POSTED_TOPIC = "0x" + keccak(text="OperationPosted(bytes32,uint64,bytes)").hex()
GET_L1_FEE = keccak(text="getL1Fee(bytes)")[:4]
GAS_ESTIMATE_COMPONENTS = keccak(text="gasEstimateComponents(address,bool,bytes)")[:4]
GAS_MARGIN_PERCENT = 20  # on top of eth_estimateGas
# node answers to a (re)broadcast that mean "this exact transaction, or one at its nonce, is known"
BENIGN_SEND_ERRORS = (
    "already known",
    "already imported",
    "alreadyknown",
    "known transaction",
    "nonce too low",
    "replacement transaction underpriced",
    "transaction underpriced",
)


class RpcFailure(RuntimeError):
    """A node refused a request (not a transport error: those are raised as they are, and retried)."""


def op_key(key: str) -> bytes:
    """opKey = keccak256(bytes(key)): what each OperationPosted event carries (indexed)."""
    return keccak(text=key)


def pack_operations(ids: Sequence[int], keys: Sequence[str], payloads: Sequence[bytes]) -> bytes:
    """The `ops` argument of postBatch: per operation `id (8) | opKey (32) | length (2) | payload`,
    big-endian, back to back (see contracts/OperationLog.sol)."""
    if not len(ids) == len(keys) == len(payloads):
        raise ValueError("postBatch: ids, keys and payloads differ in length")
    parts: list[bytes] = []
    for op_id, key, payload in zip(ids, keys, payloads, strict=True):
        if len(payload) > MAX_PAYLOAD_BYTES:
            raise ValueError(f"postBatch: payload of operation {op_id} is over {MAX_PAYLOAD_BYTES} bytes")
        parts += (op_id.to_bytes(8, "big"), op_key(key), len(payload).to_bytes(2, "big"), payload)
    return b"".join(parts)


def unpack_operations(ops: bytes) -> list[tuple[int, bytes, bytes]]:
    """(id, opKey, payload) of each packed operation: the inverse of pack_operations."""
    out: list[tuple[int, bytes, bytes]] = []
    at = 0
    while at < len(ops):
        if len(ops) - at < OP_HEADER_BYTES:
            raise ValueError(f"packed operations end inside the header at byte {at}")
        length = int.from_bytes(ops[at + 40 : at + 42], "big")
        end = at + OP_HEADER_BYTES + length
        if end > len(ops):
            raise ValueError(f"packed operations end inside the payload at byte {at}")
        out.append((int.from_bytes(ops[at : at + 8], "big"), ops[at + 8 : at + 40], ops[at + 42 : end]))
        at = end
    return out


def post_batch_calldata(
    outbox: int, batch_id: int, ids: Sequence[int], keys: Sequence[str], payloads: Sequence[bytes]
) -> bytes:
    """postBatch(outbox, batchId, ops). The contract dedupes on (outbox, id): the outbox's random
    namespace and the operations' row ids there (one id per key, never reused)."""
    packed = pack_operations(ids, keys, payloads)
    return POST_BATCH + encode(["uint64", "uint64", "bytes"], [outbox, batch_id, packed])


def calldata_size(payload_sizes: Sequence[int]) -> int:
    """Exact ABI size of postBatch(outbox, batchId, ops) without encoding it: the selector, three head
    words, the length word and the packed operations padded to a whole word."""
    return calldata_bytes(sum(OP_HEADER_BYTES + size for size in payload_sizes))


def calldata_bytes(packed_bytes: int) -> int:
    """postBatch call data size for `packed_bytes` of packed operations."""
    return 4 + 4 * 32 + -(-packed_bytes // 32) * 32


def is_posted(w3: Any, contract: str, outbox: int, op_id: int) -> bool:
    """Whether the contract has operation `op_id` of outbox namespace `outbox` as posted."""
    data = IS_POSTED + encode(["uint64", "uint64"], [outbox, op_id])
    raw = rpc(w3, "eth_call", [{"to": contract, "data": "0x" + data.hex()}, "latest"])
    return bool(decode(["bool"], bytes.fromhex(raw[2:]))[0])


@dataclass
class FeeQuote:
    max_fee_per_gas: int
    max_priority_fee_per_gas: int
    base_fee: int
    gas_limit: int
    l2_fee_wei: int  # gas_limit x max_fee_per_gas: the most the L2 part can cost
    l1_fee_wei: int  # the L1 data fee the stack's oracle quotes (0 on plain EVM chains)

    @property
    def total_wei(self) -> int:
        return self.l2_fee_wei + self.l1_fee_wei


def rpc(w3: Any, method: str, params: list[Any]) -> Any:
    """One raw JSON-RPC call; node errors become RpcFailure (the message names the method)."""
    response = w3.provider.make_request(method, params)
    if "error" in response:
        error = response["error"]
        message = error.get("message", str(error)) if isinstance(error, dict) else str(error)
        code = error.get("code") if isinstance(error, dict) else None
        if code in TRANSIENT_RPC_CODES or any(w in message.lower() for w in TRANSIENT_RPC_WORDS):
            # rate limits and overload: raised as web3's own error, which the shared policy retries
            from web3.exceptions import Web3RPCError

            raise Web3RPCError(f"{method}: {message}", rpc_response=response)
        raise RpcFailure(f"{method}: {message}")
    return response.get("result")


def quantity(answer: Any, field: str, method: str) -> int:
    """A hex quantity field of a node's answer; a missing or malformed one is an RpcFailure naming it."""
    value = answer.get(field) if isinstance(answer, dict) else None
    try:
        if not isinstance(value, str) or not value.startswith("0x"):
            raise ValueError
        return int(value, 16)
    except ValueError:
        raise RpcFailure(f"{method}: answer field {field} is not a hex quantity: {value!r:.40}") from None


def fee_history(w3: Any, blocks: int = 5, percentile: int = 50) -> tuple[list[int], list[int]]:
    result = rpc(w3, "eth_feeHistory", [hex(blocks), "latest", [percentile]])
    base = [int(x, 16) for x in result.get("baseFeePerGas") or []]
    rewards = [int(r[0], 16) for r in result.get("reward") or [] if r]
    return base, rewards


def l1_fee(w3: Any, kind: str, sender: str, to: str, calldata: bytes, unsigned_tx: bytes) -> tuple[int, int]:
    """(L1 data fee in wei, extra L2 gas the gas limit must include) for one transaction."""
    if kind == "op":
        data = GET_L1_FEE + encode(["bytes"], [unsigned_tx])
        raw = rpc(w3, "eth_call", [{"to": GAS_PRICE_ORACLE, "data": "0x" + data.hex()}, "latest"])
        return int(decode(["uint256"], bytes.fromhex(raw[2:]))[0]), 0
    if kind == "arbitrum":
        data = GAS_ESTIMATE_COMPONENTS + encode(["address", "bool", "bytes"], [to, False, calldata])
        raw = rpc(
            w3, "eth_call", [{"from": sender, "to": NODE_INTERFACE, "data": "0x" + data.hex()}, "latest"]
        )
        _total, for_l1, base_fee, _l1_base = decode(
            ["uint64", "uint64", "uint256", "uint256"], bytes.fromhex(raw[2:])
        )
        return int(for_l1) * int(base_fee), int(for_l1)
    return 0, 0


def quote_fees(
    w3: Any,
    kind: str,
    sender: str,
    to: str,
    calldata: bytes,
    chain_id: int,
    nonce: int,
    min_priority_fee: int,
) -> FeeQuote:
    """EIP-1559 fees from eth_feeHistory, gas from eth_estimateGas (+margin), L1 fee from the oracle."""
    base_fees, rewards = fee_history(w3)
    max_fee, priority = eip1559_fees(base_fees, rewards, min_priority_fee)
    call = {"from": sender, "to": to, "data": "0x" + calldata.hex()}
    if kind == "zksync":
        # Era's gas limit already covers the pubdata published to L1: no L1 fee apart, no margin on top
        estimate = rpc(w3, "zks_estimateFee", [call])
        gas = quantity(estimate, "gas_limit", "zks_estimateFee")
        max_fee = max(max_fee, quantity(estimate, "max_fee_per_gas", "zks_estimateFee"))
        return FeeQuote(max_fee, priority, base_fees[-1], gas, gas * max_fee, 0)
    gas = int(rpc(w3, "eth_estimateGas", [call]), 16)
    gas = gas + gas * GAS_MARGIN_PERCENT // 100
    unsigned = unsigned_eip1559(chain_id, nonce, to, calldata, gas, max_fee, priority)
    l1, extra_gas = l1_fee(w3, kind, sender, to, calldata, unsigned)
    gas += extra_gas
    return FeeQuote(max_fee, priority, base_fees[-1], gas, gas * max_fee, l1)


def tx_fields(
    chain_id: int, nonce: int, to: str, calldata: bytes, gas: int, max_fee: int, priority: int
) -> dict[str, Any]:
    from eth_utils import to_checksum_address

    return {
        "type": 2,
        "chainId": chain_id,
        "nonce": nonce,
        "to": to_checksum_address(to),
        "value": 0,
        "data": calldata,
        "gas": gas,
        "maxFeePerGas": max_fee,
        "maxPriorityFeePerGas": priority,
    }


def unsigned_eip1559(
    chain_id: int, nonce: int, to: str, calldata: bytes, gas: int, max_fee: int, priority: int
) -> bytes:
    """0x02 || rlp([chainId, nonce, tip, maxFee, gas, to, value, data, accessList]): what OP-stack's
    GasPriceOracle.getL1Fee takes (it adds the 68 signature bytes itself)."""
    import rlp

    to_bytes = bytes.fromhex(to.removeprefix("0x"))
    return b"\x02" + rlp.encode([chain_id, nonce, priority, max_fee, gas, to_bytes, 0, calldata, []])


def sign(fields: dict[str, Any], key: str) -> tuple[bytes, str]:
    """(raw signed transaction, its hash). The key stays in this frame."""
    from eth_account import Account

    try:
        signed = Account.sign_transaction(fields, key)
    except Exception:
        raise RpcFailure("could not sign the transaction (check the signer key setting)") from None
    return bytes(signed.raw_transaction), "0x" + bytes(signed.hash).hex()


def send_raw(w3: Any, raw: bytes) -> str:
    """Broadcast; 'sent', or 'known' when the node already has this tx (or its nonce is used)."""
    try:
        rpc(w3, "eth_sendRawTransaction", ["0x" + raw.hex()])
    except RpcFailure as exc:
        text = str(exc).lower()
        if any(word in text for word in BENIGN_SEND_ERRORS):
            return "known"
        raise
    return "sent"


def receipt(w3: Any, tx_hash: str) -> dict[str, Any] | None:
    result = rpc(w3, "eth_getTransactionReceipt", [tx_hash])
    return dict(result) if result else None


def transaction_known(w3: Any, tx_hash: str) -> bool:
    return rpc(w3, "eth_getTransactionByHash", [tx_hash]) is not None


def nonce_at(w3: Any, address: str, block: str = "latest") -> int:
    return int(rpc(w3, "eth_getTransactionCount", [address, block]), 16)


def head(w3: Any) -> int:
    return int(rpc(w3, "eth_blockNumber", []), 16)


def block_gas_limit(w3: Any) -> int:
    """The gas limit of the latest block: no transaction with a higher gas limit can be mined."""
    return int(rpc(w3, "eth_getBlockByNumber", ["latest", False])["gasLimit"], 16)


def block_hash_at(w3: Any, number: int) -> str | None:
    block = rpc(w3, "eth_getBlockByNumber", [hex(number), False])
    return str(block["hash"]) if block else None


def posted_payload(log: dict[str, Any]) -> bytes:
    """The payload an OperationPosted log carries (its data is the ABI encoding of `bytes payload`)."""
    data = log["data"]
    return bytes(decode(["bytes"], bytes.fromhex(data[2:]) if isinstance(data, str) else bytes(data))[0])


def posted_operations(w3: Any, contract: str, from_block: int = 0) -> list[tuple[str, int, str]]:
    """Every OperationPosted of a contract: (opKey hex, batchId, tx hash), in chain order."""
    logs = rpc(
        w3,
        "eth_getLogs",
        [
            {
                "address": contract,
                "fromBlock": hex(from_block),
                "toBlock": "latest",
                "topics": [OPERATION_POSTED_TOPIC],
            }
        ],
    )
    return [(log["topics"][1], int(log["topics"][2], 16), log["transactionHash"]) for log in logs]


def posted_op_keys(
    w3: Any, contract: str, op_topics: Sequence[str], from_block: int = 0, block_range: int = 0
) -> set[str]:
    """Which of `op_topics` (opKeys as 0x-hex topics) have an OperationPosted on the contract since
    `from_block`: one eth_getLogs per window of `block_range` blocks (0: one window up to the head, as
    RPC providers cap the range) and per TOPICS_PER_QUERY opKeys, the topic OR-listed."""
    wanted = sorted({t.lower() for t in op_topics})
    if not wanted:
        return set()
    last = head(w3)
    step = block_range if block_range > 0 else max(last - from_block + 1, 1)
    found: set[str] = set()
    for start in range(from_block, last + 1, step):
        window = {"fromBlock": hex(start), "toBlock": hex(min(start + step - 1, last))}
        for at in range(0, len(wanted), TOPICS_PER_QUERY):
            topics = [OPERATION_POSTED_TOPIC, wanted[at : at + TOPICS_PER_QUERY]]
            logs = rpc(w3, "eth_getLogs", [{"address": contract, "topics": topics, **window}]) or []
            found.update(str(log["topics"][1]).lower() for log in logs)
        if found >= set(wanted):
            break  # every opKey found: no need to search later blocks
    return found & set(wanted)
