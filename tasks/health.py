"""The shape every health probe returns, shared by the per-system modules."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel


class Check(BaseModel):
    """One system probed: what, whether it is usable, and what we saw."""

    system: str
    target: str
    ok: bool
    detail: str
    seconds: float = 0.0
    facts: dict[str, Any] = {}


def timed_check(system: str, target: str, probe: Callable[[], tuple[bool, str, dict[str, Any]]]) -> Check:
    """Run `probe` and turn its verdict, or the exception it raised, into a Check."""
    started = time.perf_counter()
    try:
        ok, detail, facts = probe()
    except Exception as exc:  # a probe that raises is a failed check, named after the exception
        ok, detail, facts = False, f"{type(exc).__name__}: {exc}", {}
    return Check(
        system=system,
        target=target,
        ok=ok,
        detail=detail,
        seconds=round(time.perf_counter() - started, 4),
        facts=facts,
    )
