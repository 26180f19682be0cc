"""Fixtures shared by the L2 integration tests (the sandbox itself comes from tests/conftest.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.integration.l2.helpers import scratch_outbox


@pytest.fixture
def outbox_db(sandbox_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A scratch outbox database for one L2 test (settings point at it); dropped afterwards."""
    yield from scratch_outbox(sandbox_env, monkeypatch)
