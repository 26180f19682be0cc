"""Shared fixtures. Unit tests need nothing; `sandbox_env` brings up the real services (idempotently)
and points settings and Prefect at them. With CI set, the sandbox is stopped when the session ends."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")


@pytest.fixture(scope="session")
def sandbox_env() -> Iterator[dict[str, str]]:
    """Every service of the sandbox in ROOT/.sandbox, up and healthy; yields its settings."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from scaleops.core.settings import Settings
    from scaleops.sandbox.manager import Sandbox

    sandbox = Sandbox(Settings(), ROOT / ".sandbox")
    sandbox.up()
    env = sandbox.env()
    saved = {key: os.environ.get(key) for key in env}
    os.environ.update(env)
    with temporary_settings(updates={PREFECT_API_URL: env["PREFECT_API_URL"]}):
        yield env
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    if os.environ.get("CI"):
        sandbox.down()
