"""An in-memory resource for lifecycle tests: items live in a dict; marks, unmarks and actions change it."""

from __future__ import annotations

from collections.abc import Iterable
from typing import ClassVar

from tasks.cost.policy import Policy
from tasks.cost.resources import AGE, MARK_KEY, STATE, TAG, UNATTACHED, Changed, Item, Resource


class FakeVolumes(Resource):
    name = "aws.ebs-volume"
    provider = "aws"
    actions = ("delete",)
    filters: ClassVar[dict[str, str]] = {**AGE, **STATE, **TAG, **UNATTACHED}

    def __init__(self, items: Iterable[Item]):
        self.scope = "test-1"
        self.items = {i.id: i for i in items}
        self.calls: list[str] = []
        self.before_act: dict[str, str] = {}  # id -> "vanish" | "attach" | "changed" | "boom"

    def find(self) -> list[Item]:
        self.calls.append("find")
        return [
            Item(**{**vars(i), "labels": dict(i.labels), "annotations": i.labels})
            for i in self.items.values()
        ]

    def refresh(self, items: Iterable[Item]) -> dict[str, Item]:
        self.calls.append("refresh")
        for item in items:
            race = self.before_act.get(item.id)
            if race == "vanish":
                self.items.pop(item.id, None)
            elif race == "attach":
                self.items[item.id].attached = True
        return super().refresh(items)

    def mark(self, items: list[Item], value: str) -> set[str]:
        self.calls.append(f"mark {len(items)}")
        gone = {i.id for i in items if self.before_act.get(i.id) == "vanish-before-mark"}
        for item in items:
            if item.id in gone:
                self.items.pop(item.id, None)
            else:
                self.items[item.id].labels[MARK_KEY] = value
        return gone

    def unmark(self, items: list[Item]) -> set[str]:
        self.calls.append(f"unmark {len(items)}")
        for item in items:
            self.items[item.id].labels.pop(MARK_KEY, None)
        return set()

    def act(self, item: Item, policy: Policy) -> str:
        race = self.before_act.get(item.id)
        if race == "changed":
            raise Changed(f"VolumeInUse: {item.id}")
        if race == "boom":
            raise RuntimeError("throttled for good")
        del self.items[item.id]
        self.calls.append(f"act {item.id}")
        return "deleted"

    def snapshot(self) -> dict[str, tuple[bool | None, dict[str, str]]]:
        return {i.id: (i.attached, dict(i.labels)) for i in self.items.values()}
