"""The OP-stack L1 fee formulas against published OP-mainnet transactions (vectors used by op-geth and
revm's test suites; the expected fees are what the block explorer shows for those transactions)."""

from __future__ import annotations

import pytest

from tasks.l2.fees import (
    bumped,
    calldata_gas,
    ecotone_l1_fee,
    eip1559_fees,
    fjord_l1_fee,
    fjord_l1_gas,
    flz_compress_len,
)

# OP mainnet block 118024092 (Ecotone), 2nd tx 0xa75ef696...49c2
ECOTONE_TX = bytes.fromhex(
    "02f8b30a832253fc8402d11f39842c8a46398301388094dc6ff44d5d932cbd77b52e5612ba0529dc6226f180b844a9059cbb"
    "000000000000000000000000d43e02db81f4d46cdf8521f623d21ea0ec7562a5000000000000000000000000000000000000"
    "0000000000008ac7230489e80000c001a02947e24750723b48f886931562c55d9e07f856d8e06468e719755e18bbc3a570a0"
    "784da9ce59fd7754ea5be6e17a86b348e441348cd48ace59d174772465eadbd1"
)
FJORD_202 = bytes.fromhex(
    "02f901550a758302df1483be21b88304743f94f80e51afb613d764fa61751affd3313c190a86bb870151bd62fd12adb8e41ef2"
    "4f3f000000000000000000000000000000000000000000000000000000000000006e000000000000000000000000af88d065"
    "e77c8cc2239327c5edb3a432268e5831000000000000000000000000000000000000000000000000000000000003c1e50000"
    "00000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000"
    "0000000000000000000000000000a000000000000000000000000000000000000000000000000000000000000000148c89ed"
    "219d02f1a5be012c689b4f5b731827bebe000000000000000000000000c001a033fd89cb37c31b2cba46b6466e040c61fc9b"
    "2a3675a7f5f493ebd5ad77c497f8a07cdf65680e238392693019b4092f610222e71b7cec06449cb922b93b6a12744e"
)


def test_calldata_gas_counts_zero_and_nonzero_bytes() -> None:
    assert calldata_gas(bytes.fromhex("FACADE")) == 48
    assert calldata_gas(bytes.fromhex("FA00CA00DE")) == 56


def test_ecotone_small_vector() -> None:
    # (16 * 3) * (1000 * 16 * 1000 + 1000 * 1000) / (16 * 1e6) = 51
    assert ecotone_l1_fee(bytes.fromhex("FACADE"), 1000, 1000, 1000, 1000) == 51
    assert ecotone_l1_fee(b"", 1000, 1000, 1000, 1000) == 0
    assert ecotone_l1_fee(bytes.fromhex("7EFACADE"), 1000, 1000, 1000, 1000) == 0  # deposits pay none


def test_ecotone_op_mainnet_transaction() -> None:
    assert calldata_gas(ECOTONE_TX) == 2456
    fee = ecotone_l1_fee(ECOTONE_TX, 47036678951, 1368, 57422457042, 810949)
    assert fee == 7306020222001


def test_flz_compress_len_and_fjord_small_vectors() -> None:
    assert flz_compress_len(bytes.fromhex("FACADE")) == 4
    assert fjord_l1_fee(bytes.fromhex("FACADE"), 1000, 1000, 1000, 1000) == 1700  # the 100-byte floor
    assert flz_compress_len(FJORD_202) == 202
    assert fjord_l1_fee(FJORD_202, 1000, 1000, 1000, 1000) == 2148
    assert fjord_l1_gas(bytes.fromhex("FACADE")) == 1600  # 100-byte minimum x 16
    assert fjord_l1_gas(FJORD_202) == 126387400 * 16 // 10**6


def test_flz_compress_len_of_repetitive_data_is_small() -> None:
    assert flz_compress_len(b"\x00" * 10_000) < 200
    assert flz_compress_len(b"") == 0


@pytest.mark.parametrize("size", [1, 12, 13, 14, 100, 1000])
def test_flz_compress_len_never_crashes_on_short_or_random_input(size: int) -> None:
    import random

    data = random.Random(size).randbytes(size)
    assert flz_compress_len(data) >= size  # random data does not compress


def test_eip1559_fees_use_next_base_fee_and_median_tip() -> None:
    assert eip1559_fees([100, 110, 120], [1, 5, 3], min_priority_fee=2) == (243, 3)
    assert eip1559_fees([100], [], min_priority_fee=2) == (202, 2)
    with pytest.raises(ValueError):
        eip1559_fees([], [], 1)


def test_bumped_is_at_least_the_percentage() -> None:
    assert bumped(100, 10) == 110
    assert bumped(101, 10) == 112  # 10.1 rounded up
    assert bumped(0, 10) == 1
