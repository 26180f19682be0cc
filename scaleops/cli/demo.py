"""`scaleops demo` runs each duty through its deployment, as the Prefect UI's "Run" button does.

`prefect deploy --all` has registered prefect.yaml's deployments on the sandbox's server; the sandbox's
worker (pool `scaleops`) picks up what `run_deployment` creates and runs it in a subprocess with the
sandbox's settings. So the demo's runs appear on each deployment's page, with the same parameters,
work pool and concurrency limit as a scheduled or alert-started run. The outcome of a run is read from
its final state: Completed (ok), "Completed with warnings", Failed "Problems found", Failed "Could not
check", or another failure (it crashed, or raised).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from scaleops.core.reporting import COMPLETED_WITH_WARNINGS, COULD_NOT_CHECK, PROBLEMS_FOUND

DEMO_TAG = "demo"
POLL_SECONDS = 2.0


@dataclass
class DemoRun:
    """One duty's demo run: its flow run, how it ended, and the state's message (its findings)."""

    duty: str
    flow_run_id: str
    status: str = "pending"  # ok | warnings | problems | failed | crashed | timed-out
    message: str = ""
    seconds: float | None = None
    deployment_id: str | None = None


def status_of(state_type: str, state_name: str) -> str:
    """What the demo says of a final state (the CLI's words: ok, warnings, problems, failed)."""
    if state_type == "COMPLETED":
        return "warnings" if state_name == COMPLETED_WITH_WARNINGS else "ok"
    if state_name == PROBLEMS_FOUND:
        return "problems"
    if state_name == COULD_NOT_CHECK:
        return "failed"
    return "crashed"  # Failed without a report (it raised), Crashed, Cancelled


def online_workers(pool: str) -> int:
    """How many workers of `pool` the server sees online (a demo run needs one to start)."""
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        workers = client.read_workers_for_work_pool(pool)
    return sum(1 for w in workers if str(getattr(w.status, "value", w.status)).upper() == "ONLINE")


def start_runs(duties: Iterable[str]) -> list[DemoRun]:
    """One flow run per duty from its deployment `<duty>/<duty>`, tagged `demo`; returns at once."""
    from prefect.deployments import run_deployment

    runs = []
    for duty in duties:
        flow_run: Any = run_deployment(name=f"{duty}/{duty}", timeout=0, tags=[DEMO_TAG])
        runs.append(DemoRun(duty, str(flow_run.id), deployment_id=str(flow_run.deployment_id)))
    return runs


def wait_for(
    runs: list[DemoRun], timeout: float, on_done: Callable[[DemoRun], None] = lambda _r: None
) -> list[DemoRun]:
    """Poll the server until every run is final (or `timeout` seconds passed: `timed-out`)."""
    from prefect.client.orchestration import get_client

    deadline = time.monotonic() + timeout
    waiting = list(runs)
    with get_client(sync_client=True) as client:
        while waiting:
            for run in list(waiting):
                flow_run = client.read_flow_run(UUID(run.flow_run_id))
                state = flow_run.state
                if state is None or not state.is_final():
                    continue
                run.status = status_of(state.type.value, state.name or "")
                run.message = state.message or ""
                run.seconds = flow_run.total_run_time.total_seconds()
                waiting.remove(run)
                on_done(run)
            if not waiting:
                break
            if time.monotonic() > deadline:
                for run in waiting:
                    run.status = "timed-out"
                    run.message = (
                        f"not finished after {timeout:.0f} s: is the sandbox's worker up "
                        "(`scaleops sandbox status`, service worker)?"
                    )
                break
            time.sleep(POLL_SECONDS)
    return runs


def run_through_deployments(
    duties: list[str],
    *,
    first: str | None = "preflight",
    timeout: float = 900.0,
    on_done: Callable[[DemoRun], None] = lambda _r: None,
) -> list[DemoRun]:
    """`first` alone (preflight says what does not answer before the others try it), then the others
    at once: the worker runs them side by side, each in its own process."""
    done: list[DemoRun] = []
    if first in duties:
        done += wait_for(start_runs([first]), timeout, on_done)
    rest = [d for d in duties if d != first]
    if rest:
        done += wait_for(start_runs(rest), timeout, on_done)
    return done
