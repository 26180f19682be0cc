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
///         Call data: the operations are packed back to back in one `bytes` (42 bytes of header each
///         instead of ABI arrays' 128), because call data is what a batch pays for most, twice on a
///         rollup (L2 gas and the L1 data fee).
contract OperationLog {
    event OperationPosted(bytes32 indexed opKey, uint64 indexed batchId, bytes payload);

    error NotPoster();
    /// the packed operations end inside an operation's header or payload (offset: where it starts)
    error MalformedOperations(uint256 offset);

    /// bytes of an operation's header in `ops`: id (8) | opKey (32) | payload length (2)
    uint256 private constant HEADER = 42;
    /// keccak256("OperationPosted(bytes32,uint64,bytes)"), a literal so that assembly can use it
    bytes32 private constant POSTED = 0x1cc9a10f645ea3c4a30b66a65030ed00d5e162eaad123ac805e346e42b7b2299;

    address public immutable poster;
    /// (outbox << 64 | id >> 8) -> bit (id & 255) set once operation `id` of `outbox` is posted
    mapping(uint256 => uint256) public postedBits;

    constructor(address poster_) {
        poster = poster_;
    }

    /// @param ops the operations, each `id (uint64) | opKey (bytes32) | length (uint16) | payload`,
    ///        big-endian, back to back, nothing between or after them.
    /// @return posted how many operations were posted now (the rest were posted before, or repeated).
    /// @dev The loop is assembly because the same loop in Solidity costs ~610 gas of bookkeeping per
    ///      operation against ~350 here, next to 2,268 for the log itself (measured with debug_traceCall).
    function postBatch(uint64 outbox, uint64 batchId, bytes calldata ops) external returns (uint256 posted) {
        if (msg.sender != poster) revert NotPoster();
        bytes4 malformed = MalformedOperations.selector;
        assembly ("memory-safe") {
            // storage slot of postedBits[w]: keccak256(w . slot), in the scratch space 0x00..0x3f
            function slotOf(w, mappingSlot) -> s {
                mstore(0x00, w)
                mstore(0x20, mappingSlot)
                s := keccak256(0x00, 0x40)
            }
            let start := ops.offset
            let end := add(start, ops.length)
            let base := shl(64, outbox)
            let none := not(0) // no word held in `bits` yet (no real word is this)
            let word := none
            let bits := 0
            // the event's data, ABI-encoded `bytes`, is built at the free pointer, reused by every
            // operation (memory grows once, to the largest payload)
            let m := mload(0x40)
            mstore(m, 0x20)
            for { let p := start } lt(p, end) {} {
                // an operation cut short anywhere (header or payload) ends past `end`: one check covers
                // both, and the header words read past `end` are only used after it
                let id := shr(192, calldataload(p))
                let length := shr(240, calldataload(add(p, 40)))
                let next := add(add(p, HEADER), length)
                if gt(next, end) {
                    mstore(0x00, malformed)
                    mstore(0x04, sub(p, start))
                    revert(0x00, 0x24)
                }
                let w := or(base, shr(8, id))
                if iszero(eq(w, word)) {
                    if iszero(eq(word, none)) { sstore(slotOf(word, postedBits.slot), bits) }
                    word := w
                    bits := sload(slotOf(w, postedBits.slot))
                }
                let mask := shl(and(id, 255), 1)
                if iszero(and(bits, mask)) {
                    bits := or(bits, mask)
                    mstore(add(m, 0x20), length)
                    mstore(add(add(m, 0x40), and(length, not(31))), 0) // the last word's padding
                    calldatacopy(add(m, 0x40), add(p, HEADER), length)
                    // emit OperationPosted(opKey, batchId, payload)
                    log3(m, add(0x40, and(add(length, 31), not(31))), POSTED, calldataload(add(p, 8)), batchId)
                    posted := add(posted, 1)
                }
                p := next
            }
            if iszero(eq(word, none)) { sstore(slotOf(word, postedBits.slot), bits) }
        }
    }

    /// @return whether operation `id` of `outbox` has been posted.
    function isPosted(uint64 outbox, uint64 id) external view returns (bool) {
        return postedBits[(uint256(outbox) << 64) | (id >> 8)] & (uint256(1) << (id & 255)) != 0;
    }
}
