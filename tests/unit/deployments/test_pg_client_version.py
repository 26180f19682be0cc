"""The backup duty checks `pg_dump --version` against the server before it dumps: an older pg_dump cannot
dump a newer server, and the image's client major is a build argument (PG_MAJOR) that can lag behind."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tasks.backup import dump
from tasks.backup.dump import DumpFailed, PgDumpTooOld, check_pg_dump_version, pg_major


@pytest.mark.parametrize(
    ("text", "major"),
    [
        ("pg_dump (PostgreSQL) 15.10 (Debian 15.10-0+deb12u1)", (15,)),
        ("pg_dump (PostgreSQL) 17.2", (17,)),
        ("pg_dump (PostgreSQL) 18beta1", (18,)),
        ("16.4 (Ubuntu 16.4-1.pgdg24.04+1)", (16,)),
        ("9.6.24", (9, 6)),
        ("pg_dump (PostgreSQL) 9.5.25", (9, 5)),
    ],
)
def test_pg_major(text: str, major: tuple[int, ...]) -> None:
    assert pg_major(text) == major


def test_not_a_version() -> None:
    with pytest.raises(ValueError, match="not a PostgreSQL version"):
        pg_major("pg_dump (PostgreSQL)")


@pytest.mark.parametrize(
    ("client", "server"),
    [
        ("pg_dump (PostgreSQL) 17.2", "17.0"),
        ("pg_dump (PostgreSQL) 17.0", "17.6 (Debian 17.6-1.pgdg120+1)"),  # minors do not matter
        ("pg_dump (PostgreSQL) 18.1", "15.10"),  # a newer pg_dump dumps older servers
        ("pg_dump (PostgreSQL) 10.1", "9.6.24"),
    ],
)
def test_same_or_newer_client_passes(client: str, server: str) -> None:
    check_pg_dump_version(client, server)


@pytest.mark.parametrize(
    ("client", "server", "wanted"),
    [
        ("pg_dump (PostgreSQL) 15.10 (Debian 15.10-0+deb12u1)", "17.2", "17"),
        ("pg_dump (PostgreSQL) 16.4", "17.0 (Debian 17.0-1.pgdg120+1)", "17"),
        ("pg_dump (PostgreSQL) 9.5.25", "9.6.24", "9.6"),
    ],
)
def test_older_client_names_both_versions(client: str, server: str, wanted: str) -> None:
    with pytest.raises(PgDumpTooOld) as caught:
        check_pg_dump_version(client, server, path="/usr/lib/postgresql/15/bin/pg_dump")
    message = str(caught.value)
    assert client in message and server in message and "/usr/lib/postgresql/15/bin/pg_dump" in message
    assert f"postgresql-client-{wanted}" in message and f"PG_MAJOR={wanted}" in message
    assert isinstance(caught.value, DumpFailed)  # take_backups reports it as that database's failure


def fake_pg_dump(tmp_path: Path, version: str) -> str:
    script = tmp_path / "pg_dump"
    script.write_text(
        f"#!/bin/sh\nif [ \"$1\" = --version ]; then echo 'pg_dump (PostgreSQL) {version}'; exit 0; fi\n"
        "echo 'must not be run to dump' >&2; exit 3\n"
    )
    script.chmod(0o755)
    return str(script)


def test_dump_stops_before_pg_dump_runs_or_anything_is_uploaded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    class Conn:
        def execute(self, query: str, *args: Any) -> Any:
            assert "server_version" in query, "nothing else is read before the version check"
            return self

        def fetchone(self) -> tuple[str]:
            return ("17.2 (Debian 17.2-1.pgdg120+1)",)

    @contextlib.contextmanager
    def snapshot(conninfo: str, dbname: str) -> Iterator[tuple[Any, str]]:
        yield Conn(), "00000003-00000002-1"

    class NoS3:
        def __getattr__(self, name: str) -> Any:
            raise AssertionError(f"S3 was called: {name}")

    path = fake_pg_dump(tmp_path, "15.10")
    monkeypatch.setattr(dump, "snapshot", snapshot)
    monkeypatch.setattr(dump, "pg_tool", lambda name: path)
    with pytest.raises(PgDumpTooOld, match=r"15\.10 .* cannot dump PostgreSQL 17\.2"):
        dump.dump_to_s3("host=db user=u", "app", NoS3(), "bucket", "app/x.dump", part_size=5 * 1024 * 1024)


def test_pg_dump_version_runs_the_binary(tmp_path: Path) -> None:
    assert dump.pg_dump_version(fake_pg_dump(tmp_path, "17.2")).strip() == "pg_dump (PostgreSQL) 17.2"


def test_the_installed_client_parses() -> None:
    try:
        path = dump.pg_tool("pg_dump")
    except FileNotFoundError:
        pytest.skip("no PostgreSQL client installed")
    assert pg_major(dump.pg_dump_version(path)) >= (15,)
