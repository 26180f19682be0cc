"""The cache-warming report: its model and its markdown artifact."""

from __future__ import annotations

from datetime import datetime

from pydantic import Field

from scaleops.core.reporting import DutyReport
from scaleops.core.settings import Settings
from tasks.cache.redis import CacheSnapshot, WarmResult, hit_rate_since


class CacheWarmingReport(DutyReport):
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

    def resource_id(self, settings: Settings) -> str:
        return f"scaleops.cache.{self.warm_set}"

    def resource_labels(self) -> dict[str, str]:
        return {"scaleops.cache.target": self.target}

    def outcome(self) -> str:
        return "warmed"

    def markdown(self, settings: Settings) -> str:
        return render_markdown(self)

    def record_before(self, before: CacheSnapshot, memory_budget: float) -> None:
        """Memory and hit rate before the run writes anything."""
        self.used_memory_before = before.used_memory
        self.memory_budget_bytes = int(before.memory_limit * memory_budget)
        self.hit_rate_since_last_run, self.hit_rate_note = hit_rate_since(
            before.previous, before.hits, before.misses
        )

    def record_warm(self, result: WarmResult) -> None:
        self.keys_written = result.keys_written
        self.bytes_written = result.bytes_written
        self.skipped = result.skipped
        self.rows_read = result.rows_read
        self.stopped_by_budget = result.stopped_by_budget
        self.budget_detail = result.budget_detail
        self.seconds = round(result.seconds, 3)
        self.keys_per_second = round(result.keys_written / result.seconds, 1) if result.seconds else 0.0
        self.bytes_per_key = round(result.bytes_per_key, 1)

    def record_after(self, before: CacheSnapshot, after: CacheSnapshot) -> None:
        """Memory after the run; a stop by the budget or evictions during the run are problems."""
        self.invalidated = self.invalidated_changed + self.invalidated_vanished
        self.used_memory_after = after.used_memory
        self.evictions_during_run = max(0, after.evicted_keys - before.evicted_keys)
        if self.stopped_by_budget:
            self.problem(
                f"stopped by the memory budget after {self.keys_written:,} keys: {self.budget_detail}; "
                "the hottest keys are in, the rest are not (raise maxmemory or memory_budget, or lower limit)"
            )
        if self.evictions_during_run and not self.dry_run:
            self.problem(
                f"Redis evicted {self.evictions_during_run} keys during the run (other writers, or the "
                "per-key estimate was low): lower memory_budget"
            )

    def state_to_keep(self, before: CacheSnapshot) -> dict[str, str]:
        """What the next run reads back: counters for its hit rate, the keys written, the watermark."""
        state = {"hits": str(before.hits), "misses": str(before.misses), "run_at": self.as_of.isoformat()}
        state["keys_written"] = str(self.keys_written)
        if self.watermark is not None:
            state["watermark"] = self.watermark.isoformat()
        return state


def render_markdown(report: CacheWarmingReport) -> str:
    verdict = "OK" if report.ok else "PROBLEMS FOUND"
    rate = report.hit_rate_since_last_run
    lines = [
        f"# Cache warming `{report.warm_set}` → {report.target}: {verdict}"
        + (" (dry run)" if report.dry_run else ""),
        "",
        "| measure | value |",
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
