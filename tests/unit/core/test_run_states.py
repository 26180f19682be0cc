"""A run tells the truth: the state a duty's report leads to, the state message, and the exit code."""

from __future__ import annotations

import pickle

from scaleops.cli.console import EXIT_FAILED, EXIT_OK, EXIT_PROBLEMS
from scaleops.cli.runner import exit_code
from scaleops.core.reporting import (
    COMPLETED_WITH_WARNINGS,
    COULD_NOT_CHECK,
    PROBLEMS_FOUND,
    DutyReport,
    ProblemsFound,
    failure_hook,
    final_state,
    report_of,
    state_message,
)


def test_ok_report_is_returned_as_is() -> None:
    report = DutyReport(duty="x")
    assert final_state(report) is report and report.status == "ok" and exit_code(report) == EXIT_OK


def test_warnings_end_completed_with_a_name_that_says_so() -> None:
    report = DutyReport(duty="x")
    report.problem("disk-db-1 may cross 800 GB in 12 days", severity="warn")
    state = final_state(report)
    assert state.is_completed() and state.name == COMPLETED_WITH_WARNINGS
    assert state.message == "warnings: disk-db-1 may cross 800 GB in 12 days"
    assert report.ok and report.status == "warnings" and exit_code(report) == EXIT_OK
    assert report_of(state) is report


def test_error_problems_end_failed_problems_found_naming_the_first_ones() -> None:
    report = DutyReport(duty="x")
    report.problem("warn only", severity="warn")
    for i in range(5):
        report.problem(f"checksum differs: key-{i}")
    state = final_state(report)
    assert state.is_failed() and state.name == PROBLEMS_FOUND
    first = "; ".join(f"checksum differs: key-{i}" for i in range(3))
    assert state.message == f"problems found: {first} (and 2 more)"
    assert report_of(state) is report and exit_code(report) == EXIT_PROBLEMS and not report.ok


def test_a_failed_step_is_could_not_check_exit_2_not_a_finding() -> None:
    report = DutyReport(duty="x")
    report.problem("an older dump has no manifest")
    report.step_failed("backup of nosuch_db failed: database does not exist")
    state = final_state(report)
    assert state.is_failed() and state.name == COULD_NOT_CHECK
    assert state.message.startswith("could not check: backup of nosuch_db failed")
    assert report.status == "failed" and exit_code(report) == EXIT_FAILED


def test_problems_found_survives_pickling_with_its_report() -> None:
    report = DutyReport(duty="x")
    report.problem("p")
    again = pickle.loads(pickle.dumps(ProblemsFound(report)))  # noqa: S301 - our own bytes
    assert again.report == report and str(again) == state_message(report)


def test_failure_hook_stays_silent_for_runs_that_published_their_own_outcome(monkeypatch: object) -> None:
    import prefect.events

    sent: list[str] = []
    monkeypatch.setattr(prefect.events, "emit_event", lambda **kw: sent.append(kw["event"]))  # type: ignore[attr-defined]
    monkeypatch.setattr("scaleops.core.reporting.flush_events", lambda timeout=10.0: None)  # type: ignore[attr-defined]
    hook = failure_hook("backup", "backup-verification")
    report = DutyReport(duty="x")
    report.problem("p")
    hook(None, None, final_state(report))
    assert sent == []
    report.step_failed("s")
    hook(None, None, final_state(report))
    assert sent == []

    class Raised:
        name, message = "Failed", "boom"

    hook(None, None, Raised())
    assert sent == ["scaleops.backup.failed"]


def test_an_idle_l2_run_publishes_nothing_but_a_busy_or_failing_one_does() -> None:
    from tasks.l2.poster import ChainReport
    from tasks.l2.report import L2PostingReport

    idle = L2PostingReport(chains={"optimism": ChainReport(chain="optimism", kind="evm")})
    assert idle.nothing_to_report()
    busy = L2PostingReport(chains={"optimism": ChainReport(chain="optimism", kind="evm", pending=3)})
    assert not busy.nothing_to_report()
    failing = L2PostingReport(chains={"optimism": ChainReport(chain="optimism", kind="evm")})
    failing.problem("optimism: nonce taken")
    assert not failing.nothing_to_report()
    assert not DutyReport(duty="x").nothing_to_report()  # other duties always publish


def test_a_backfilled_run_publishes_history_not_live_outcomes(monkeypatch: object) -> None:
    import prefect.artifacts
    import prefect.events

    from scaleops.core.reporting import publish_report
    from tasks.capacity.report import CapacityReport, SeriesResult

    sent: list[dict[str, object]] = []
    monkeypatch.setattr(prefect.events, "emit_event", lambda **kw: sent.append(kw))  # type: ignore[attr-defined]
    for name in ("create_markdown_artifact", "create_table_artifact"):
        monkeypatch.setattr(prefect.artifacts, name, lambda **kw: None)  # type: ignore[attr-defined]
    monkeypatch.setattr("scaleops.core.reporting.flush_events", lambda timeout=10.0: None)  # type: ignore[attr-defined]

    def publish(backfill: str | None) -> list[dict[str, object]]:
        report = CapacityReport(duty="capacity-forecast", backfill=backfill)
        result = SeriesResult(
            name="disk-db-1", source="prometheus", threshold=800, status="breach-within-lead-time"
        )
        report.record([result], {})
        sent.clear()
        publish_report(
            report, namespace="capacity", outcome=report.outcome(), resource_id="scaleops.capacity"
        )
        return list(sent)

    live = publish(None)
    assert [e["event"] for e in live] == ["scaleops.capacity.breaches", "scaleops.capacity.breach-forecast"]
    assert all(e["related"] == [] and "scaleops.as_of" in e["resource"] for e in live)  # type: ignore[operator]
    history = publish("b1")
    assert [e["event"] for e in history] == [
        "scaleops.capacity.backfill.breaches",
        "scaleops.capacity.backfill.breach-forecast",
    ]
    backfill = {"prefect.resource.id": "scaleops.backfill.b1", "prefect.resource.role": "backfill"}
    assert all(e["related"] == [backfill] for e in history)
    assert history[1]["payload"]["backfill"] == "b1" and history[1]["payload"]["as_of"]  # type: ignore[index]
