"""L2 posting pieces that need no service: outbox input parsing, call-data sizing, chain settings,
and the compiled contract artifacts matching a fresh compile with the pinned solc."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scaleops.core.settings import ConfigError, load_settings
from tasks.l2 import evm
from tasks.l2.evm_poster import EvmPoster
from tasks.l2.outbox import (
    Op,
    OutboxInputError,
    canonical_json,
    decode_onchain_payload,
    onchain_payload,
    parse_jsonl,
    validate_op,
)
from tasks.l2.poster import PostingError, PostOptions

ROOT = Path(__file__).resolve().parents[3]
KEY = "0x" + "ab" * 32


def test_parse_jsonl_reads_ops_and_names_the_bad_line() -> None:
    ops = list(
        parse_jsonl(
            [
                '{"key": "a", "kind": "anchor", "payload": {"d": 1}}',
                "",
                '{"key":"b","kind":"memo","payload":"x"}',
            ]
        )
    )
    assert [(o.key, o.kind) for o in ops] == [("a", "anchor"), ("b", "memo")]
    with pytest.raises(OutboxInputError, match="line 2: not JSON"):
        list(parse_jsonl(['{"key": "a", "kind": "anchor", "payload": 1}', "{nope"]))
    with pytest.raises(OutboxInputError, match="line 1: kind"):
        list(parse_jsonl(['{"key": "a", "kind": "Bad Kind", "payload": 1}']))
    with pytest.raises(OutboxInputError, match="line 1: payload"):
        list(parse_jsonl(['{"key": "a", "kind": "anchor"}']))
    with pytest.raises(OutboxInputError, match="key: longer"):
        validate_op("k" * 300, "anchor", 1)


def test_payload_bytes_are_canonical() -> None:
    a = Op(1, "k", "anchor", {"b": 1, "a": [1, 2]})
    b = Op(2, "k", "anchor", {"a": [1, 2], "b": 1})
    assert (
        a.payload_bytes() == b.payload_bytes() == canonical_json({"k": "anchor", "p": {"a": [1, 2], "b": 1}})
    )


def test_an_anchor_of_a_sha256_goes_on_chain_as_its_32_raw_bytes() -> None:
    digest = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
    assert onchain_payload("anchor", {"sha256": digest}) == bytes.fromhex(digest)
    assert decode_onchain_payload(bytes.fromhex(digest)) == ("anchor", {"sha256": digest})
    # anything that would not come back the same stays JSON: upper case, 0x, other kinds, more fields
    for kind, payload in [
        ("anchor", {"sha256": digest.upper()}),
        ("anchor", {"sha256": "0x" + digest}),
        ("memo", {"sha256": digest}),
        ("anchor", {"sha256": digest, "uri": "ar://x"}),
    ]:
        data = onchain_payload(kind, payload)
        assert data == canonical_json({"k": kind, "p": payload})
        assert decode_onchain_payload(data) == (kind, payload)


def test_json_of_exactly_32_bytes_gets_a_trailing_space() -> None:
    payload = "x" * (32 - len(canonical_json({"k": "memo", "p": ""})))
    assert len(canonical_json({"k": "memo", "p": payload})) == 32
    data = onchain_payload("memo", payload)
    assert data == canonical_json({"k": "memo", "p": payload}) + b" "
    assert decode_onchain_payload(data) == ("memo", payload)
    with pytest.raises(ValueError, match="JSON"):
        decode_onchain_payload(b'{"kind": 1}')


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63) | st.text(max_size=40),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=8,
)


DIGESTS = st.text() | st.binary(min_size=32, max_size=32).map(bytes.hex)
PAYLOADS = JSON_VALUES | st.fixed_dictionaries({"sha256": DIGESTS})


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(["anchor", "memo", "payout"]), PAYLOADS)
def test_onchain_payload_round_trips(kind: str, payload: object) -> None:
    assert decode_onchain_payload(onchain_payload(kind, payload)) == (kind, payload)


@settings(max_examples=50, deadline=None)
@given(st.lists(st.binary(max_size=200), max_size=20))
def test_calldata_size_is_the_encoded_size(payloads: list[bytes]) -> None:
    keys = [f"key-{i}" for i in range(len(payloads))]
    encoded = evm.post_batch_calldata(2**60 - 1, 7, list(range(250, 250 + len(payloads))), keys, payloads)
    assert evm.calldata_size([len(p) for p in payloads]) == len(encoded)
    assert encoded[:4] == evm.POST_BATCH


def test_post_batch_calldata_packs_namespace_ids_op_keys_and_payloads() -> None:
    from eth_abi import decode

    encoded = evm.post_batch_calldata(5, 9, [255, 2**64 - 1], ["a", "b"], [b"x", b"yz" * 200])
    outbox, batch, ops = decode(["uint64", "uint64", "bytes"], encoded[4:])
    assert (outbox, batch) == (5, 9)
    assert len(ops) == 2 * evm.OP_HEADER_BYTES + 1 + 400
    assert ops[:8] == (255).to_bytes(8, "big") and ops[8:40] == evm.op_key("a") and ops[40:42] == b"\x00\x01"
    assert evm.unpack_operations(ops) == [
        (255, evm.op_key("a"), b"x"),
        (2**64 - 1, evm.op_key("b"), b"yz" * 200),
    ]
    with pytest.raises(ValueError, match="differ in length"):
        evm.post_batch_calldata(5, 9, [1], ["a", "b"], [b"x", b"y"])
    with pytest.raises(ValueError, match="over 65535 bytes"):
        evm.post_batch_calldata(5, 9, [1], ["a"], [b"x" * 65536])
    with pytest.raises(ValueError, match="inside the payload at byte 0"):
        evm.unpack_operations(ops[:-1][: evm.OP_HEADER_BYTES])
    with pytest.raises(ValueError, match="inside the header at byte 43"):
        evm.unpack_operations(ops[:50])


class FakeLogsNode:
    """A provider answering eth_blockNumber and eth_getLogs from `logs` ({block: opKey topic}), recording
    each eth_getLogs window and topic list."""

    def __init__(self, head: int, logs: dict[int, str]):
        self.head = head
        self.logs = logs
        self.queries: list[tuple[int, int, int]] = []  # (from, to, how many opKeys OR-listed)
        self.provider = self

    def make_request(self, method: str, params: list[Any]) -> dict[str, Any]:
        if method == "eth_blockNumber":
            return {"result": hex(self.head)}
        assert method == "eth_getLogs"
        query = params[0]
        low, high = int(query["fromBlock"], 16), int(query["toBlock"], 16)
        assert query["topics"][0] == evm.OPERATION_POSTED_TOPIC
        keys = query["topics"][1]
        self.queries.append((low, high, len(keys)))
        hits = [(b, t) for b, t in sorted(self.logs.items()) if low <= b <= high and t in keys]
        return {
            "result": [{"blockNumber": hex(b), "topics": [evm.OPERATION_POSTED_TOPIC, t]} for b, t in hits]
        }


def topic_of(i: int) -> str:
    return "0x" + f"{i:064x}"


def test_posted_op_keys_searches_windows_from_the_deployment_block() -> None:
    node = FakeLogsNode(head=1_000, logs={5: topic_of(1), 120: topic_of(2), 999: topic_of(3)})
    found = evm.posted_op_keys(
        node, "0xc0", [topic_of(i) for i in (1, 2, 3, 4)], from_block=100, block_range=300
    )
    assert found == {topic_of(2), topic_of(3)}  # block 5 is before the deployment block
    assert [(q[0], q[1]) for q in node.queries] == [(100, 399), (400, 699), (700, 999), (1_000, 1_000)]
    # one window up to the head when no range is set; nothing asked for nothing
    whole = FakeLogsNode(head=1_000, logs={5: topic_of(1)})
    assert evm.posted_op_keys(whole, "0xc0", [topic_of(1)]) == {topic_of(1)}
    assert whole.queries == [(0, 1_000, 1)]
    assert evm.posted_op_keys(whole, "0xc0", []) == set() and len(whole.queries) == 1


def test_posted_op_keys_or_lists_topics_in_chunks_and_stops_once_all_are_found() -> None:
    wanted = [topic_of(i) for i in range(250)]
    node = FakeLogsNode(head=10_000, logs={10 + i: t for i, t in enumerate(wanted)})
    assert evm.posted_op_keys(node, "0xc0", wanted, block_range=1_000) == set(wanted)
    # 250 opKeys: 3 queries (100 + 100 + 50) in the first window, which holds them all: no second window
    assert node.queries == [(0, 999, 100), (0, 999, 100), (0, 999, 50)]


def test_chain_settings_from_env_and_key_is_a_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SCALEOPS_CHAINS__OPTIMISM__RPC_URL", "http://127.0.0.1:8545")
    monkeypatch.setenv("SCALEOPS_CHAINS__OPTIMISM__CHAIN_ID", "10")
    monkeypatch.setenv("SCALEOPS_CHAINS__OPTIMISM__KIND", "op")
    monkeypatch.setenv("SCALEOPS_CHAINS__OPTIMISM__SIGNER_KEY", KEY)
    loaded = load_settings()
    assert loaded.chains["optimism"].kind == "op"
    assert KEY in loaded.secrets()
    assert KEY not in json.dumps(loaded.masked())
    monkeypatch.setenv("SCALEOPS_CHAINS__OPTIMISM__KIND", "bitcoin")
    monkeypatch.setenv("SCALEOPS_CHAINS__OPTIMISM__MAX_BATCH_OPS", "0")
    with pytest.raises(ConfigError) as caught:
        load_settings()
    names = {name for name, _ in caught.value.problems}
    assert names == {"SCALEOPS_CHAINS__OPTIMISM__KIND", "SCALEOPS_CHAINS__OPTIMISM__MAX_BATCH_OPS"}
    assert KEY not in str(caught.value)


def test_poster_names_missing_settings_without_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SCALEOPS_CHAINS__BASE__RPC_URL", "http://127.0.0.1:8545")
    monkeypatch.setenv("SCALEOPS_CHAINS__BASE__CHAIN_ID", "8453")
    monkeypatch.setenv("SCALEOPS_CHAINS__BASE__SIGNER_KEY", KEY)
    cfg = load_settings().chains["base"]
    with pytest.raises(PostingError) as caught:
        EvmPoster(None, None, "base", cfg, PostOptions())
    assert "SCALEOPS_CHAINS__BASE__CONTRACT" in str(caught.value)
    assert "SCALEOPS_CHAINS__BASE__SIGNER_ADDRESS" in str(caught.value)
    assert KEY not in str(caught.value)


def test_signing_failure_hides_the_key() -> None:
    with pytest.raises(evm.RpcFailure) as caught:
        evm.sign({"type": 2, "chainId": 10}, KEY)
    assert KEY not in str(caught.value) and caught.value.__cause__ is None


def test_committed_artifacts_match_a_fresh_compile(tmp_path: Path) -> None:
    node = shutil.which("node")
    assert node, "node is needed to compile the contracts"
    subprocess.run(
        [node, str(ROOT / "contracts" / "compile.js"), "--out", str(tmp_path)], check=True, timeout=120
    )
    committed = sorted(p.name for p in (ROOT / "contracts" / "artifacts").glob("*.json"))
    assert committed == sorted(p.name for p in tmp_path.glob("*.json"))
    for name in committed:
        fresh = json.loads((tmp_path / name).read_text())
        assert fresh == json.loads((ROOT / "contracts" / "artifacts" / name).read_text()), name
        assert fresh["compiler"].startswith("solc 0.8.28")
    abi = json.loads((tmp_path / "OperationLog.json").read_text())["abi"]
    event = next(e for e in abi if e.get("name") == "OperationPosted")
    assert [(i["type"], i["indexed"]) for i in event["inputs"]] == [
        ("bytes32", True),
        ("uint64", True),
        ("bytes", False),
    ]
    functions = {e["name"]: [i["type"] for i in e["inputs"]] for e in abi if e.get("type") == "function"}
    assert functions["postBatch"] == ["uint64", "uint64", "bytes"]
    assert functions["isPosted"] == ["uint64", "uint64"]
