"""Tags given by hand (`scaleops archive add --tag k=v`): ANS-104's limits checked before anything is
queued, our own tag names refused, and the tags signed into the data item after ours."""

from __future__ import annotations

import pytest

from tasks.archive.ans104 import (
    MAX_TAG_BYTES,
    Wallet,
    create_data_item,
    encode_tags,
    generate_jwk,
    wallet_from_jwk,
)
from tasks.archive.archiver import RESERVED_TAGS, check_user_tags, item_tags, parse_tag
from tasks.archive.ledger import Item

from .test_ans104 import needs_node, node

KEY, KIND, APP = "/data/nft/1.json", "application/json", "scaleops"


def check(tags: list[tuple[str, str]], key: str = KEY) -> None:
    check_user_tags(tags, key, KIND, APP)


def test_parse_name_equals_value() -> None:
    assert parse_tag("Collection=apes") == ("Collection", "apes")
    assert parse_tag("Query=a=b") == ("Query", "a=b")  # the first '=' splits
    with pytest.raises(ValueError, match="not name=value"):
        parse_tag("no-equals-sign")


def test_limits_of_ans104() -> None:
    check([("Collection", "apes"), ("n" * 1024, "v" * 1000)])  # at the name limit, inside 4096 bytes
    with pytest.raises(ValueError, match="names 1-1024 bytes"):
        check([("n" * 1025, "v")])
    with pytest.raises(ValueError, match="values 1-3072 bytes"):
        check([("Empty", "")])
    with pytest.raises(ValueError, match="names 1-1024 bytes"):
        check([("", "v")])
    with pytest.raises(ValueError, match="values 1-3072 bytes"):
        check([("Big", "v" * 3073)])
    with pytest.raises(ValueError, match=f"at most {MAX_TAG_BYTES}"):
        check([("Big", "v" * 3000), ("Bigger", "w" * 1000)])  # each within its limit, too many together
    with pytest.raises(ValueError, match="at most 123 tags"):
        check([(f"t{i}", "v") for i in range(124)])
    check([(f"t{i}", "v") for i in range(123)])  # 123 + our 5 = 128


def test_a_long_source_key_leaves_less_room() -> None:
    check([("Note", "x" * 2500)], key="k")
    with pytest.raises(ValueError, match=f"at most {MAX_TAG_BYTES}"):
        check([("Note", "x" * 2500)], key="k" * 2048)


@pytest.mark.parametrize("name", [*RESERVED_TAGS, "content-sha256", "APP-NAME"])
def test_our_own_tag_names_are_refused(name: str) -> None:
    with pytest.raises(ValueError, match="set by scaleops itself"):
        check([(name, "forged")])


def test_a_long_source_key_is_cut_so_our_tags_fit() -> None:
    item = Item("ab" * 32, 1, KIND, "k" * 5000, ["k" * 5000], "queued")
    tags = item_tags(item, APP)
    assert len(dict(tags)["Source-Key"]) == 2048
    assert len(encode_tags(tags)) <= MAX_TAG_BYTES


@needs_node
def test_user_tags_are_signed_after_ours_and_arbundles_agrees() -> None:
    wallet: Wallet = wallet_from_jwk(generate_jwk())
    item = Item("ab" * 32, 4, KIND, KEY, [KEY], "queued", tags=[("Collection", "apes"), ("Émoji", "✓")])
    data_item = create_data_item(wallet, b"data", item_tags(item, APP))
    said = node({"item": data_item.raw.hex()})
    assert said["valid"] is True
    assert [(t["name"], t["value"]) for t in said["tags"]][-2:] == [("Collection", "apes"), ("Émoji", "✓")]
    assert [t["name"] for t in said["tags"]][:5] == list(RESERVED_TAGS)
