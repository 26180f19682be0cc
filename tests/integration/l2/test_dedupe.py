"""The contract on the sandbox's anvil: its dedupe by (outbox namespace, operation id) in a bitmap (a
re-post of operations posted before emits nothing for them, ids across a 256-id word boundary work, and
an outbox that reuses ids (reset or restored while the contract kept its state) fails those operations
loudly instead of confirming operations the contract skipped); the packed call data (every payload comes
back from the logs as the outbox holds it, malformed packing reverts, only the poster posts)."""

from __future__ import annotations

import time
from typing import Any

import pytest

from scaleops.core.settings import Settings, load_settings
from tasks.l2 import evm
from tasks.l2.outbox import NewOp, add_operations, decode_onchain_payload, onchain_payload
from tests.integration.l2.helpers import (
    add_ops,
    chain_rpc,
    drop_database,
    evm_w3,
    fresh_database,
    head,
    onchain,
    post,
    query,
)

pytestmark = pytest.mark.integration
CHAIN = "optimism"


def namespace(settings: Settings) -> int:
    return int(query(settings, "select namespace from l2_outbox")[0][0])


def outbox_ops(settings: Settings) -> list[tuple[int, str, bytes]]:
    """(id, key, on-chain payload) of every operation, by id."""
    rows = query(settings, "select id, key, kind, payload from l2_operations order by id")
    return [(int(i), str(k), onchain_payload(kind, p)) for i, k, kind, p in rows]


def direct_post(settings: Settings, outbox: int, batch_id: int, ops: list[tuple[int, str, bytes]]) -> Any:
    """Sign and send postBatch with the signer, outside the poster (an operator re-sending an old batch);
    return the receipt."""
    cfg = settings.chains[CHAIN]
    w3 = evm_w3(settings, CHAIN)
    signer, contract = str(cfg.signer_address), str(cfg.contract)
    calldata = evm.post_batch_calldata(
        outbox, batch_id, [o[0] for o in ops], [o[1] for o in ops], [o[2] for o in ops]
    )
    nonce = evm.nonce_at(w3, signer, "pending")
    quote = evm.quote_fees(w3, cfg.kind, signer, contract, calldata, cfg.chain_id, nonce, 10**6)
    fields = evm.tx_fields(
        cfg.chain_id, nonce, contract, calldata, quote.gas_limit, quote.max_fee_per_gas,
        quote.max_priority_fee_per_gas,
    )  # fmt: skip
    raw, tx_hash = evm.sign(fields, cfg.signer_key.get_secret_value())  # type: ignore[union-attr]
    assert evm.send_raw(w3, raw) == "sent"
    for _ in range(200):
        found = evm.receipt(w3, tx_hash)
        if found:
            assert int(found["status"], 16) == 1
            return found
        time.sleep(0.05)
    raise AssertionError(f"{tx_hash} was not mined")


def posted_topics(rcpt: Any) -> list[str]:
    return [str(log["topics"][1]) for log in rcpt["logs"] if log["topics"][0] == evm.OPERATION_POSTED_TOPIC]


def test_a_rebroadcast_of_posted_operations_emits_nothing_for_them(outbox_db: str) -> None:
    settings = load_settings()
    keys = add_ops(settings, CHAIN, 6)
    start = head(settings, CHAIN)
    report = post(max_batch_ops=3)
    assert report.problems == [] and report.ops_posted == 6
    ops, outbox = outbox_ops(settings), namespace(settings)
    w3, contract = evm_w3(settings, CHAIN), str(settings.chains[CHAIN].contract)
    assert all(evm.is_posted(w3, contract, outbox, op_id) for op_id, _k, _p in ops)
    # an old batch re-sent as it was (its ids, keys, payloads), plus one repeated inside the call
    again = direct_post(settings, outbox, 1, ops[:3] + [ops[0]])
    assert posted_topics(again) == []
    # ids already posted are skipped even beside one that is new (same namespace, an id never used)
    fresh_id = ops[-1][0] + 1
    assert not evm.is_posted(w3, contract, outbox, fresh_id)
    mixed = direct_post(settings, outbox, 2, [*ops[3:], (fresh_id, "direct-" + keys[0], b"{}")])
    assert posted_topics(mixed) == ["0x" + evm.op_key("direct-" + keys[0]).hex()]
    assert evm.is_posted(w3, contract, outbox, fresh_id)
    seen = onchain(settings, CHAIN, keys, start)
    assert set(seen) == set(keys) and set(seen.values()) == {1}


