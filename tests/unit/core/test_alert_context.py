"""What an alert-started run's report says about its alerts: the one that started it, the ones the
bridge attached to its window, and nothing for a run no alert started."""

from __future__ import annotations

from typing import Any

from scaleops.core.duties import alert_context, coalesced_alerts
from scaleops.core.reporting import DutyReport, alert_markdown, with_alerts

WINDOW: dict[str, Any] = {
    "id": "7d0f5a9e-0000-4000-8000-000000000001",
    "duty": "backup-verification",
    "opened_at": "2026-11-26T10:00:00+00:00",
    "closes_at": "2026-11-26T10:10:00+00:00",
    "lead": True,
}
LEAD = {
    "alertname": "BackupMissing",
    "status": "firing",
    "startsAt": "2026-11-26T10:00:00+00:00",
    "fingerprint": "f1",
    "labels": {"alertname": "BackupMissing", "database": "app"},
    "window": WINDOW,
    "annotations": {"summary": "not kept in the report"},
    "receiver": "scaleops",
}


def test_the_report_keeps_the_alert_and_its_window() -> None:
    kept = alert_context(LEAD)
    assert kept is not None and kept["window"] == WINDOW and kept["labels"]["database"] == "app"
    assert "annotations" not in kept and "receiver" not in kept
    assert alert_context(None) is None


def test_started_by_lists_the_alert_and_the_attached_ones() -> None:
    report = DutyReport(duty="backup-verification", triggered_by=alert_context(LEAD))
    report.coalesced_alerts = [
        {"alertname": "ReplicationLagHigh", "labels": {"instance": f"pg-{i}:9187"}, "fingerprint": f"r{i}"}
        for i in range(3)
    ]
    text = alert_markdown(report)
    assert "## Started by" in text and "`BackupMissing` database=app" in text
    assert "3 more alert(s) for backup-verification" in text
    assert all(f"instance=pg-{i}:9187" in text for i in range(3))
    alone = alert_markdown(DutyReport(duty="backup-verification", triggered_by=alert_context(LEAD)))
    assert "No other alert for it so far." in alone
    # alerts that come after the report: where to find them
    assert f"`scaleops.alert-window.{WINDOW['id']}`" in alone and WINDOW["closes_at"] in alone


def test_started_by_comes_right_under_the_title() -> None:
    report = DutyReport(duty="backup-verification", triggered_by=alert_context(LEAD))
    text = with_alerts("# Backup verification: ok\n\nas of now\n\n## Backups taken\n", report)
    lines = text.splitlines()
    assert lines[0] == "# Backup verification: ok" and lines[2] == "## Started by"
    assert text.index("## Started by") < text.index("as of now") < text.index("## Backups taken")
    assert with_alerts("# Title\n", DutyReport(duty="preflight")) == "# Title\n"  # no alert, unchanged


def test_a_run_no_alert_started_says_nothing_about_alerts() -> None:
    assert alert_markdown(DutyReport(duty="preflight")) == ""
    assert coalesced_alerts(None) == []
    # an alert without a window (coalescing off), or one attached to another run's window: no lookup
    assert coalesced_alerts({"alertname": "X"}) == []
    assert coalesced_alerts({"alertname": "X", "window": {**WINDOW, "lead": False}}) == []


def test_a_follow_up_says_which_window_it_follows() -> None:
    follow_up = {**LEAD, "window": {**WINDOW, "id": "w2", "follows": WINDOW["id"]}}
    text = alert_markdown(DutyReport(duty="backup-verification", triggered_by=alert_context(follow_up)))
    assert "A follow-up: it came after the run for this storm's first alerts had reported" in text
    assert f"(window `scaleops.alert-window.{WINDOW['id']}`)" in text
