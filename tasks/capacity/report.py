"""The capacity-forecast report: its models, its markdown artifact with charts, its breach events."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field, PrivateAttr

from scaleops.core.reporting import DutyReport
from scaleops.core.settings import Settings

UNREACHABLE = "source unreachable: "  # a fetch failure naming the setting of a source that did not answer


class SeriesResult(BaseModel):
    """One series' outcome: validation, model, CV error, breach dates, recommendation."""

    name: str
    source: str
    unit: str = ""
    threshold: float
    status: str = "ok"  # ok | breach-within-lead-time | invalid | fetch-failed | forecast-failed
    failures: list[str] = Field(default_factory=list)
    notes: list[str] = Field(default_factory=list)
    points: int = 0
    step_seconds: float | None = None
    last_value: float | None = None
    model: str | None = None
    cv_mase: float | None = None
    cv_mae: dict[str, float] = Field(default_factory=dict)
    why: str | None = None  # the chosen model's CV error beside the baselines'
    repairs: dict[str, int] = Field(default_factory=dict)  # see tasks/capacity/repair.py:Repairs
    breach_at: datetime | None = None
    breach_at_upper: datetime | None = None
    breach_at_lower: datetime | None = None
    lead_time_days: float | None = None
    peak_upper_95: float | None = None
    recommendation: str | None = None
    recommended_units: int | None = None
    monthly_cost: float | None = None
    event_emitted: bool = False


class CapacityReport(DutyReport):
    horizon: str = ""
    lookback: str = ""
    series: list[SeriesResult] = Field(default_factory=list)
    _charts: dict[str, str] = PrivateAttr(default_factory=dict)  # series -> PNG data URI, artifact only

    def record(self, results: list[SeriesResult], charts: dict[str, str]) -> list[SeriesResult]:
        """Take the series' results; a series not forecast, or one that may breach within its lead
        time, is a problem. Returns the breaching series."""
        self.series, self._charts = results, charts
        breaching = []
        for result in results:
            if (
                result.status == "fetch-failed"
                and result.failures[:1]
                and result.failures[0].startswith(UNREACHABLE)
            ):
                self.step_failed(f"{result.name}: {result.failures[0]}")  # could not check: exit 2
            elif result.status in ("fetch-failed", "invalid", "forecast-failed"):
                self.problem(f"{result.name}: {result.status}: {'; '.join(result.failures)}")
            elif result.status == "breach-within-lead-time":  # a dated warning, not a failed check
                self.problem(
                    f"{result.name}: may cross {result.threshold:g} {result.unit} from "
                    f"{fmt_time(result.breach_at_upper)} ({mean_forecast(result)})",
                    severity="warn",
                )
                result.event_emitted = True  # published with the report (more_events)
                breaching.append(result)
        return breaching

    def more_events(self) -> list[tuple[str, dict[str, str], dict[str, Any]]]:
        """`breach-forecast` per series whose upper 95% crosses within its lead time (what pages)."""
        return [
            (
                "breach-forecast",
                {"prefect.resource.id": s.name, "scaleops.duty": "capacity-forecast"},
                s.model_dump(mode="json"),
            )
            for s in self.series
            if s.event_emitted
        ]

    def outcome(self) -> str:
        if any(s.status not in ("ok", "breach-within-lead-time") for s in self.series):
            return "series-failed"
        return "breaches" if any(s.status == "breach-within-lead-time" for s in self.series) else "ok"

    def resource_id(self, settings: Settings) -> str:
        return "scaleops.capacity"

    def markdown(self, settings: Settings) -> str:
        return render_markdown(self, self._charts)

    def table(self) -> list[dict[str, Any]]:
        return [
            {
                "series": s.name,
                "status": s.status,
                "model": s.model,
                "cv_mase": None if s.cv_mase is None else round(s.cv_mase, 3),
                "repairs": sum(v for k, v in s.repairs.items() if k != "history_cut"),
                "breach_at": fmt_time(s.breach_at),
                "breach_at_upper": fmt_time(s.breach_at_upper),
                "recommendation": advice(s),
            }
            for s in self.series
        ]


CV_MASE_MEANS = (
    "CV MASE: the model's cross-validated mean absolute error divided by that of a one-step naive "
    "forecast (tomorrow = today); below 1 beats naive, above 2 the series is hard to forecast: trust "
    "the 95% band, not the mean."
)


def advice(result: SeriesResult) -> str:
    """The recommendation, only where the series needs one: never on a series marked ok."""
    return "" if result.status == "ok" else (result.recommendation or "")


def mean_forecast(result: SeriesResult) -> str:
    """When the mean forecast crosses the threshold, or that it does not within the horizon."""
    if result.breach_at is None:
        return "the mean forecast does not cross it within the horizon"
    return f"mean forecast: {fmt_time(result.breach_at)}"


def fmt_time(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M UTC") if value else "-"


def render_markdown(report: CapacityReport, charts: dict[str, str]) -> str:
    breaching = [s for s in report.series if s.status == "breach-within-lead-time"]
    failing = [s for s in report.series if s.status not in ("ok", "breach-within-lead-time")]
    lines = [
        f"# Capacity forecast: {len(breaching)} breach(es) within lead time, "
        f"{len(failing)} series not forecast",
        "",
        f"as of `{report.as_of.isoformat()}`, lookback {report.lookback}, horizon {report.horizon}",
        "",
        "| series | status | last | threshold | earliest breach (upper 95%) | breach (mean) | "
        "latest breach (lower 95%) |",
        "|---|---|---|---|---|---|---|",
    ]
    for s in report.series:
        last = "n/a" if s.last_value is None else f"{s.last_value:.4g} {s.unit}".rstrip()
        lines.append(
            f"| {s.name} | {s.status} | {last} | {s.threshold:g} {s.unit} | {fmt_time(s.breach_at_upper)} | "
            f"{fmt_time(s.breach_at)} | {fmt_time(s.breach_at_lower)} |"
        )
    lines += [
        "",
        "| series | model | CV MASE | recommendation |",
        "|---|---|---|---|",
    ]
    for s in report.series:
        mase = "n/a" if s.cv_mase is None else f"{s.cv_mase:.2f}"
        lines.append(f"| {s.name} | {s.model or 'none'} | {mase} | {advice(s) or '-'} |")
    lines += ["", CV_MASE_MEANS]
    for s in report.series:
        lines += ["", f"## {s.name} ({s.source}): {s.status}"]
        if s.breach_at_upper:
            earliest, latest = fmt_time(s.breach_at_upper), fmt_time(s.breach_at_lower)
            latest = latest if s.breach_at_lower else "after the horizon"
            if s.breach_at:
                lines.append(
                    f"- crosses {s.threshold:g} {s.unit} around **{fmt_time(s.breach_at)}** "
                    f"(between {earliest} and {latest})"
                )
            else:
                lines.append(
                    f"- may cross {s.threshold:g} {s.unit} from **{earliest}** (upper 95% band); "
                    f"{mean_forecast(s)}"
                )
        if advice(s):
            lines.append(f"- recommendation: {advice(s)}")
        if s.why:
            lines.append(f"- model: {s.why}")
        if s.repairs:
            done = ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in s.repairs.items() if v)
            lines.append(f"- repairs: {done or 'none (the export was clean)'}")
        for failure in s.failures:
            lines.append(f"- failed: {failure}")
        for note in s.notes:
            lines.append(f"- note: {note}")
        if s.name in charts:
            lines += ["", f"![{s.name}]({charts[s.name]})"]
    return "\n".join(lines)
