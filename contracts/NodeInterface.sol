// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.28;

/// @title NodeInterface (sandbox stand-in for Arbitrum's virtual contract at 0x..C8).
/// @notice Same `gasEstimateComponents` signature as Arbitrum Nitro. The L1 part is priced like Nitro's
///         poster fee: calldata units (16 per non-zero byte, 4 per zero byte, plus a fixed 140-byte
///         overhead) times a fixed L1 base fee estimate, expressed in L2 gas at the current base fee.
///         Nitro's `gasEstimate` is the whole estimate incl. the L1 part; anvil cannot run the L2 part
///         here, so this returns only the L1 part in it and the client adds eth_estimateGas.
contract NodeInterface {
    uint256 public constant L1_BASE_FEE_ESTIMATE = 0.1 gwei; // per calldata unit, blob-era level
    uint256 public constant MIN_L2_BASE_FEE = 0.01 gwei; // Arbitrum One's floor

    function gasEstimateComponents(address to, bool contractCreation, bytes calldata data)
        external
        payable
        returns (uint64 gasEstimate, uint64 gasEstimateForL1, uint256 baseFee, uint256 l1BaseFeeEstimate)
    {
        to;
        contractCreation;
        uint256 units = 140 * 16;
        for (uint256 i = 0; i < data.length; ++i) {
            units += data[i] == 0 ? 4 : 16;
        }
        baseFee = block.basefee > MIN_L2_BASE_FEE ? block.basefee : MIN_L2_BASE_FEE;
        l1BaseFeeEstimate = L1_BASE_FEE_ESTIMATE;
        gasEstimateForL1 = uint64((units * l1BaseFeeEstimate + baseFee - 1) / baseFee);
        gasEstimate = gasEstimateForL1;
    }
}
