"""ANS-104 data items, bundles and the format-2 transaction, checked against independent verifiers:
arbundles and arweave-js (npm, installed with arlocal by `make setup`)."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tasks.archive.ans104 import (
    DataItem,
    Wallet,
    b64url,
    bundle_items,
    chunk_proofs,
    create_data_item,
    data_root,
    decode_tags,
    encode_tags,
    generate_jwk,
    sign_transaction,
    unbundle,
    verify_transaction,
    wallet_from_jwk,
)

ROOT = Path(__file__).resolve().parents[3]
VERIFIER = Path(__file__).with_name("verify_ans104.js")
HAVE_NODE = shutil.which("node") is not None and (ROOT / "node_modules" / "arbundles").is_dir()
needs_node = pytest.mark.skipif(not HAVE_NODE, reason="node and node_modules/arbundles (make setup)")

TAGS = [
    ("Content-Type", "application/json"),
    ("Content-SHA256", "ab" * 32),
    ("App-Name", "scaleops"),
    ("App-Version", "1"),
    ("Source-Key", "s3://bucket/nft/1.json"),
]


@pytest.fixture(scope="module")
def wallet() -> Wallet:
    return wallet_from_jwk(generate_jwk())


def node(request: dict[str, Any]) -> dict[str, Any]:
    done = subprocess.run(
        ["node", str(VERIFIER)],
        input=json.dumps(request),
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return dict(json.loads(done.stdout))


def test_tags_round_trip() -> None:
    assert decode_tags(encode_tags(TAGS)) == TAGS
    assert encode_tags([]) == b""
    with pytest.raises(ValueError):
        encode_tags([("", "x")])


def test_item_layout_and_own_verification(wallet: Wallet) -> None:
    item = create_data_item(wallet, b'{"name": "x"}', TAGS)
    assert item.id == b64url(hashlib.sha256(item.signature).digest())
    assert item.data == b'{"name": "x"}' and item.tags == TAGS
    assert item.verify()
    forged = DataItem(item.raw[:-1] + b"y")  # same signature, other bytes
    assert not forged.verify()


@needs_node
def test_arbundles_verifies_our_item(wallet: Wallet) -> None:
    data = bytes(range(256)) * 40
    item = create_data_item(wallet, data, TAGS)
    seen = node({"item": item.raw.hex()})
    assert seen["valid"] is True
    assert seen["id"] == item.id
    assert [(t["name"], t["value"]) for t in seen["tags"]] == TAGS
    assert seen["data"] == data.hex()


@needs_node
def test_arbundles_rejects_a_tampered_item(wallet: Wallet) -> None:
    item = create_data_item(wallet, b"original", TAGS)
    assert node({"item": (item.raw[:-8] + b"tampered").hex()})["valid"] is False


@needs_node
def test_arbundles_verifies_our_bundle(wallet: Wallet) -> None:
    items = [create_data_item(wallet, f"item {i}".encode() * (i + 1), TAGS) for i in range(3)]
    bundle = bundle_items(items)
    seen = node({"bundle": bundle.hex()})
    assert seen["valid"] is True
    assert seen["ids"] == [i.id for i in items]
    assert [(i, item.id) for i, item in unbundle(bundle)] == [(i.id, i.id) for i in items]


@needs_node
@pytest.mark.parametrize("size", [1, 1000, 256 * 1024, 256 * 1024 + 100, 600_000])
def test_transaction_matches_arweave_js(wallet: Wallet, size: int) -> None:
    data = hashlib.sha256(str(size).encode()).digest() * (size // 32) + b"x" * (size % 32)
    tx = sign_transaction(wallet, data, reward=12345, last_tx=b64url(b"\x01" * 48))
    assert verify_transaction(tx, data)
    seen = node({"tx": tx, "data": data.hex()})
    assert seen["valid"] is True
    assert seen["data_root"] == tx["data_root"] == b64url(data_root(data))


def test_a_changed_transaction_does_not_verify(wallet: Wallet) -> None:
    tx = sign_transaction(wallet, b"bundle", reward=10, last_tx=b64url(b"\x02" * 48))
    assert not verify_transaction({**tx, "reward": "11"}, b"bundle")
    assert not verify_transaction(tx, b"bundlf")


@needs_node
@pytest.mark.parametrize("size", [1, 256 * 1024, 256 * 1024 + 1, 256 * 1024 + 40_000, 1_300_000, 2_700_001])
def test_chunks_and_proofs_match_arweave_js(wallet: Wallet, size: int) -> None:
    """Our chunking and Merkle proofs (what `POST /chunk` sends) byte for byte against arweave-js's
    `prepareChunks` + `getChunk`, and each of our proofs accepted by its `validatePath`."""
    data = hashlib.sha256(str(size).encode()).digest() * (size // 32) + b"x" * (size % 32)
    ours = chunk_proofs(data)
    mine = [
        {
            "data_root": b64url(data_root(data)),
            "data_size": str(len(data)),
            "data_path": b64url(c.data_path),
            "offset": str(c.offset),
            "chunk": b64url(data[c.start : c.end]),
        }
        for c in ours
    ]
    said = node({"chunks": {"data": data.hex(), "owner": b64url(wallet.owner), "ours": mine}})
    assert said["chunks"] == mine
    assert [v[3] if v else None for v in said["valid"]] == [c.end - c.start for c in ours]
    assert ours[0].start == 0 and ours[-1].end == len(data)


def test_a_proof_of_another_chunk_does_not_validate() -> None:
    data = bytes(range(256)) * 4096  # 1 MiB: four chunks
    chunks = chunk_proofs(data)
    assert len(chunks) == 4 and len({c.data_path for c in chunks}) == 4
    # each proof ends with its leaf: the chunk's hash and its end offset
    for c in chunks:
        assert c.data_path[-64:-32] == hashlib.sha256(data[c.start : c.end]).digest()
        assert int.from_bytes(c.data_path[-32:], "big") == c.end
