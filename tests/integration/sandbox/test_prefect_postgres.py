"""The shared sandbox's Prefect server runs on PostgreSQL (a database `prefect` of its own on the primary),
so every e2e test runs against Prefect as production should run it: the server process was given the
asyncpg URL, and what the API writes is in that database's tables."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from scaleops.core.settings import Settings
from scaleops.sandbox.manager import Sandbox
from scaleops.sandbox.probes import http_json, http_request
from scaleops.sandbox.services import Postgres, PrefectServer

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[3]
URL_VARIABLE = b"PREFECT_API_DATABASE_CONNECTION_URL="


@pytest.fixture(scope="module")
def sandbox(sandbox_env: dict[str, str]) -> Sandbox:
    return Sandbox(Settings(), ROOT / ".sandbox")


def test_status_names_the_postgresql_database(sandbox: Sandbox) -> None:
    port = sandbox.service("postgres").port
    entry = sandbox.status(["prefect"])["prefect"]
    assert entry["healthy"]
    assert entry["database"] == f"postgresql+asyncpg://prefect:****@127.0.0.1:{port}/prefect"


def test_the_server_process_was_started_on_it(sandbox: Sandbox) -> None:
    server = sandbox.service("prefect")
    assert isinstance(server, PrefectServer)
    (pid,) = server.pids()
    environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    given = [entry.removeprefix(URL_VARIABLE) for entry in environ if entry.startswith(URL_VARIABLE)]
    assert given == [server.database_url().encode()]


def test_what_the_api_writes_is_in_postgresql(sandbox: Sandbox) -> None:
    server, postgres = sandbox.service("prefect"), sandbox.service("postgres")
    assert isinstance(postgres, Postgres)
    name = f"pg-probe-{uuid.uuid4().hex[:12]}"
    flow = http_json("POST", f"{server.url()}/api/flows/", {"name": name})
    try:
        with postgres.connect("prefect") as conn:
            rows = conn.execute("select id::text from flow where name = %s", (name,)).fetchall()
            owner = conn.execute(
                "select pg_get_userbyid(datdba) from pg_database where datname = 'prefect'"
            ).fetchone()
        assert rows == [(flow["id"],)]
        assert owner == ("prefect",)
    finally:
        http_request("DELETE", f"{server.url()}/api/flows/{flow['id']}", timeout=10)
