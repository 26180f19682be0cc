"""CIDs as the two IPFS implementations print them (values recorded from js-ipfs 0.18: the same CIDv1
in base58btc by default and in base32 with cid-base=base32, as Kubo prints it)."""

from __future__ import annotations

import pytest

from tasks.archive.ipfs import CHUNK_SIZE, cid_bytes, raw_cid, same_cid

HELLO = b"hello archive\n"
BASE32 = "bafkreihkarr5ck6dmwatnhqbbi2unq3mfmwhbz43o6z2z4k73wobhtz37m"
BASE58 = "zb2rhnPnUcqNSTYEFM7HnS6p2yz4hyKrMFsKdRiJLTqYZpYgJ"


def test_raw_cid_matches_the_node() -> None:
    assert raw_cid(HELLO) == BASE32


def test_the_same_cid_in_two_bases() -> None:
    assert cid_bytes(BASE32) == cid_bytes(BASE58)
    assert same_cid(BASE32, BASE58)
    assert not same_cid(BASE32, raw_cid(b"other") or "")


def test_content_larger_than_a_chunk_needs_the_node() -> None:
    assert raw_cid(b"x" * (CHUNK_SIZE + 1)) is None
    assert raw_cid(b"") is None


def test_unknown_encoding() -> None:
    with pytest.raises(ValueError):
        cid_bytes("mAXASI...")
