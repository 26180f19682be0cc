"""Scratch databases on the sandbox's PostgreSQL for tests and benchmarks: one per test or contender,
created fresh and dropped after (forcing other sessions off)."""

from __future__ import annotations

import uuid

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo


def scratch_database(base_dsn: str, prefix: str = "scratch") -> tuple[str, str]:
    """Create `<prefix>_<random>` on the server `base_dsn` points at; return (its name, its DSN)."""
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(base_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("create database {}").format(sql.Identifier(name)))
    params = conninfo_to_dict(base_dsn)
    params["dbname"] = name
    return name, make_conninfo(**params)  # type: ignore[arg-type]


def drop_scratch_database(base_dsn: str, name: str) -> None:
    with psycopg.connect(base_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("drop database if exists {} with (force)").format(sql.Identifier(name)))
