"""The issue's reproduction, against the sandbox's real Prefect server: a backup whose pg_dump fails is
'could not check' (Failed, `.failed`, exit 2), never a green Completed run with a 'drift' event."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from scaleops.core.reporting import COULD_NOT_CHECK

pytestmark = pytest.mark.integration


def events_since(api: str, names: list[str], since: datetime) -> list[dict[str, Any]]:
    body = {"filter": {"event": {"name": names}, "occurred": {"since": since.isoformat()}}}
    found: list[dict[str, Any]] = httpx.post(f"{api}/events/filter", json=body, timeout=10).json()["events"]
    return found


def test_failed_dump_is_could_not_check_not_drift(sandbox_env: dict[str, str]) -> None:
    api = sandbox_env["PREFECT_API_URL"]
    since = datetime.now(UTC) - timedelta(seconds=2)
    result = subprocess.run(
        [sys.executable, "-m", "scaleops.cli", "run", "backup-verification", "--json"]
        + ["--param", 'databases=["nosuch_db"]', "--param", "restore_test=false"],
        env={**os.environ, **sandbox_env},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 2, result.stderr[-3000:]
    report = json.loads(result.stdout)
    assert report["failed_steps"] and report["failed_steps"][0].startswith("backup of nosuch_db failed")
    assert "could not check" in result.stderr

    runs = httpx.post(
        f"{api}/flow_runs/filter",
        json={"flow_runs": {"start_time": {"after_": since.isoformat()}}, "sort": "START_TIME_DESC"},
        timeout=10,
    ).json()
    ours = [r for r in runs if r["state"]["name"] == COULD_NOT_CHECK]
    assert ours, [(r["name"], r["state"]["name"]) for r in runs]
    state = ours[0]["state"]
    assert state["type"] == "FAILED" and state["message"].startswith("could not check: backup of nosuch_db")

    def ours_only() -> list[dict[str, Any]]:  # other runs may publish backup events meanwhile
        names = ["scaleops.backup.failed", "scaleops.backup.drift", "scaleops.backup.verified"]
        found = events_since(api, names, since)
        return [e for e in found if e["payload"].get("started_at") == report["started_at"]]

    deadline = time.monotonic() + 30
    while not (found := ours_only()) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert [e["event"] for e in found] == ["scaleops.backup.failed"]
    assert found[0]["payload"]["failed_steps"] == report["failed_steps"]


def test_leftovers_of_a_dead_run_are_removed_first_and_reported(
    sandbox_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run SIGKILLed during its restore test leaves a scratch database, one killed mid-upload an
    incomplete upload: the next run removes both (older than LEFTOVER_AFTER_SECONDS) and warns."""
    import uuid

    import psycopg
    from psycopg import sql

    from flows.backup_verification import backup_verification
    from scaleops.core.clients import postgres_dsn, s3_bucket, s3_client
    from scaleops.core.reporting import report_of
    from scaleops.core.settings import load_settings

    prefix = f"tests/leftovers/{uuid.uuid4().hex[:12]}/"
    monkeypatch.setenv("SCALEOPS_BACKUP__PREFIX", prefix)
    settings = load_settings()
    scratch = f"scaleops_restore_dead{uuid.uuid4().hex[:6]}_20200101000000"
    with psycopg.connect(postgres_dsn(settings, "restore"), autocommit=True) as conn:
        conn.execute(sql.SQL("create database {}").format(sql.Identifier(scratch)))
    client, bucket = s3_client(settings, "primary"), s3_bucket(settings, "primary")
    upload = client.create_multipart_upload(Bucket=bucket, Key=f"{prefix}app/app-20200101T000000Z.dump")

    state = backup_verification(
        databases=["postgres"], take_backup=False, restore_test=False, return_state=True
    )
    report = report_of(state)
    assert report is not None
    assert any(scratch in w and w.startswith("removed scratch database") for w in report.warnings)
    assert any(f"{prefix}app/app-20200101T000000Z.dump" in w for w in report.warnings)
    with psycopg.connect(postgres_dsn(settings, "restore"), autocommit=True) as conn:
        left = conn.execute("select 1 from pg_database where datname = %s", (scratch,)).fetchall()
    assert left == []
    uploads = client.list_multipart_uploads(Bucket=bucket, Prefix=prefix).get("Uploads", [])
    assert upload["UploadId"] not in [u["UploadId"] for u in uploads]
