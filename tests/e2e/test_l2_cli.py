"""`scaleops db migrate`, `scaleops outbox add|status` and `scaleops run l2-batch-posting` through the real
CLI against the sandbox (Prefect server, PostgreSQL, anvil): exit codes, the report, the artifact and the
event, and the signer key appearing in none of them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from scaleops.core.reporting import artifact_key
from tests.integration.l2.helpers import drop_database, fresh_database

pytestmark = pytest.mark.e2e


@pytest.fixture
def cli_env(sandbox_env: dict[str, str]) -> Iterator[dict[str, str]]:
    base = sandbox_env["SCALEOPS_POSTGRES__DSN"]
    name, dsn = fresh_database(base)
    yield {**os.environ, **sandbox_env, "SCALEOPS_POSTGRES__DSN": dsn}
    drop_database(base, name)


def cli(env: dict[str, str], *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "scaleops.cli", *args],
        env=env,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )


def events_since(api: str, name: str, started_at: str, timeout: float = 30) -> list[dict[str, Any]]:
    body = {"filter": {"event": {"name": [name]}, "occurred": {"since": "2020-01-01T00:00:00Z"}}}
    deadline = time.monotonic() + timeout
    while True:
        found = [
            e
            for e in httpx.post(f"{api}/events/filter", json=body, timeout=10).json()["events"]
            if e["payload"].get("started_at") == started_at
        ]
        if found or time.monotonic() > deadline:
            return found
        time.sleep(0.5)


def secrets_of(env: dict[str, str]) -> list[str]:
    keys = [env[f"SCALEOPS_CHAINS__{c}__SIGNER_KEY"] for c in ("OPTIMISM", "ARBITRUM", "ZKSYNC", "SOLANA")]
    return keys + [k.removeprefix("0x") for k in keys]


def test_outbox_and_duty_end_to_end(cli_env: dict[str, str], tmp_path: Path) -> None:
    migrate = cli(cli_env, "db", "migrate")
    assert migrate.returncode == 0 and "migration(s) applied" in migrate.stderr
    again = cli(cli_env, "db", "migrate")
    assert again.returncode == 0 and "up to date" in again.stderr

    prefix = uuid.uuid4().hex[:8]
    one = ["outbox", "add", "--chain", "optimism", "--kind", "anchor", "--key", f"{prefix}-x", "--json"]
    first = cli(cli_env, *one, "--payload", '{"digest": "ab"}')
    assert json.loads(first.stdout) == {"chain": "optimism", "added": 1, "already_queued": 0}
    repeat = cli(cli_env, *one, "--payload", '{"digest": "ab"}')
    assert repeat.returncode == 0 and json.loads(repeat.stdout)["already_queued"] == 1
    anchor = ["--kind", "anchor", "--key", f"{prefix}-z", "--payload", json.dumps({"sha256": "cd" * 32})]
    zk = cli(cli_env, "outbox", "add", "--chain", "zksync", *anchor, "--json")
    assert json.loads(zk.stdout)["added"] == 1, zk.stderr
    lines = [json.dumps({"key": f"{prefix}-{i}", "kind": "anchor", "payload": {"i": i}}) for i in range(7)]
    ops = tmp_path / "ops.jsonl"
    ops.write_text("\n".join(lines) + "\n")
    added = cli(cli_env, "outbox", "add", "--chain", "arbitrum", "--from-file", str(ops), "--json")
    assert json.loads(added.stdout)["added"] == 7
    memos = "\n".join(
        json.dumps({"key": f"{prefix}-s{i}", "kind": "memo", "payload": {"i": i}}) for i in range(3)
    )
    solana = cli(cli_env, "outbox", "add", "--chain", "solana", "--from-file", "-", "--json", stdin=memos)
    assert json.loads(solana.stdout)["added"] == 3, solana.stderr
    status = json.loads(cli(cli_env, "outbox", "status", "--json").stdout)
    assert status["arbitrum"]["counts"]["pending"] == 7 and status["optimism"]["counts"]["pending"] == 1
    assert status["arbitrum"]["oldest_pending_age_seconds"] >= 0

    run = cli(cli_env, "run", "l2-batch-posting", "--param", "max_batch_ops=3", "--json")
    assert run.returncode == 0, run.stderr[-3000:]
    report = json.loads(run.stdout)
    assert report["ok"] is True
    assert report["chains"]["optimism"]["ops_posted"] == 1
    arbitrum = report["chains"]["arbitrum"]
    assert arbitrum["ops_posted"] == 7 and arbitrum["batches"] == 3 and arbitrum["pending"] == 0
    assert arbitrum["l1_fee_wei"] > 0 and arbitrum["fee_per_op"] > 0 and arbitrum["gas_used"] > 0
    zksync = report["chains"]["zksync"]
    assert zksync["ops_posted"] == 1 and zksync["gas_used"] > 0 and zksync["l1_fee_wei"] == 0
    sol = report["chains"]["solana"]
    assert sol["ops_posted"] == 3 and sol["lamports"] > 0 and 0 < sol["max_tx_bytes"] <= 1232
    status = json.loads(cli(cli_env, "outbox", "status", "--json").stdout)
    assert status["arbitrum"]["counts"]["confirmed"] == 7

    api = cli_env["PREFECT_API_URL"]
    markdown = httpx.get(f"{api}/artifacts/{artifact_key('l2-batch-posting')}/latest", timeout=10).json()[
        "data"
    ]
    assert "arbitrum" in markdown
    found = events_since(api, "scaleops.l2.posted", report["started_at"])
    assert len(found) == 1
    published = run.stdout + run.stderr + markdown + json.dumps(found)
    for secret in secrets_of(cli_env):
        assert secret not in published


def test_fee_cap_exits_1_and_emits_fee_cap(cli_env: dict[str, str]) -> None:
    env = {**cli_env, "SCALEOPS_CHAINS__OPTIMISM__MAX_FEE_PER_BATCH": "1000"}
    key = f"{uuid.uuid4().hex[:8]}-capped"
    cli(env, "outbox", "add", "--chain", "optimism", "--kind", "anchor", "--key", key, "--payload", "1")
    run = cli(env, "run", "l2-batch-posting", "--param", "chain=optimism", "--json")
    assert run.returncode == 1, run.stderr[-3000:]
    report = json.loads(run.stdout)
    assert report["chains"]["optimism"]["fee_capped"] == 1 and report["chains"]["optimism"]["pending"] == 1
    assert events_since(env["PREFECT_API_URL"], "scaleops.l2.fee-cap", report["started_at"])


def test_bad_input_exits_2_naming_the_field(cli_env: dict[str, str]) -> None:
    unknown = cli(cli_env, "run", "l2-batch-posting", "--param", "chain=nope")
    assert unknown.returncode == 2 and "unknown chain" in unknown.stderr
    bad_payload = cli(
        cli_env, "outbox", "add", "--chain", "optimism", "--kind", "anchor", "--key", "k", "--payload", "{x"
    )
    assert bad_payload.returncode == 2 and "--payload" in bad_payload.stderr
    bad_line = cli(
        cli_env,
        "outbox",
        "add",
        "--chain",
        "optimism",
        "--from-file",
        "-",
        stdin='{"key":"a","kind":"anchor","payload":1}\n{"key": "", "kind": "anchor", "payload": 1}\n',
    )
    assert bad_line.returncode == 2 and "line 2: key" in bad_line.stderr
    unknown_chain = cli(cli_env, "outbox", "status", "--chain", "nope")
    assert unknown_chain.returncode == 2 and "unknown chain" in unknown_chain.stderr
    for secret in secrets_of(cli_env):
        assert secret not in unknown.stderr + bad_payload.stderr + bad_line.stderr
