"""The `scaleops` command line."""

from __future__ import annotations

import os
import shlex
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from scaleops.cli.console import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_PROBLEMS,
    err,
    fail,
    load_cli_settings,
    out,
    print_json,
    progress,
)

if TYPE_CHECKING:
    from scaleops.cli.demo import DemoRun
    from scaleops.core.settings import Settings

app = typer.Typer(
    help="scaleops: a Web3 platform's scaling and reliability duties as Prefect flows.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
config_app = typer.Typer(help="Show and check the effective settings.", no_args_is_help=True)
sandbox_app = typer.Typer(help="The local sandbox of real services on 127.0.0.1.", no_args_is_help=True)
app.add_typer(config_app, name="config")
app.add_typer(sandbox_app, name="sandbox")


# ------------------------------------------------------------------------------------------------ config
@config_app.command("show")
def config_show(as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False) -> None:
    """Print the effective settings, every secret masked."""
    data = load_cli_settings().masked()
    if as_json:
        print_json(data)
        return
    table = Table("setting", "value", box=None)

    def rows(prefix: str, value: Any) -> None:
        if isinstance(value, dict):
            for key, inner in value.items():
                rows(f"{prefix}__{key.upper()}" if prefix else key.upper(), inner)
        else:
            name = "PREFECT_API_URL" if prefix == "PREFECT_API_URL" else f"SCALEOPS_{prefix}"
            table.add_row(name, "" if value is None else str(value))

    rows("", data)
    out.print(table)


@config_app.command("check")
def config_check(
    duty_names: Annotated[
        list[str] | None, typer.Argument(metavar="[DUTY]...", help="check only these duties (default: all)")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
) -> None:
    """Validate the settings, then say per duty what it needs and does not find; exit 2 naming each
    bad field or missing setting."""
    from scaleops.core.duties import all_duties

    settings = load_cli_settings()
    known = all_duties()
    unknown = sorted(set(duty_names or []) - set(known))
    if unknown:
        raise fail(f"unknown duty {', '.join(unknown)}; known duties: {', '.join(known)}")
    missing = {name: known[name].missing(settings) for name in duty_names or known}
    if as_json:
        print_json({name: {"ready": not gaps, "missing": gaps} for name, gaps in missing.items()})
    else:
        table = Table("duty", "ready", "missing", box=None)
        for name, gaps in missing.items():
            table.add_row(name, "yes" if not gaps else "[red]no[/red]", escape("; ".join(gaps)))
        out.print(table)
    if any(missing.values()):
        err.print('[red]some duties miss settings[/red] (see the table; README "Configuration")')
        raise typer.Exit(EXIT_FAILED)
    err.print("[green]settings are valid and every checked duty has what it needs[/green]")


# ------------------------------------------------------------------------------------------------ sandbox
def _sandbox() -> Any:
    from scaleops.sandbox.manager import Sandbox

    return Sandbox(load_cli_settings())


def _sandbox_error(exc: Exception) -> typer.Exit:
    err.print(f"[red]sandbox:[/red] {escape(str(exc))}", highlight=False)
    return typer.Exit(EXIT_FAILED)


@sandbox_app.command("up")
def sandbox_up(
    only: Annotated[
        str | None, typer.Option(help="comma-separated services (their dependencies come too)")
    ] = None,
) -> None:
    """Start the sandbox's services (idempotent: running ones are left alone) and wait until healthy."""
    from scaleops.sandbox.services import SandboxError

    sandbox = _sandbox()
    names = [n.strip() for n in only.split(",") if n.strip()] if only else None
    try:
        status = sandbox.up(names, progress=progress)
    except SandboxError as exc:
        raise _sandbox_error(exc) from None
    _print_status(status)
    err.print(f'settings for this sandbox: eval "$(scaleops sandbox env)"  (state in {sandbox.dir})')


@sandbox_app.command("down")
def sandbox_down(purge: Annotated[bool, typer.Option(help="also delete all sandbox data")] = False) -> None:
    """Stop the sandbox's own processes (by PID)."""
    _sandbox().down(purge=purge, progress=progress)


def _print_status(status: dict[str, Any]) -> None:
    table = Table("service", "healthy", "url", "pids", box=None)
    for name, entry in status.items():
        mark = "[green]yes[/green]" if entry["healthy"] else "[red]no[/red]"
        table.add_row(name, mark, entry["url"] or "-", ",".join(map(str, entry["pids"])) or "-")
    err.print(table)


@sandbox_app.command("status")
def sandbox_status(
    as_json: Annotated[bool, typer.Option("--json", help="print JSON keyed by service")] = False,
) -> None:
    """Show each service: healthy or not, URL, PIDs. Exit 1 when any is unhealthy."""
    status = _sandbox().status()
    if as_json:
        print_json(status)
    else:
        _print_status(status)
    if not all(entry["healthy"] for entry in status.values()):
        raise typer.Exit(EXIT_PROBLEMS)


@sandbox_app.command("env")
def sandbox_env(as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False) -> None:
    """Print `export` lines that point scaleops at the sandbox: eval "$(scaleops sandbox env)"."""
    from scaleops.sandbox.services import SandboxError

    try:
        values = _sandbox().env()
    except SandboxError as exc:
        raise _sandbox_error(exc) from None
    if as_json:
        print_json(values)
        return
    for key, value in values.items():
        sys.stdout.write(f"export {key}={shlex.quote(value)}\n")


# ------------------------------------------------------------------------------------------------ duties
@app.command("duties")
def duties(as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False) -> None:
    """List the duties `scaleops run` knows."""
    from scaleops.core.duties import all_duties

    found = all_duties()
    if as_json:
        print_json(
            [
                {"name": d.name, "events": f"scaleops.{d.namespace}.*", "flow": d.flow, "summary": d.summary}
                for d in found.values()
            ]
        )
        return
    table = Table("duty", "events", "what it does", box=None)
    for duty in found.values():
        table.add_row(duty.name, f"scaleops.{duty.namespace}.*", duty.summary)
    out.print(table)


@app.command("run")
def run(
    duty: Annotated[str, typer.Argument(help="duty name (see `scaleops duties`)")],
    param: Annotated[
        list[str] | None, typer.Option("--param", "-p", help="flow parameter key=value (JSON values parsed)")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the report as JSON on stdout")] = False,
) -> None:
    """Run one duty's flow now (against PREFECT_API_URL when set).

    Exit 0: completed, every check passed; 1: completed and found problems; 2: failed or bad input.
    """
    from scaleops.cli.runner import BadInput, exit_code, parse_params, run_duty
    from scaleops.core.redaction import Redactor

    settings = load_cli_settings()
    redactor = Redactor(settings.secrets())
    try:
        report = run_duty(duty, parse_params(param or []))
    except BadInput as exc:
        err.print(f"[red]bad input:[/red] {escape(redactor.text(str(exc)))}", highlight=False)
        raise typer.Exit(EXIT_FAILED) from None
    except Exception as exc:
        err.print(f"[red]{escape(duty)} failed:[/red] {escape(redactor.text(str(exc)))}", highlight=False)
        raise typer.Exit(EXIT_FAILED) from None
    if as_json:
        sys.stdout.write(redactor.text(report.model_dump_json(indent=2)) + "\n")
    else:
        verdict = {
            "ok": "[green]ok[/green]",
            "warnings": "[yellow]ok, with warnings[/yellow]",
            "problems": "[red]problems found[/red]",
            "failed": "[red]could not check[/red]",
        }
        err.print(f"{duty}: {verdict[report.status]}")
        for failed in report.failed_steps:
            err.print(f"  - [red]step failed[/red] {escape(redactor.text(failed))}", highlight=False)
        for problem in report.problems:
            err.print(f"  - [red]error[/red] {escape(redactor.text(problem))}", highlight=False)
        for warning in report.warnings:
            err.print(f"  - [yellow]warning[/yellow] {escape(redactor.text(warning))}", highlight=False)
    raise typer.Exit(exit_code(report))


@app.command("demo")
def demo(
    timeout: Annotated[float, typer.Option(help="seconds to wait for the runs of each wave")] = 900.0,
) -> None:
    """Bring the sandbox up, deploy prefect.yaml to its Prefect server and run every duty once through
    its deployment (the sandbox's worker runs them); print a summary and the Prefect UI."""
    from scaleops.cli.demo import online_workers, run_through_deployments
    from scaleops.core.duties import all_duties
    from scaleops.core.redaction import Redactor
    from scaleops.sandbox.manager import Sandbox, apply_env
    from scaleops.sandbox.services import WORK_POOL, SandboxError

    sandbox = Sandbox(load_cli_settings())
    err.print("[bold]starting the sandbox[/bold]")
    try:
        status = sandbox.up(progress=progress)
    except SandboxError as exc:
        raise _sandbox_error(exc) from None
    apply_env(sandbox.env())
    settings = load_cli_settings()
    redactor = Redactor(settings.secrets())
    err.print("[bold]deploying prefect.yaml[/bold] (schedules, alert triggers, the sandbox worker runs them)")
    log = sandbox.dir / "logs" / "deploy.log"
    if not _deploy_all(log):
        raise fail(f"prefect deploy failed; see {log}")
    queued = _queue_demo_operations(settings)
    if queued:
        err.print(f"queued {queued} demo operations in the outbox for l2-batch-posting to post")
    if not online_workers(WORK_POOL):  # the runs would wait for nobody
        raise fail(
            f"no worker online on work pool {WORK_POOL!r}: see `scaleops sandbox status` (service worker)"
        )
    names = sorted(all_duties())
    err.print(f"[bold]running {len(names)} deployments[/bold] (preflight first, then the others at once)")

    def done(run: DemoRun) -> None:
        err.print(f"  {run.duty}: {run.status}", highlight=False)

    runs = run_through_deployments(names, timeout=timeout, on_done=done)
    labels = {"ok": "[green]ok[/green]", "warnings": "[yellow]warnings[/yellow]"}
    table = Table("duty", "result", "seconds", "findings", box=None)
    worst, found_problems = EXIT_OK, False
    for run in runs:
        seconds = "-" if run.seconds is None else f"{run.seconds:.1f}"
        result = labels.get(run.status, f"[red]{run.status}[/red]")
        table.add_row(run.duty, result, seconds, escape(redactor.text(run.message)))
        if run.status in ("crashed", "timed-out"):
            worst = EXIT_FAILED
        elif run.status != "ok":
            found_problems = True
    out.print(table)
    ui = status["prefect"]["url"]
    out.print(f"Prefect UI: {ui}  (each deployment's page lists its demo run, tagged 'demo')")
    out.print(f'Use this sandbox from a shell: eval "$({os.path.basename(sys.argv[0])} sandbox env)"')
    if found_problems:
        out.print("A duty that finds problems did its job: its report and artifact say what and where.")
    # the demo succeeded when every duty ran; findings are the point of running them, not a failure
    raise typer.Exit(worst)


def _queue_demo_operations(settings: Settings, per_chain: int = 20) -> int:
    """A few operations per configured chain, new keys each demo, so l2-batch-posting has work."""
    import hashlib
    import time

    from scaleops.core.clients import postgres_connect
    from tasks.l2.outbox import NewOp, add_operations, ensure_schema

    stamp = time.strftime("%Y%m%dT%H%M%S")
    added = 0
    with postgres_connect(settings) as conn:
        ensure_schema(conn)
        for chain, config in settings.chains.items():
            kind = "memo" if config.kind == "solana" else "anchor"
            ops = [
                NewOp(
                    f"demo:{stamp}:{chain}:{i}",
                    kind,
                    {"sha256": hashlib.sha256(f"{stamp}:{chain}:{i}".encode()).hexdigest()},
                )
                for i in range(per_chain)
            ]
            added += add_operations(conn, chain, ops)[0]
        conn.commit()
    return added


def _deploy_all(log: Path) -> bool:
    """`prefect --no-prompt deploy --all` from the project root (PREFECT_API_URL from the environment)."""
    import subprocess

    from scaleops.sandbox.services import PROJECT_ROOT

    with open(log, "w") as handle:
        result = subprocess.run(
            [sys.executable, "-m", "prefect", "--no-prompt", "deploy", "--all"],
            cwd=PROJECT_ROOT,
            stdout=handle,
            stderr=subprocess.STDOUT,
            check=False,
        )
    return result.returncode == 0


def _register_command_groups() -> None:
    from scaleops.cli import alerts, archive, backfill, contract, cost, db, forecast, outbox

    app.add_typer(alerts.app, name="alerts")
    app.add_typer(archive.app, name="archive")
    app.add_typer(cost.app, name="cost")
    app.add_typer(contract.app, name="contract")
    app.add_typer(contract.l2_app, name="l2")
    app.add_typer(db.app, name="db")
    app.add_typer(outbox.app, name="outbox")
    app.command("backfill", help=backfill.HELP, no_args_is_help=True)(backfill.backfill)
    app.command("forecast", no_args_is_help=True)(forecast.forecast)


_register_command_groups()


def main() -> None:  # pragma: no cover - console script entry point
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
