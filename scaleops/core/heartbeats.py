"""Flow-run heartbeats that stop as soon as the run ends.

Prefect 3.9's flow engine sends `prefect.flow-run.heartbeat` from a daemon thread
(`prefect.flow_engine._send_heartbeats`): one at the start, then one every
`PREFECT_FLOWS_HEARTBEAT_FREQUENCY` seconds (180 by default, at least 30). The thread sleeps in 1 s
steps and the engine joins it when the run ends, so every sync flow run waits 0-1 s for it: most of an
empty flow run's time (1.3 s -> 0.3 s here). No setting avoids that wait except switching heartbeats
off, and scaleops needs them (zombie runs: scaleops.ops.zombies, scaleops backfill).

`install()` swaps in the same loop with one change: it waits on the stop event instead of sleeping,
so it ends the moment the run does. The events are the same (Prefect's own
`_emit_flow_run_heartbeat`, same template, same frequency, none once the run is final), so zombie
detection is unchanged. It is installed only over the Prefect function it was written against (same
name and parameters); otherwise Prefect's own stays, and tests/unit/core/test_heartbeats.py fails.
"""

from __future__ import annotations

import contextlib
import contextvars
import inspect
import threading
from collections.abc import Iterator
from typing import Any

EXPECTED_PARAMETERS = ["engine", "join_on_exit"]
replaced: Any = None  # Prefect's own function, once install() replaced it


@contextlib.contextmanager
def send_heartbeats(engine: Any, join_on_exit: bool = True) -> Iterator[None]:
    """Prefect's `_send_heartbeats`, with a loop that wakes when the run ends (see the module)."""
    from prefect.flow_engine import MINIMUM_HEARTBEAT_INTERVAL

    seconds = engine.heartbeat_seconds
    if seconds is None:
        yield
        return
    seconds = max(seconds, MINIMUM_HEARTBEAT_INTERVAL)
    resource, related = engine._build_heartbeat_event_template()
    stop = threading.Event()

    def loop() -> None:
        while not stop.is_set():
            state = engine.flow_run.state if engine.flow_run else None
            if state is not None and state.is_final():
                return
            try:
                engine._emit_flow_run_heartbeat(resource, related)
            except Exception:
                engine.logger.debug("Failed to emit heartbeat", exc_info=True)
            if stop.wait(seconds):
                return

    # the thread sees the caller's SettingsContext (PREFECT_API_URL), as in Prefect's own
    context = contextvars.copy_context()
    thread = threading.Thread(target=context.run, args=(loop,), daemon=True, name="flow-run-heartbeat")
    thread.start()
    try:
        yield
    finally:
        stop.set()
        if join_on_exit:
            thread.join(timeout=2)


def install() -> bool:
    """Use `send_heartbeats` in Prefect's flow engine; False (Prefect's own kept) when the engine's
    function is not the one this was written against."""
    import prefect.flow_engine as engine

    global replaced
    current = getattr(engine, "_send_heartbeats", None)
    if current is send_heartbeats:
        return True
    if current is None or list(inspect.signature(current).parameters) != EXPECTED_PARAMETERS:
        return False
    replaced = current
    engine._send_heartbeats = send_heartbeats
    return True
