"""`scaleops archive add|status`: queue local files for the arweave-archival duty, and look."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from scaleops.cli.console import err, fail, out

app = typer.Typer(help="The Arweave archive ledger (duty arweave-archival).", no_args_is_help=True)


@app.command("add")
def add(
    files: Annotated[list[Path], typer.Argument(help="files to archive")],
    content_type: Annotated[
        str | None, typer.Option("--content-type", help="default: guessed from each file's name")
    ] = None,
    tag: Annotated[
        list[str] | None,
        typer.Option("--tag", help="name=value added to each file's data item (repeatable)"),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the result as JSON")] = False,
) -> None:
    """Queue files; bytes already in the ledger (under any name) are not queued again, only named."""
    from scaleops.cli.console import load_cli_settings
    from scaleops.core.clients import postgres_connect
    from tasks.archive.archiver import check_user_tags, parse_tag
    from tasks.archive.collect import local_files
    from tasks.archive.ledger import NewContent, add_content, ensure_schema

    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        raise fail(f"no such file: {', '.join(missing)}")
    settings = load_cli_settings()
    try:
        tags = tuple(parse_tag(t) for t in tag or [])
    except ValueError as exc:
        raise fail(f"--tag: {exc}") from None
    contents = [
        NewContent(c.key, c.body, content_type or c.content_type, c.sha256, c.size, tags=tags)
        for c in local_files(files)
    ]
    for c in contents:
        try:
            check_user_tags(c.tags, c.key, c.content_type, settings.archive.app_name)
        except ValueError as exc:
            raise fail(f"--tag: {exc}") from None
    with postgres_connect(settings, autocommit=True) as conn:
        ensure_schema(conn)
        added, existing = add_content(conn, contents)
    result = {"added": added, "deduplicated": existing, "sha256": {c.key: c.sha256 for c in contents}}
    if as_json:
        sys.stdout.write(json.dumps(result, indent=2) + "\n")
    else:
        err.print(f"{added} queued, {existing} already in the ledger")


@app.command("status")
def status(as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False) -> None:
    """Items per status and the winston paid so far."""
    from scaleops.cli.console import load_cli_settings
    from scaleops.core.clients import postgres_connect
    from tasks.archive.ledger import ITEM_STATUSES, ensure_schema, status_counts

    settings = load_cli_settings()
    with postgres_connect(settings, autocommit=True) as conn:
        ensure_schema(conn)
        result = status_counts(conn)
    if as_json:
        sys.stdout.write(json.dumps(result, indent=2) + "\n")
        return
    table = Table(*ITEM_STATUSES, "winston paid", box=None)
    table.add_row(*(str(result["items"][s]) for s in ITEM_STATUSES), str(result["winston_paid"]))
    out.print(table)
