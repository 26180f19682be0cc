"""A scratch database for the alert bridge's store (dedupe claims, alert windows)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from scaleops.sandbox.scratch import drop_scratch_database, scratch_database


@pytest.fixture
def store_dsn(sandbox_env: dict[str, str]) -> Iterator[str]:
    """A scratch database on the sandbox's primary (the bridge migrates it on start); dropped after."""
    base = sandbox_env["SCALEOPS_POSTGRES__DSN"]
    name, dsn = scratch_database(base, prefix="bridgetest")
    yield dsn
    drop_scratch_database(base, name)