def test_ids_across_a_256_boundary(outbox_db: str) -> None:
    settings = load_settings()
    add_ops(settings, CHAIN, 0)
    query(settings, "select setval('l2_operations_id_seq', 250)")
    keys = add_ops(settings, CHAIN, 12)  # ids 251..262: words 0 and 1 of the bitmap
    start = head(settings, CHAIN)
    ops, outbox = outbox_ops(settings), namespace(settings)
    assert [o[0] for o in ops] == list(range(251, 263))
    report = post(max_batch_ops=5)  # batches 251-255 | 256-260 | 261-262, and one wholly across
    assert report.problems == [] and report.ops_posted == 12
    seen = onchain(settings, CHAIN, keys, start)
    assert set(seen) == set(keys) and set(seen.values()) == {1}
    w3, contract = evm_w3(settings, CHAIN), str(settings.chains[CHAIN].contract)
    assert all(evm.is_posted(w3, contract, outbox, i) for i in range(251, 263))
    assert not any(evm.is_posted(w3, contract, outbox, i) for i in (250, 263, 511, 512))
    # one call that goes back and forth across the boundary posts nothing again
    assert posted_topics(direct_post(settings, outbox, 9, [ops[5], ops[4], ops[11], ops[0]])) == []
    assert statuses(settings) == {"confirmed": 12}


def statuses(settings: Settings) -> dict[str, int]:
    rows = query(settings, "select status, count(*) from l2_operations group by 1")
    return {str(s): int(n) for s, n in rows}


