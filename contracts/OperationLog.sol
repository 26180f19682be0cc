// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.28;

/// @title OperationLog: the on-chain end of scaleops' outbox (duty l2-batch-posting).
/// @notice Records a batch of operations in one transaction and emits one OperationPosted per operation,
///         opKey = keccak256(bytes(key)) of its outbox idempotency key.
///         Dedupe: an operation is identified on chain by (outbox, id): `outbox` is a random 64-bit number
///         drawn once per outbox database, `id` the operation's row id there, which the outbox maps one to
///         one to its key (unique key, ids never reused). One bit per (outbox, id) in a bitmap of 256-bit
///         words: an id posted before is skipped, so a batch posted twice (a crash, a reorg, an operator's
///         mistake) never posts an operation twice, and consecutive ids share one storage slot (a batch of
///         500 writes ~2 slots, not 500). Only the poster (the outbox's signer) can post.
contract OperationLog {
    event OperationPosted(bytes32 indexed opKey, uint64 indexed batchId, bytes payload);

    error NotPoster();
    error LengthMismatch();

    address public immutable poster;
    /// (outbox << 64 | id >> 8) -> bit (id & 255) set once operation `id` of `outbox` is posted
    mapping(uint256 => uint256) public postedBits;

    constructor(address poster_) {
        poster = poster_;
    }

    /// @return posted how many operations were posted now (the rest were posted before, or repeated).
    function postBatch(
        uint64 outbox,
        uint64 batchId,
        uint64[] calldata ids,
        bytes32[] calldata opKeys,
        bytes[] calldata payloads
    ) external returns (uint256 posted) {
        if (msg.sender != poster) revert NotPoster();
        uint256 n = ids.length;
        if (opKeys.length != n || payloads.length != n) revert LengthMismatch();
        uint256 base = uint256(outbox) << 64;
        uint256 word = type(uint256).max; // the word held in `bits` (none yet: no real word is this)
        uint256 bits;
        for (uint256 i = 0; i < n; ++i) {
            uint64 id = ids[i];
            uint256 w = base | (id >> 8);
            if (w != word) {
                if (word != type(uint256).max) postedBits[word] = bits;
                word = w;
                bits = postedBits[w];
            }
            uint256 mask = uint256(1) << (id & 255);
            if (bits & mask != 0) continue;
            bits |= mask;
            emit OperationPosted(opKeys[i], batchId, payloads[i]);
            unchecked {
                ++posted;
            }
        }
        if (word != type(uint256).max) postedBits[word] = bits;
    }

    /// @return whether operation `id` of `outbox` has been posted.
    function isPosted(uint64 outbox, uint64 id) external view returns (bool) {
        return postedBits[(uint256(outbox) << 64) | (id >> 8)] & (uint256(1) << (id & 255)) != 0;
    }
}
