// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.28;

/// @title OperationLog: the on-chain end of scaleops' outbox (duty l2-batch-posting).
/// @notice Records a batch of operations in one transaction and emits one OperationPosted per operation.
///         An operation is identified by opKey = keccak256(bytes(key)) of its outbox idempotency key; an
///         opKey recorded before is skipped, so a batch posted twice (a crash, a reorg, an operator's
///         mistake) never records an operation twice.
contract OperationLog {
    event OperationPosted(bytes32 indexed opKey, uint64 indexed batchId, bytes payload);

    error NotPoster();
    error LengthMismatch();

    address public immutable poster;
    mapping(bytes32 => uint64) public recordedIn; // opKey -> batchId + 1 (0: never recorded)

    constructor(address poster_) {
        poster = poster_;
    }

    /// @return posted how many operations were recorded now (the rest were recorded before).
    function postBatch(uint64 batchId, bytes32[] calldata opKeys, bytes[] calldata payloads)
        external
        returns (uint256 posted)
    {
        if (msg.sender != poster) revert NotPoster();
        if (opKeys.length != payloads.length) revert LengthMismatch();
        uint64 mark = batchId + 1;
        for (uint256 i = 0; i < opKeys.length; ++i) {
            bytes32 opKey = opKeys[i];
            if (recordedIn[opKey] != 0) continue;
            recordedIn[opKey] = mark;
            emit OperationPosted(opKey, batchId, payloads[i]);
            unchecked {
                ++posted;
            }
        }
    }
}
