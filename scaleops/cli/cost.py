"""`scaleops cost ...`: the cost-cleanup duty's policy files (registered in scaleops/cli/app.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from scaleops.cli.console import EXIT_FAILED, err, out, print_json

app = typer.Typer(help="cost-cleanup: check policy files, list what policies may name.", no_args_is_help=True)


@app.command("policies")
def policies(
    validate: Annotated[
        Path | None, typer.Option("--validate", help="check this policy file alone (no API call)")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
) -> None:
    """With --validate FILE: check a policy file and list its policies (exit 2 naming each bad policy
    and field). Without: list the resources, their filters and actions a policy may name."""
    from tasks.cost.catalog import RESOURCES
    from tasks.cost.policy import PolicyError, load_policies

    if validate is None:
        kinds = {
            name: {
                "filters": sorted([*kind.filters, "label"] if "tag" in kind.filters else kind.filters),
                "actions": list(kind.actions),
                "markable": kind.markable,
            }
            for name, kind in sorted(RESOURCES.items())
        }
        if as_json:
            print_json(kinds)
            return
        table = Table("resource", "filters", "actions", box=None)
        for name, info in kinds.items():
            table.add_row(name, ", ".join(info["filters"]), ", ".join(info["actions"]))  # type: ignore[arg-type]
        out.print(table)
        return
    try:
        loaded = load_policies(validate)
    except PolicyError as exc:
        for problem in exc.problems:
            err.print(f"[red]invalid policy[/red] {escape(problem)}", highlight=False)
        raise typer.Exit(EXIT_FAILED) from None
    rows: list[dict[str, Any]] = [
        {
            "name": p.name,
            "resource": p.resource,
            "action": p.action,
            "grace": str(p.raw.get("grace", "0d")),
            "filters": [next(iter(f)) for f in p.raw.get("filters", [])],
        }
        for p in loaded
    ]
    if as_json:
        print_json(rows)
    else:
        table = Table("policy", "resource", "filters", "action", "grace", box=None)
        for r in rows:
            table.add_row(r["name"], r["resource"], ", ".join(r["filters"]), r["action"], r["grace"])
        out.print(table)
    err.print(f"[green]{validate}: {len(loaded)} valid polic{'y' if len(loaded) == 1 else 'ies'}[/green]")
