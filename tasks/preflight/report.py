"""The preflight report: one health check per system, a table of them and a markdown summary."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from scaleops.core.reporting import DutyReport
from scaleops.core.settings import Settings
from tasks.common.health import Check


class PreflightReport(DutyReport):
    checks: list[Check] = Field(default_factory=list)

    def outcome(self) -> str:
        return "passed" if self.ok else "problems"

    def resource_id(self, settings: Settings) -> str:
        return "scaleops.preflight"

    def markdown(self, settings: Settings) -> str:
        return render_markdown(self)

    def table(self) -> list[dict[str, Any]]:
        return [c.model_dump(exclude={"facts"}) for c in self.checks]


def render_markdown(report: PreflightReport) -> str:
    lines = [
        f"# Preflight: {'all systems answer' if report.ok else 'some systems do not answer'}",
        "",
        f"as of `{report.as_of.isoformat()}`",
        "",
        "| system | target | ok | detail | seconds |",
        "|---|---|---|---|---|",
    ]
    for c in report.checks:
        lines.append(
            f"| {c.system} | `{c.target}` | {'yes' if c.ok else '**no**'} | {c.detail} | {c.seconds} |"
        )
    return "\n".join(lines)