def test_an_outbox_reusing_ids_fails_those_operations_loudly(
    sandbox_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two outbox databases with one namespace (a database restored from an old backup is the real case):
    the second one's ids were posted by the first, so the contract skips its operations. They must end
    `failed` with the reason, never `confirmed`."""
    base = sandbox_env["SCALEOPS_POSTGRES__DSN"]
    first, first_dsn = fresh_database(base)
    second, second_dsn = fresh_database(base)
    try:
        monkeypatch.setenv("SCALEOPS_POSTGRES__DSN", first_dsn)
        settings = load_settings()
        first_keys = add_ops(settings, CHAIN, 3)
        assert post().ops_posted == 3
        shared = namespace(settings)
        monkeypatch.setenv("SCALEOPS_POSTGRES__DSN", second_dsn)
        # the safeguard searches logs from the sandbox's deployment block, in windows as providers cap them
        monkeypatch.setenv(f"SCALEOPS_CHAINS__{CHAIN.upper()}__LOGS_BLOCK_RANGE", "500")
        settings = load_settings()
        assert settings.chains[CHAIN].from_block > 0
        add_ops(settings, CHAIN, 0)
        query(settings, "update l2_outbox set namespace = %s returning namespace", shared)
        second_keys = add_ops(settings, CHAIN, 4)  # ids 1..3 collide, id 4 is new
        start = head(settings, CHAIN) + 1  # the first outbox's posts are in blocks before
        report = post()
        assert report.failed == 3 and report.ops_posted == 1
        assert any("outbox id was used before" in p for p in report.problems), report.problems
        rows = dict(query(settings, "select key, status from l2_operations"))
        assert [rows[k] for k in second_keys] == ["failed", "failed", "failed", "confirmed"]
        seen = onchain(settings, CHAIN, first_keys + second_keys, start)
        assert dict(seen) == {second_keys[3]: 1}
    finally:
        drop_database(base, first)
        drop_database(base, second)


def test_an_operation_posted_earlier_under_its_key_is_confirmed_not_failed(
    outbox_db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The contract skips an operation whose earlier transaction landed after all (here: sent outside the
    poster): its OperationPosted is in an older block, found by the windowed log search, so the
    operation is confirmed and nothing is posted twice."""
    settings = load_settings()
    keys = add_ops(settings, CHAIN, 2)
    start = head(settings, CHAIN)
    monkeypatch.setenv(f"SCALEOPS_CHAINS__{CHAIN.upper()}__FROM_BLOCK", str(start - 5))
    monkeypatch.setenv(f"SCALEOPS_CHAINS__{CHAIN.upper()}__LOGS_BLOCK_RANGE", "3")
    ops, outbox = outbox_ops(settings), namespace(settings)
    earlier = direct_post(settings, outbox, 77, ops[:1])
    assert posted_topics(earlier) == [topic(keys[0])]
    for _ in range(10):  # the earlier post is several search windows before the poster's
        chain_rpc(settings, CHAIN, "evm_mine")
    report = post()
    assert report.problems == [] and report.failed == 0 and report.ops_posted == 2
    assert statuses(settings) == {"confirmed": 2}
    seen = onchain(settings, CHAIN, keys, start)
    assert set(seen) == set(keys) and set(seen.values()) == {1}


def test_a_from_block_past_the_head_is_refused_by_name(
    outbox_db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tasks.l2.poster import PostingError

    monkeypatch.setenv(f"SCALEOPS_CHAINS__{CHAIN.upper()}__FROM_BLOCK", str(10**12))
    add_ops(load_settings(), CHAIN, 1)
    with pytest.raises(
        PostingError, match=f"SCALEOPS_CHAINS__{CHAIN.upper()}__FROM_BLOCK 1000000000000 is past"
    ):
        post()
    assert statuses(load_settings()) == {"pending": 1}


def test_every_payload_comes_back_from_the_chain_as_the_outbox_holds_it(outbox_db: str) -> None:
    import psycopg

    settings = load_settings()
    memo32 = "x" * 13  # canonical JSON {"k":"memo","p":"xxxxxxxxxxxxx"} is exactly 32 bytes
    new = [
        NewOp("payload-anchor", "anchor", {"sha256": "ab" * 32}),
        NewOp("payload-anchor-upper", "anchor", {"sha256": "AB" * 32}),
        NewOp("payload-memo32", "memo", memo32),
        NewOp("payload-payout", "payout", {"to": "0x" + "11" * 20, "amount": "1000000000000000000"}),
        NewOp("payload-unicode", "attest", {"note": "zürich ✓", "n": [1, 2.5, None, True]}),
        NewOp("payload-big", "attest", {"blob": "z" * 5000}),
    ]
    with psycopg.connect(settings.postgres.dsn.get_secret_value(), autocommit=True) as conn:
        ensure_schema_and_add(conn, new)
    start = head(settings, CHAIN)
    report = post(max_batch_ops=4)
    assert report.problems == [] and report.ops_posted == len(new)
    w3, contract = evm_w3(settings, CHAIN), str(settings.chains[CHAIN].contract)
    query_logs = {"address": contract, "fromBlock": hex(start), "topics": [evm.OPERATION_POSTED_TOPIC]}
    logs = evm.rpc(w3, "eth_getLogs", [query_logs])
    by_topic = {str(log["topics"][1]): evm.posted_payload(log) for log in logs}
    assert len(onchain_payload("memo", memo32)) == 33 and len(by_topic[topic("payload-anchor")]) == 32
    for op in new:
        assert decode_onchain_payload(by_topic[topic(op.key)]) == (op.kind, op.payload), op.key


def ensure_schema_and_add(conn: Any, new: list[NewOp]) -> None:
    from tasks.l2.outbox import ensure_schema

    ensure_schema(conn)
    assert add_operations(conn, CHAIN, new)[0] == len(new)


def topic(key: str) -> str:
    return "0x" + evm.op_key(key).hex()


def call_post_batch(settings: Settings, sender: str, ops: bytes) -> dict[str, Any]:
    """eth_call of postBatch(outbox 7, batch 1, ops) from `sender`: the node's raw answer."""
    from eth_abi import encode

    contract = str(settings.chains[CHAIN].contract)
    data = evm.POST_BATCH + encode(["uint64", "uint64", "bytes"], [7, 1, ops])
    w3 = evm_w3(settings, CHAIN)
    answer: dict[str, Any] = w3.provider.make_request(
        "eth_call", [{"from": sender, "to": contract, "data": "0x" + data.hex()}, "latest"]
    )
    return answer


def revert_data(answer: dict[str, Any]) -> str:
    assert "error" in answer, answer
    return str(answer["error"].get("data") or "")


def test_malformed_packing_reverts_and_only_the_poster_posts(sandbox_env: dict[str, str]) -> None:
    from eth_abi import encode
    from eth_utils import keccak

    settings = load_settings()
    signer = str(settings.chains[CHAIN].signer_address)
    good = evm.pack_operations([1, 2], ["a", "b"], [b"x", b"yz"])
    ok = call_post_batch(settings, signer, good)
    assert int(ok["result"], 16) == 2, ok  # both would be posted
    assert int(call_post_batch(settings, signer, b"")["result"], 16) == 0
    malformed = "0x" + keccak(text="MalformedOperations(uint256)")[:4].hex()
    # the second operation's payload is cut short, then its header
    for cut, offset in ((len(good) - 1, 43), (50, 43), (41, 0)):
        data = revert_data(call_post_batch(settings, signer, good[:cut]))
        assert data == malformed + encode(["uint256"], [offset]).hex(), (cut, data)
    not_poster = "0x" + keccak(text="NotPoster()")[:4].hex()
    assert revert_data(call_post_batch(settings, "0x" + "22" * 20, good)) == not_poster
