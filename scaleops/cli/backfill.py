"""`scaleops backfill DEPLOYMENT --from ... --to ...` and `scaleops backfill status BACKFILL_ID`."""

from __future__ import annotations

import contextlib
import json
import sys
from collections import Counter
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

HELP = """One flow run per partition of DEPLOYMENT, with the partition as `as_of`.

Runs are idempotent (key backfill:<deployment>:<partition>:<params hash>) and tagged `backfill` and
`backfill:<id>`: running the same backfill twice creates no new runs. The plan is printed first;
--dry-run stops there. `scaleops backfill status BACKFILL_ID` shows a backfill's runs.
"""


def backfill(
    deployment: Annotated[str, typer.Argument(help="deployment name (or flow/deployment), or 'status'")],
    backfill_id: Annotated[str | None, typer.Argument(help="with 'status': the backfill id")] = None,
    start: Annotated[
        str | None, typer.Option("--from", help="first partition: 2026-11-01 or ISO datetime")
    ] = None,
    end: Annotated[str | None, typer.Option("--to", help="last partition, inclusive")] = None,
    every: Annotated[str, typer.Option(help="partition step: 1d, 6h, 30m, 1w or a cron expression")] = "1d",
    tz: Annotated[str, typer.Option(help="time zone of dates without one")] = "UTC",
    param: Annotated[
        list[str] | None, typer.Option("--param", "-p", help="extra flow parameter key=value")
    ] = None,
    reprocess: Annotated[
        str, typer.Option(help="none: skip partitions already run; failed: rerun failed ones; all: rerun all")
    ] = "none",
    max_active: Annotated[
        int | None, typer.Option(min=1, help="at most N runs of this backfill unfinished at once")
    ] = None,
    order: Annotated[str, typer.Option(help="asc (oldest first) or desc")] = "asc",
    dry_run: Annotated[bool, typer.Option("--dry-run", help="print the plan and stop")] = False,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="do not ask before creating runs")] = False,
    wait: Annotated[
        bool, typer.Option(help="wait for the runs to finish; exit 1 if any partition failed")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="print the plan and results as JSON")] = False,
) -> None:
    from prefect.client.orchestration import get_client

    from scaleops.cli.console import EXIT_FAILED, EXIT_PROBLEMS, err, fail, load_cli_settings, out
    from scaleops.cli.runner import BadInput, parse_params
    from scaleops.ops.backfill import (
        FAILED,
        Backfiller,
        BackfillError,
        check_params,
        execute,
        parse_tz,
        parse_when,
        partitions,
        plan,
    )
    from scaleops.ops.backfill import backfill_id as make_id

    settings = load_cli_settings()
    if deployment == "status":
        if not backfill_id:
            err.print("usage: scaleops backfill status BACKFILL_ID")
            raise typer.Exit(EXIT_FAILED)
        with get_client(sync_client=True) as client:
            _reachable(client, settings.prefect_api_url)
            _status(Backfiller(client), backfill_id, as_json)
        return
    try:
        if backfill_id:
            raise BackfillError(f"unexpected argument {backfill_id!r} (only `status` takes an id)")
        if reprocess not in ("none", "failed", "all"):
            raise BackfillError(f"--reprocess {reprocess!r}: expected none, failed or all")
        if order not in ("asc", "desc"):
            raise BackfillError(f"--order {order!r}: expected asc or desc")
        if not start or not end:
            raise BackfillError("--from and --to are required")
        zone = parse_tz(tz)
        parts = partitions(parse_when(start, zone, "--from"), parse_when(end, zone, "--to"), every)
        params = parse_params(param or [])
        if "as_of" in params:
            raise BackfillError("--param as_of: the backfill sets as_of per partition")
    except (BackfillError, BadInput) as exc:
        err.print(f"[red]bad input:[/red] {escape(str(exc))}", highlight=False)
        raise typer.Exit(EXIT_FAILED) from None

    with get_client(sync_client=True) as client:
        _reachable(client, settings.prefect_api_url)
        backfiller = Backfiller(client)
        try:
            dep = backfiller.deployment(deployment)
            check_params(dep.parameter_openapi_schema, params, dep.name)
        except BackfillError as exc:
            err.print(f"[red]bad input:[/red] {escape(str(exc))}", highlight=False)
            raise typer.Exit(EXIT_FAILED) from None
        name = dep.name
        options = getattr(dep, "concurrency_options", None)
        if options is not None and str(getattr(options, "collision_strategy", "")).endswith("CANCEL_NEW"):
            err.print(
                f"[yellow]warning:[/yellow] deployment {name} has collision_strategy CANCEL_NEW: "
                "runs beyond its concurrency limit will be cancelled, not queued (use ENQUEUE for backfills)"
            )
        bid = make_id(name, parts, params)
        items = plan(name, parts, backfiller.existing_runs(dep.id, parts), params, reprocess, order)  # type: ignore[arg-type]
        to_create = [i for i in items if i.creates]
        result: dict[str, Any] = {
            "backfill_id": bid,
            "deployment": name,
            "partitions": len(items),
            "to_create": len(to_create),
            "plan": [i.as_dict() for i in items],
        }
        if not as_json:
            _print_plan(err, bid, name, items)
        if dry_run or not to_create:
            if as_json:
                sys.stdout.write(json.dumps(result, indent=2) + "\n")
            elif not to_create:
                err.print("nothing to create: every partition is done or in progress")
            return
        if not yes and not sys.stdin.isatty():  # nobody to ask: create nothing rather than assume yes
            raise fail(f"--yes: {len(to_create)} flow run(s) would be created; pass --yes to create them")
        if not yes and not typer.confirm(f"create {len(to_create)} flow run(s)?"):
            raise typer.Exit(EXIT_FAILED)

        progress = Progress(
            TextColumn(f"backfill {bid}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=err
        )
        task = progress.add_task("runs", total=len(to_create))

        def on_progress(done: int, total: int, states: dict[str, str]) -> None:
            progress.update(task, completed=done, total=total)

        with progress if wait and not as_json else contextlib.nullcontext():
            states = execute(
                backfiller,
                dep.id,
                items,
                params,
                bid,
                max_active=max_active,
                wait=wait,
                on_progress=on_progress,
            )
        counts = Counter(states.values())
        failed_partitions = sum(1 for s in states.values() if s in FAILED) + sum(
            1 for i in items if i.action == "skip-failed"
        )
        result.update(
            {"created": len(states), "states": dict(counts), "failed_partitions": failed_partitions}
        )
        if as_json:
            sys.stdout.write(json.dumps(result, indent=2) + "\n")
        else:
            summary = ", ".join(f"{n} {s.lower()}" for s, n in sorted(counts.items()))
            out.print(f"backfill {bid}: created {len(states)} run(s) ({summary})")
            out.print(f"follow it: scaleops backfill status {bid}")
        if wait and failed_partitions:
            raise typer.Exit(EXIT_PROBLEMS)


def _reachable(client: Any, url: str | None) -> None:
    """Exit 2 naming PREFECT_API_URL when the Prefect API does not answer (not a traceback)."""
    from scaleops.cli.console import fail

    problem = client.api_healthcheck()
    if problem is not None:
        where = url or "unset: a temporary local server"
        reason = " ".join(str(problem).split()) or type(problem).__name__
        raise fail(f"PREFECT_API_URL ({where}): the Prefect API does not answer ({reason})")


def _print_plan(console: Any, bid: str, name: str, items: list[Any]) -> None:
    table = Table("partition (as_of)", "action", "existing run", box=None, title=f"backfill {bid} of {name}")
    for item in items:
        latest = item.existing[-1] if item.existing else None
        table.add_row(
            item.partition.isoformat(), item.action, f"{latest.name} ({latest.state})" if latest else "-"
        )
    console.print(table)


def _status(backfiller: Any, bid: str, as_json: bool) -> None:
    from scaleops.cli.console import EXIT_PROBLEMS, out
    from scaleops.ops.backfill import FAILED

    runs = backfiller.runs_of_backfill(bid)
    rows = sorted(
        (
            {
                "as_of": (run.parameters or {}).get("as_of"),
                "run": run.name,
                "id": str(run.id),
                "state": run.state_type.value if run.state_type else "UNKNOWN",
                "result": partition_result(run.state_type.value if run.state_type else None, run.state_name),
            }
            for run in runs
        ),
        key=lambda r: str(r["as_of"]),
    )
    counts = Counter(r["result"] for r in rows)
    if as_json:
        sys.stdout.write(
            json.dumps(
                {
                    "backfill_id": bid,
                    "runs": rows,
                    "states": dict(Counter(r["state"] for r in rows)),
                    "results": dict(counts),
                },
                indent=2,
            )
            + "\n"
        )
    else:
        title = f"backfill {bid}: {len(rows)} run(s), " + ", ".join(
            f"{n} {k}" for k, n in sorted(counts.items())
        )
        table = Table("as_of", "run", "result", "state", box=None, title=title)
        for r in rows:
            table.add_row(str(r["as_of"]), r["run"], r["result"], r["state"])
        out.print(table)
    if not rows or any(r["state"] in FAILED for r in rows):
        raise typer.Exit(EXIT_PROBLEMS)


def partition_result(state_type: str | None, state_name: str | None) -> str:
    """What a partition's run came to: ok, warnings, problems, failed (could not check, crashed, an
    exception), or still running or scheduled."""
    from scaleops.core.reporting import COMPLETED_WITH_WARNINGS, PROBLEMS_FOUND

    if state_type == "COMPLETED":
        return "warnings" if state_name == COMPLETED_WITH_WARNINGS else "ok"
    if state_type == "FAILED" and state_name == PROBLEMS_FOUND:
        return "problems"
    if state_type in ("FAILED", "CRASHED", "CANCELLED"):
        return "failed"
    return (state_type or "unknown").lower()
