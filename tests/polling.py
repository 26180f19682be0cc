"""Waiting in tests: poll for the condition with a deadline instead of sleeping a fixed time.

A fixed sleep is too long on a quiet machine and too short on a loaded one; polling returns as soon as
the condition holds and fails, saying what it waited for, only once the deadline has passed.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_until(predicate: Callable[[], T], timeout: float, interval: float = 0.05, what: str = "") -> T:
    """The first truthy value `predicate()` returns, polling every `interval` s; AssertionError after
    `timeout` s (the predicate is always asked once more at the deadline)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what or predicate!r}")
        time.sleep(min(interval, max(0.0, deadline - time.monotonic())))


def holds_for(
    predicate: Callable[[], object], duration: float, interval: float = 0.5, what: str = ""
) -> None:
    """Assert `predicate()` stays truthy for `duration` s, asked every `interval` s and once at the end:
    for "nothing else happens" checks, which fail at the first falsy answer instead of after the wait."""
    deadline = time.monotonic() + duration
    while True:
        if not predicate():
            raise AssertionError(f"no longer true: {what or predicate!r}")
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return
        time.sleep(min(interval, remaining))
