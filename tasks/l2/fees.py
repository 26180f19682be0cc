"""L2 fee formulas, pure (no I/O): the OP-stack L1 data fee (Ecotone, Fjord) and EIP-1559 fee picking.

The sandbox's GasPriceOracle implements the Ecotone formula on chain; these functions let the duty
check an oracle's answer and are unit-tested against published OP-mainnet transactions.
"""

from __future__ import annotations

from collections.abc import Sequence

ZERO_BYTE_GAS = 4
NONZERO_BYTE_GAS = 16
DECIMALS = 6
# Fjord (op-geth core/types/rollup_cost.go)
FJORD_COST_INTERCEPT = -42_585_600
FJORD_COST_FASTLZ_COEF = 836_500
FJORD_MIN_TX_SIZE_SCALED = 100 * 1_000_000
DEPOSIT_TX_TYPE = 0x7E


def calldata_gas(data: bytes) -> int:
    """EIP-2028 calldata gas: 4 per zero byte, 16 per non-zero byte."""
    zeros = data.count(0)
    return zeros * ZERO_BYTE_GAS + (len(data) - zeros) * NONZERO_BYTE_GAS


def ecotone_l1_fee(
    signed_tx: bytes, l1_base_fee: int, base_fee_scalar: int, blob_base_fee: int, blob_base_fee_scalar: int
) -> int:
    """Ecotone L1 data fee (wei) of a signed, RLP-encoded transaction, as the OP-stack node charges it."""
    if not signed_tx or signed_tx[0] == DEPOSIT_TX_TYPE:
        return 0
    weighted = 16 * base_fee_scalar * l1_base_fee + blob_base_fee_scalar * blob_base_fee
    return calldata_gas(signed_tx) * weighted // (16 * 10**DECIMALS)


def flz_compress_len(data: bytes) -> int:
    """Length of FastLZ (level 1) compression of `data`, as op-geth's FlzCompressLen computes it."""
    mask32 = 0xFFFFFFFF
    n = 0
    table = [0] * 8192
    size = len(data)

    def u24(i: int) -> int:
        return data[i] | (data[i + 1] << 8) | (data[i + 2] << 16)

    def hash24(v: int) -> int:
        return (((2654435769 * v) & mask32) >> 19) & 0x1FFF

    def literals(r: int) -> int:
        return 0x21 * (r // 0x20) + ((r % 0x20) + 1 if r % 0x20 else 0)

    def match_len(length: int) -> int:
        length -= 1
        return 3 * (length // 262) + (3 if length % 262 >= 6 else 2)

    def compare(p: int, q: int, end: int) -> int:
        limit = end - q
        length = 0
        while length < limit:
            if data[p + length] != data[q + length]:
                return length + 1  # op-geth counts the mismatching byte too
            length += 1
        return length

    anchor = 0
    ip_limit = size - 13 if size >= 13 else 0
    ip = anchor + 2
    while ip < ip_limit:
        ref = 0
        while True:
            seq = u24(ip)
            h = hash24(seq)
            ref = table[h]
            table[h] = ip
            distance = ip - ref
            if ip >= ip_limit:
                break
            ip += 1
            if distance <= 0x1FFF and seq == u24(ref):
                break
        if ip >= ip_limit:
            break
        ip -= 1
        if ip > anchor:
            n += literals(ip - anchor)
        length = compare(ref + 3, ip + 3, ip_limit + 9)
        n += match_len(length)
        ip += length
        table[hash24(u24(ip))] = ip
        ip += 1
        table[hash24(u24(ip))] = ip
        ip += 1
        anchor = ip
    n += literals(size - anchor)
    return n


def fjord_estimated_size(signed_tx: bytes) -> int:
    """Fjord's estimated compressed size, scaled by 1e6 (never below 100 bytes)."""
    scaled = FJORD_COST_INTERCEPT + FJORD_COST_FASTLZ_COEF * flz_compress_len(signed_tx)
    return max(FJORD_MIN_TX_SIZE_SCALED, scaled)


def fjord_l1_fee(
    signed_tx: bytes, l1_base_fee: int, base_fee_scalar: int, blob_base_fee: int, blob_base_fee_scalar: int
) -> int:
    """Fjord L1 data fee (wei) of a signed, RLP-encoded transaction (FastLZ size estimator)."""
    if not signed_tx or signed_tx[0] == DEPOSIT_TX_TYPE:
        return 0
    scaled_fee = base_fee_scalar * l1_base_fee * 16 + blob_base_fee_scalar * blob_base_fee
    return fjord_estimated_size(signed_tx) * scaled_fee // 10 ** (2 * DECIMALS)


def fjord_l1_gas(signed_tx: bytes) -> int:
    """The `l1GasUsed` a Fjord node reports: estimated size x 16."""
    if not signed_tx or signed_tx[0] == DEPOSIT_TX_TYPE:
        return 0
    return fjord_estimated_size(signed_tx) * 16 // 10**DECIMALS


def eip1559_fees(
    base_fees: Sequence[int], rewards: Sequence[int], min_priority_fee: int, base_fee_multiplier: int = 2
) -> tuple[int, int]:
    """(maxFeePerGas, maxPriorityFeePerGas) from eth_feeHistory: the next block's base fee (the last
    entry of `baseFeePerGas`) times `base_fee_multiplier` (room for 6 full blocks of +12.5%), plus the
    median of the recent blocks' median tips, never below `min_priority_fee`."""
    if not base_fees:
        raise ValueError("eth_feeHistory returned no base fees")
    next_base = int(base_fees[-1])
    tips = sorted(int(r) for r in rewards)
    tip = tips[len(tips) // 2] if tips else 0
    priority = max(tip, min_priority_fee)
    return next_base * base_fee_multiplier + priority, priority


def bumped(old: int, percent: int) -> int:
    """`old` raised by at least `percent`% (rounded up, +1 wei so 0 still moves)."""
    return old + max(1, -(-old * percent // 100))
