"""The sandbox's arlocal launcher: an instance started from another launcher (before the SQLite tuning)
counts as outdated, so `sandbox up` restarts it; and the launcher itself, run on a fresh db in tmp_path,
still gets arlocal's schema (the tuning runs after start()), WAL and the added indexes."""

from __future__ import annotations

import shutil
import socket
import sqlite3
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from scaleops.core.settings import Settings
from scaleops.sandbox.arweave import ARLOCAL, LAUNCHER, Arlocal
from scaleops.sandbox.manager import Sandbox


def test_outdated_until_started_from_this_launcher(tmp_path: Path) -> None:
    svc = Sandbox(Settings(), tmp_path / "sb").service("arlocal")
    assert isinstance(svc, Arlocal)
    assert svc.outdated()  # no launcher written
    svc.home.mkdir(parents=True)
    (svc.home / "arlocal-miner.js").write_text(LAUNCHER.replace("await tune(node.connection);\n", ""))
    assert svc.outdated()
    (svc.home / "arlocal-miner.js").write_text(LAUNCHER)
    assert not svc.outdated()


@pytest.mark.skipif(shutil.which("node") is None or not ARLOCAL.exists(), reason="needs node + arlocal")
def test_the_launcher_keeps_arlocals_schema_and_tunes_sqlite(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    (tmp_path / "db").mkdir()
    (tmp_path / "launcher.js").write_text(LAUNCHER)
    env = {
        "ARLOCAL": str(ARLOCAL),
        "PORT": str(port),
        "MINE_EVERY_MS": "60000",
        "DB_PATH": str(tmp_path / "db"),
    }
    node = shutil.which("node")
    assert node
    proc = subprocess.Popen([node, str(tmp_path / "launcher.js")], env=env, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout
        deadline = time.monotonic() + 60
        while "mining every" not in proc.stdout.readline():  # printed once tuned
            assert proc.poll() is None and time.monotonic() < deadline, "the launcher did not start"
        url = f"http://127.0.0.1:{port}"
        assert httpx.get(f"{url}/mint/someaddress/1000", timeout=10).status_code == 200
        assert httpx.get(f"{url}/wallet/someaddress/balance", timeout=10).text == "1000"
        with sqlite3.connect(tmp_path / "db" / "db.sqlite") as db:
            assert db.execute("pragma journal_mode").fetchone()[0] == "wal"
            tables = {r[0] for r in db.execute("select name from sqlite_master where type = 'table'")}
            assert {"transactions", "blocks", "tags", "wallets", "chunks"} <= tables
            indexes = {r[0] for r in db.execute("select name from sqlite_master where type = 'index'")}
            assert {
                "scaleops_chunks_offset",
                "scaleops_chunks_root",
                "scaleops_transactions_block",
            } <= indexes
    finally:
        proc.terminate()
        proc.wait(timeout=30)
