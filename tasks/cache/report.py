"""The cache-warming report: its model and its markdown artifact."""

from __future__ import annotations

from datetime import datetime

from pydantic import Field

from scaleops.core.reporting import DutyReport


class CacheWarmingReport(DutyReport):
    duty: str = "cache-warming"
    warm_set: str = ""
    target: str = "standalone"
    dry_run: bool = False
    keys_written: int = Field(default=0, description="keys Redis acknowledged (dry run: would write)")
    bytes_written: int = Field(default=0, description="key + value bytes of those keys")
    invalidated: int = Field(default=0, description="keys deleted because their rows changed or vanished")
    invalidated_changed: int = 0
    invalidated_vanished: int = 0
    skipped: int = Field(default=0, description="rows with a NULL key or value")
    rows_read: int = 0
    stopped_by_budget: bool = False
    budget_detail: str = ""
    seconds: float = 0.0
    keys_per_second: float = 0.0
    hit_rate_since_last_run: float | None = None
    hit_rate_note: str = ""
    ttl_range_seconds: tuple[int, int] = (0, 0)
    memory_budget_bytes: int = 0
    used_memory_before: int = 0
    used_memory_after: int = 0
    bytes_per_key: float = 0.0
    evictions_during_run: int = 0
    watermark: datetime | None = None
    notes: list[str] = Field(default_factory=list)


def render_markdown(report: CacheWarmingReport) -> str:
    verdict = "OK" if report.ok else "PROBLEMS FOUND"
    rate = report.hit_rate_since_last_run
    lines = [
        f"# Cache warming `{report.warm_set}` → {report.target}: {verdict}"
        + (" (dry run)" if report.dry_run else ""),
        "",
        "| | |",
        "|---|---|",
        f"| keys written | {report.keys_written:,} ({report.bytes_written:,} B of keys + values) |",
        f"| rows read / skipped (NULL) | {report.rows_read:,} / {report.skipped:,} |",
        f"| invalidated (changed + vanished) | {report.invalidated:,} "
        f"({report.invalidated_changed:,} + {report.invalidated_vanished:,}) |",
        f"| stopped by budget | {'**yes**' if report.stopped_by_budget else 'no'} {report.budget_detail} |",
        f"| speed | {report.keys_per_second:,.0f} keys/s over {report.seconds:.2f} s |",
        f"| TTL range | {report.ttl_range_seconds[0]}–{report.ttl_range_seconds[1]} s |",
        f"| used memory before → after | {report.used_memory_before:,} → {report.used_memory_after:,} B "
        f"(budget {report.memory_budget_bytes:,} B) |",
        f"| evictions during the run | {report.evictions_during_run} |",
        f"| hit rate since last run | {'n/a' if rate is None else f'{rate:.1%}'} ({report.hit_rate_note}) |",
    ]
    if report.problems:
        lines += ["", "## Problems", *[f"- {p}" for p in report.problems]]
    if report.notes:
        lines += ["", "## Notes", *[f"- {n}" for n in report.notes]]
    return "\n".join(lines)
