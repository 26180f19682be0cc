"""The registry of duties: the name people type (`scaleops run NAME`, deployment names) -> its flow."""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Duty:
    name: str  # CLI and deployment name
    flow: str  # "module:attribute"
    events: str  # event namespace: scaleops.<events>.<outcome>
    summary: str

    def load(self) -> Any:
        module, _, attribute = self.flow.partition(":")
        return getattr(importlib.import_module(module), attribute)


DUTIES: dict[str, Duty] = {
    d.name: d
    for d in (
        Duty(
            "preflight",
            "flows.preflight:preflight",
            "preflight",
            "check that every configured system answers (PostgreSQL primary and replica, Redis, "
            "Redis Cluster, both S3 regions)",
        ),
    )
}


def get_duty(name: str) -> Duty:
    try:
        return DUTIES[name]
    except KeyError:
        raise KeyError(f"unknown duty {name!r}; known duties: {', '.join(sorted(DUTIES))}") from None
