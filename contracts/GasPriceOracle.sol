// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.28;

/// @title GasPriceOracle (sandbox stand-in for the OP-stack predeploy at 0x42..0F).
/// @notice Same interface and the same Ecotone L1-fee formula as the real predeploy, with fixed, realistic
///         L1 values (the real ones come from the L1Block predeploy, updated by the sequencer). Installed on
///         the sandbox's anvil with anvil_setCode; anvil has no OP-stack predeploys of its own.
contract GasPriceOracle {
    uint256 public constant DECIMALS = 6;
    uint256 public constant L1_BASE_FEE = 8 gwei;
    uint256 public constant BLOB_BASE_FEE = 1_000_000; // wei
    uint32 public constant BASE_FEE_SCALAR = 1368; // OP Mainnet values since Ecotone
    uint32 public constant BLOB_BASE_FEE_SCALAR = 810_949;

    function decimals() external pure returns (uint256) {
        return DECIMALS;
    }

    function isEcotone() external pure returns (bool) {
        return true;
    }

    function isFjord() external pure returns (bool) {
        return false;
    }

    function l1BaseFee() public pure returns (uint256) {
        return L1_BASE_FEE;
    }

    function blobBaseFee() public pure returns (uint256) {
        return BLOB_BASE_FEE;
    }

    function baseFeeScalar() public pure returns (uint32) {
        return BASE_FEE_SCALAR;
    }

    function blobBaseFeeScalar() public pure returns (uint32) {
        return BLOB_BASE_FEE_SCALAR;
    }

    function gasPrice() external view returns (uint256) {
        return block.basefee;
    }

    function baseFee() external view returns (uint256) {
        return block.basefee;
    }

    /// @notice L1 gas of an unsigned, RLP-encoded transaction (+ 68 bytes for the signature), as Ecotone.
    function getL1GasUsed(bytes memory data) public pure returns (uint256) {
        uint256 total = 0;
        uint256 length = data.length;
        for (uint256 i = 0; i < length; ++i) {
            total += data[i] == 0 ? 4 : 16;
        }
        return total + (68 * 16);
    }

    /// @notice The Ecotone L1 data fee in wei of an unsigned, RLP-encoded transaction.
    function getL1Fee(bytes memory data) external pure returns (uint256) {
        uint256 l1GasUsed = getL1GasUsed(data);
        uint256 scaledBaseFee = uint256(BASE_FEE_SCALAR) * 16 * L1_BASE_FEE;
        uint256 scaledBlobBaseFee = uint256(BLOB_BASE_FEE_SCALAR) * BLOB_BASE_FEE;
        return (l1GasUsed * (scaledBaseFee + scaledBlobBaseFee)) / (16 * 10 ** DECIMALS);
    }
}
