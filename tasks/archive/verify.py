"""Verification: are the archived bytes still there, still the same, and signed by us?

Per bundle, one download: the bundle's bytes are parsed here and each of our items is checked on our
side (its data item signature, its id, the SHA-256 of its data against the ledger); the gateway's word
is not proof (arlocal serves items with bad signatures). Then each item is fetched by its own id, as a
reader would. Missing or different content is reported with its key.

By tag: an item the ledger holds no bundle for (found on the gateway by its `Content-SHA256` tag, see
`find_archived`) is looked up through GraphQL, rebuilt from what GraphQL says (signature, owner key,
anchor, tags in order) and the bytes served for its id, and its signature checked on our side.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from tasks.archive.ans104 import DataItem, InvalidItem, assemble_item, b64url_decode, unbundle
from tasks.archive.gateway import Gateway
from tasks.archive.ledger import Item


@dataclass
class Verdicts:
    verified: list[Item] = field(default_factory=list)
    corrupt: list[tuple[Item, str]] = field(default_factory=list)
    missing: list[tuple[Item, str]] = field(default_factory=list)


TAG = "Content-SHA256"


@dataclass(frozen=True)
class Found:
    """A data item of ours the gateway already holds for some content."""

    sha256: str
    item_id: str
    bundle_id: str | None
    block_height: int | None


def rebuild_item(node: dict[str, Any], data: bytes) -> DataItem:
    """The data item a GraphQL node describes, with the bytes served for its id (InvalidItem if the
    node lacks what a data item needs)."""
    try:
        return assemble_item(
            b64url_decode(node["signature"]),
            b64url_decode(node["owner"]["key"]),
            b64url_decode(node.get("recipient") or ""),
            b64url_decode(node.get("anchor") or ""),
            [(t["name"], t["value"]) for t in node["tags"]],
            data,
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise InvalidItem(f"GraphQL node {node.get('id')}: {exc}") from None


def check_node(gateway: Gateway, node: dict[str, Any], sha256: str) -> str | None:
    """Why the item a GraphQL node describes is not `sha256`'s bytes signed by its owner, or None."""
    data = gateway.data(node["id"])
    if data is None:
        return f"the gateway serves nothing for item {node['id']}"
    if hashlib.sha256(data).hexdigest() != sha256:
        return f"the gateway serves other bytes for item {node['id']}"
    try:
        item = rebuild_item(node, data)
    except InvalidItem as exc:
        return str(exc)
    if item.id != node["id"]:
        return f"item {node['id']}: its id is not the hash of its signature"
    if not item.verify():
        return f"item {node['id']}: data item signature does not verify"
    return None


def find_archived(gateway: Gateway, items: Sequence[Item], owner: str) -> dict[str, Found]:
    """Queued items that are already on the gateway, signed by `owner` (our wallet): found by their
    `Content-SHA256` tag through GraphQL and checked on our side (served bytes, signature, id). This is
    what keeps a ledger that lost a record (restored from before a post, a crash between posting and
    recording elsewhere) from paying for the same bytes twice."""
    wanted = {i.sha256 for i in items}
    if not wanted:
        return {}
    found: dict[str, Found] = {}
    for node in gateway.find_by_tag(TAG, sorted(wanted), owner):
        tags = {t["name"]: t["value"] for t in node.get("tags") or []}
        sha = tags.get(TAG, "")
        if sha not in wanted or (node.get("owner") or {}).get("address") != owner:
            continue
        best = found.get(sha)
        block = (node.get("block") or {}).get("height")
        if best is not None and (best.block_height is not None or block is None):
            continue  # keep a mined one
        if check_node(gateway, node, sha) is None:
            found[sha] = Found(sha, node["id"], (node.get("bundledIn") or {}).get("id"), block)
    return found


def check_bundle(data: bytes, members: Sequence[Item], verdicts: Verdicts) -> list[Item]:
    """Check our items inside a bundle's bytes; return the ones that pass."""
    try:
        found = {item_id: item for item_id, item in unbundle(data)}
    except InvalidItem as exc:
        verdicts.corrupt += [(m, f"bundle unreadable: {exc}") for m in members]
        return []
    passed = []
    for member in members:
        item = found.get(member.item_id or "")
        if item is None:
            verdicts.missing.append((member, f"not in bundle {member.bundle_id}"))
        elif item.id != member.item_id:
            verdicts.corrupt.append((member, "the bundle header's id is not the item's signature hash"))
        elif not item.verify():
            verdicts.corrupt.append((member, "data item signature does not verify"))
        elif hashlib.sha256(item.data).hexdigest() != member.sha256:
            verdicts.corrupt.append((member, "SHA-256 of the data differs from the ledger"))
        else:
            passed.append(member)
    return passed


def verify_items(gateway: Gateway, members: Sequence[Item]) -> Verdicts:
    """Download each bundle once and check every item of ours in it, then fetch each item by id."""
    verdicts = Verdicts()
    by_bundle: dict[str, list[Item]] = defaultdict(list)
    for m in members:
        by_bundle[m.bundle_id or ""].append(m)
    if by_bundle.get(""):
        verify_by_tag(gateway, by_bundle.pop(""), verdicts)
    for bundle_id, group in by_bundle.items():
        data = gateway.data(bundle_id)
        if data is None:
            verdicts.missing += [(m, f"the gateway serves nothing for bundle {bundle_id}") for m in group]
            continue
        for member in check_bundle(data, group, verdicts):
            served = gateway.data(member.item_id or "")
            if served is None:
                verdicts.missing.append((member, f"the gateway serves nothing for item {member.item_id}"))
            elif hashlib.sha256(served).hexdigest() != member.sha256:
                verdicts.corrupt.append((member, "the gateway serves other bytes for the item id"))
            else:
                verdicts.verified.append(member)
    return verdicts


def verify_by_tag(gateway: Gateway, members: Sequence[Item], verdicts: Verdicts) -> None:
    """Items the ledger knows no bundle of: find each by its Content-SHA256 tag through GraphQL and
    check the item with the ledger's id on our side."""
    nodes = gateway.find_by_tag(TAG, sorted({m.sha256 for m in members}))
    by_id = {n["id"]: n for n in nodes}
    for member in members:
        node = by_id.get(member.item_id or "")
        if node is None:
            verdicts.missing.append((member, f"GraphQL finds no item {member.item_id} by its {TAG} tag"))
            continue
        why = check_node(gateway, node, member.sha256)
        if why is None:
            verdicts.verified.append(member)
        elif why.startswith("the gateway serves nothing"):
            verdicts.missing.append((member, why))
        else:
            verdicts.corrupt.append((member, why))
