"""Which leftovers of dead runs a backup run removes: only scratch databases and uploads old enough."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from tasks.backup.leftovers import stale_scratch_databases, stale_uploads
from tasks.backup.restore import scratch_name

NOW = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)
SIX_HOURS = timedelta(hours=6)


def test_only_old_scratch_databases_are_stale() -> None:
    old = scratch_name("app", NOW - timedelta(hours=7))
    live = scratch_name("app", NOW - timedelta(minutes=5))
    names = [old, live, "app", "scaleops_restore_nostamp", "postgres"]
    assert stale_scratch_databases(names, NOW, SIX_HOURS) == [old]


def test_only_old_incomplete_uploads_are_stale() -> None:
    uploads = [
        {"Key": "backups/app/old.dump", "UploadId": "u1", "Initiated": NOW - timedelta(days=1)},
        {"Key": "backups/app/now.dump", "UploadId": "u2", "Initiated": NOW - timedelta(minutes=1)},
    ]
    assert stale_uploads(uploads, NOW, SIX_HOURS) == [("backups/app/old.dump", "u1")]
