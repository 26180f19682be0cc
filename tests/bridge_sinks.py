"""Sinks that record what the alert bridge would send to Prefect (its unit and integration tests)."""

from __future__ import annotations

import asyncio
from typing import Any

from scaleops.ops.alert_bridge import PrefectUnavailable


class RecordingSink:
    """The bridge's event sink, recording; `fail=True` plays a Prefect API that does not answer."""

    def __init__(self, fail: bool = False) -> None:
        self.events: list[dict[str, Any]] = []
        self.fail = fail

    async def send(self, events: list[dict[str, Any]]) -> None:
        if self.fail:
            raise PrefectUnavailable("Prefect API unreachable: ConnectError")
        await asyncio.sleep(0.01)  # a real round trip: lets concurrent requests overlap
        self.events.extend(events)

    async def close(self) -> None:
        return None


class ReportingSink(RecordingSink):
    """Also answers whether a window's run has reported, as the bridge asks Prefect's events."""

    def __init__(self, fail: bool = False) -> None:
        super().__init__(fail)
        self.reported: set[str] = set()

    async def window_reported(self, window_id: str, opened_at: Any) -> bool:
        return window_id in self.reported
