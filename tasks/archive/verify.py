"""Verification: are the archived bytes still there, still the same, and signed by us?

Per bundle, one download: the bundle's bytes are parsed here and each of our items is checked on our
side (its data item signature, its id, the SHA-256 of its data against the ledger); the gateway's word
is not proof (arlocal serves items with bad signatures). Then each item is fetched by its own id, as a
reader would. Missing or different content is reported with its key.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field

from tasks.archive.ans104 import InvalidItem, unbundle
from tasks.archive.gateway import Gateway
from tasks.archive.ledger import Item


@dataclass
class Verdicts:
    verified: list[Item] = field(default_factory=list)
    corrupt: list[tuple[Item, str]] = field(default_factory=list)
    missing: list[tuple[Item, str]] = field(default_factory=list)


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
    for bundle_id, group in by_bundle.items():
        data = gateway.data(bundle_id) if bundle_id else None
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
