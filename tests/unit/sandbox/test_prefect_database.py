"""The sandbox's Prefect server on PostgreSQL without starting anything: which database URL it is given,
when a running server counts as outdated (started on SQLite, or on a primary that moved), and that `up`
prepares (migrates) before it stops the old instance, so the restart is short."""

from __future__ import annotations

from pathlib import Path

import pytest

from scaleops.core.settings import Settings
from scaleops.sandbox import manager
from scaleops.sandbox.manager import Sandbox
from scaleops.sandbox.services import PrefectServer, SandboxError, Service


def prefect_of(tmp_path: Path) -> tuple[Sandbox, PrefectServer]:
    sandbox = Sandbox(Settings(), tmp_path / "sb")
    server = sandbox.service("prefect")
    assert isinstance(server, PrefectServer)
    return sandbox, server


def test_it_needs_postgres_first(tmp_path: Path) -> None:
    sandbox, server = prefect_of(tmp_path)
    assert "postgres" in server.requires
    names = [svc.name for svc in sandbox.select(["prefect"])]
    assert names.index("postgres") < names.index("prefect")


def test_its_database_is_its_own_on_the_primary(tmp_path: Path) -> None:
    sandbox, server = prefect_of(tmp_path)
    port = sandbox.port("postgres")
    url = server.database_url()
    assert url.startswith(f"postgresql+asyncpg://prefect:{sandbox.secret('prefect_db_password')}@")
    assert url.endswith(f"@127.0.0.1:{port}/prefect")
    assert sandbox.secret("prefect_db_password") != sandbox.secret("postgres_password")
    assert server.server_env()["PREFECT_API_DATABASE_CONNECTION_URL"] == url
    masked = server.database_url(masked=True)
    assert sandbox.secret("prefect_db_password") not in masked and "****" in masked
    # clients get the API URL only: the DB URL in their environment would move prefect_test_harness
    assert "PREFECT_API_DATABASE_CONNECTION_URL" not in server.env()


def test_outdated_until_started_on_this_database(tmp_path: Path) -> None:
    _, server = prefect_of(tmp_path)
    assert server.outdated()  # no marker: a server from before, on SQLite
    server.home.mkdir(parents=True)
    server.database_marker.write_text("sqlite+aiosqlite:///prefect.db\n")
    assert server.outdated()
    server.database_marker.write_text(server.database_url(masked=True) + "\n")
    assert not server.outdated()
    server.sb.state["ports"]["postgres"] += 1  # the primary moved to another port
    assert server.outdated()


class Recorder(Service):
    """A service that is running but outdated; records what `up` does to it."""

    name = "recorder"
    calls: list[str] = []
    fail_prepare = False

    def port_keys(self) -> list[str]:
        return []

    def running(self) -> bool:
        return "start" in self.calls or "stop" not in self.calls

    def pids(self) -> list[int]:
        return []

    def outdated(self) -> bool:
        return "start" not in self.calls

    def prepare(self) -> None:
        self.calls.append("prepare")
        if self.fail_prepare:
            raise RuntimeError("migration refused")

    def stop(self) -> None:
        self.calls.append("stop")

    def start(self) -> None:
        self.calls.append("start")

    def probe(self) -> bool:
        return True

    def url(self) -> str:
        return "recorder:"


@pytest.fixture
def recorder(monkeypatch: pytest.MonkeyPatch) -> type[Recorder]:
    monkeypatch.setattr(manager, "SERVICES", (Recorder,))
    Recorder.calls = []
    Recorder.fail_prepare = False
    return Recorder


def test_up_prepares_before_it_stops_an_outdated_service(tmp_path: Path, recorder: type[Recorder]) -> None:
    Sandbox(Settings(), tmp_path / "sb").up()
    assert recorder.calls == ["prepare", "stop", "start"]


def test_a_failed_preparation_leaves_the_old_instance_serving(
    tmp_path: Path, recorder: type[Recorder]
) -> None:
    recorder.fail_prepare = True
    with pytest.raises(SandboxError, match="recorder: preparing to start failed .migration refused."):
        Sandbox(Settings(), tmp_path / "sb").up()
    assert recorder.calls == ["prepare"]  # never stopped


def test_a_fresh_start_is_prepared_once(tmp_path: Path, recorder: type[Recorder]) -> None:
    recorder.calls = ["stop"]  # not running
    Sandbox(Settings(), tmp_path / "sb").up()
    assert recorder.calls == ["stop", "prepare", "start"]
