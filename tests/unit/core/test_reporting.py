"""Report helpers that need no server: keys, payload size, markdown."""

from __future__ import annotations

from scaleops.core.redaction import Redactor
from scaleops.core.reporting import (
    MAX_LIST_ITEMS_IN_EVENT,
    DutyReport,
    artifact_key,
    default_markdown,
    event_payload,
)


class BigReport(DutyReport):
    keys: list[str] = []


def test_artifact_key_is_prefect_safe() -> None:
    assert artifact_key("backup_verification") == "scaleops-backup-verification-report"
    assert artifact_key("Cache Warming", "table") == "scaleops-cache-warming-table"


def test_problem_marks_report_not_ok() -> None:
    report = DutyReport(duty="x")
    assert report.ok
    report.problem("replica is 3 objects behind")
    assert not report.ok and report.problems == ["replica is 3 objects behind"]


def test_event_payload_is_redacted_and_bounded() -> None:
    report = BigReport(duty="x", keys=[f"backups/{i:06d}-{'p' * 40}" for i in range(20_000)])
    report.problems.append("postgresql://u:leakme123@db/x")
    payload = event_payload(report, Redactor())
    assert "leakme123" not in str(payload)
    assert len(payload["keys"]) == MAX_LIST_ITEMS_IN_EVENT + 1
    assert "more" in payload["keys"][-1]
    small = event_payload(BigReport(duty="x", keys=["a", "b"]), Redactor())
    assert small["keys"] == ["a", "b"]


def test_default_markdown_names_status_and_problems() -> None:
    report = DutyReport(duty="x")
    report.problem("bucket missing")
    text = default_markdown(report.finish())
    assert "PROBLEMS FOUND" in text and "- bucket missing" in text
