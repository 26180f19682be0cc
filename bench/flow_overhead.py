"""Prefect's fixed costs as the duties pay them: an empty flow run, and a task run, on the sandbox's
Prefect server, with Prefect's own flow-run heartbeats and with scaleops' (scaleops.core.heartbeats).

Each round starts one fresh process per variant, the variants alternating (the machine is shared: its
load swings), and each process measures: the first empty flow run in the process, the median of
`--flows` more, and the cost of one task run (a flow of 100 no-op tasks minus an empty one), for a
plain `@task` and for the duties' `io_task` (retry policy, masking). Prints every round and the medians.

Run: `.venv/bin/python -m bench.flow_overhead [--rounds 3] [--flows 7]` (needs `scaleops sandbox up`).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

from scaleops.core.settings import Settings
from scaleops.sandbox.manager import Sandbox

VARIANTS = ("prefect", "scaleops")
TASKS = 100


def child(variant: str, flows: int) -> dict[str, float]:
    """In a fresh process: the measurements of one variant."""
    from prefect import flow, task
    from prefect.cache_policies import NO_CACHE

    from scaleops.core.retry import io_task

    if variant == "scaleops":
        from scaleops.core.heartbeats import install

        assert install()

    @task(cache_policy=NO_CACHE)
    def plain(i: int) -> int:
        return i

    @io_task(task_run_name="noop-{i}")
    def duty_task(i: int) -> int:
        return i

    @flow
    def empty() -> None:
        return None

    @flow
    def many(n: int, kind: str) -> None:
        for i in range(n):
            (plain if kind == "plain" else duty_task)(i)

    def timed(fn: object, *args: object) -> float:
        started = time.perf_counter()
        fn(*args)  # type: ignore[operator]
        return time.perf_counter() - started

    first = timed(empty)
    median = statistics.median(timed(empty) for _ in range(flows))
    per_task = {}
    for kind in ("plain", "duty"):
        base = timed(many, 0, kind)
        per_task[kind] = (timed(many, TASKS, kind) - base) / TASKS
    return {"first": first, "empty": median, "plain_task": per_task["plain"], "duty_task": per_task["duty"]}


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="bench.flow_overhead", description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--flows", type=int, default=7)
    parser.add_argument("--child", choices=VARIANTS, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child, args.flows)))
        return 0
    env = {**os.environ, **Sandbox(Settings()).env(), "PREFECT_LOGGING_LEVEL": "WARNING"}
    seen: dict[str, list[dict[str, float]]] = {v: [] for v in VARIANTS}
    for round_ in range(args.rounds):
        order = VARIANTS if round_ % 2 == 0 else VARIANTS[::-1]
        for variant in order:
            done = subprocess.run(
                [sys.executable, "-m", "bench.flow_overhead", "--child", variant, "--flows", str(args.flows)],
                env=env,
                capture_output=True,
                text=True,
                check=True,
            )
            got = json.loads(done.stdout.strip().splitlines()[-1])
            seen[variant].append(got)
            load = os.getloadavg()[0]
            print(
                f"round {round_ + 1} (load {load:.1f}) {variant:>8} heartbeats: first empty flow "
                f"{got['first']:.2f} s, empty flow {got['empty']:.3f} s, "
                f"task run {got['plain_task'] * 1000:.1f} ms (@task) / "
                f"{got['duty_task'] * 1000:.1f} ms (io_task)",
                flush=True,
            )
    for variant in VARIANTS:
        rows = seen[variant]

        def med(key: str, rows: list[dict[str, float]] = rows) -> float:
            return statistics.median(r[key] for r in rows)

        print(
            f"median {variant:>8} heartbeats: first empty flow {med('first'):.2f} s, empty flow "
            f"{med('empty'):.3f} s, task run {med('plain_task') * 1000:.1f} ms (@task) / "
            f"{med('duty_task') * 1000:.1f} ms (io_task)"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
