"""`scaleops outbox add|status`: queue on-chain operations for the l2-batch-posting duty, and look."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from scaleops.cli.console import connect_postgres, err, fail, out

app = typer.Typer(help="The outbox of on-chain operations (duty l2-batch-posting).", no_args_is_help=True)


def _check_chain(settings: Any, chain: str) -> None:
    if chain not in settings.chains:
        known = ", ".join(sorted(settings.chains)) or "none configured (SCALEOPS_CHAINS__<NAME>__...)"
        raise fail(f"--chain {chain!r}: unknown chain; known: {known}")


@app.command("add")
def add(
    chain: Annotated[str, typer.Option(help="chain name (SCALEOPS_CHAINS__<NAME>__...)")],
    kind: Annotated[str | None, typer.Option(help="operation kind (anchor, payout, memo, ...)")] = None,
    payload: Annotated[str | None, typer.Option(help="operation payload, JSON")] = None,
    key: Annotated[str | None, typer.Option(help="idempotency key (adding it again is a no-op)")] = None,
    from_file: Annotated[
        Path | None, typer.Option("--from-file", help="JSON lines {key, kind, payload}; '-' for stdin")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the result as JSON")] = False,
) -> None:
    """Queue operations; a key that is already queued is left as it is (idempotent)."""
    from scaleops.cli.console import load_cli_settings
    from tasks.l2.outbox import (
        NewOp,
        OutboxInputError,
        add_operations,
        ensure_schema,
        parse_jsonl,
        validate_op,
    )

    settings = load_cli_settings()
    chain = chain.lower()
    _check_chain(settings, chain)
    single = (kind, payload, key)
    try:
        ops: list[NewOp]
        if from_file is not None:
            if any(v is not None for v in single):
                raise fail("--from-file excludes --kind, --payload and --key")
            if str(from_file) == "-":
                ops = list(parse_jsonl(sys.stdin))
            else:
                if not from_file.is_file():
                    raise fail(f"--from-file {from_file}: no such file")
                with from_file.open() as handle:
                    ops = list(parse_jsonl(handle))
        else:
            if any(v is None for v in single):
                raise fail("give --kind, --payload and --key, or --from-file")
            try:
                parsed = json.loads(payload or "")
            except ValueError as exc:
                raise fail(f"--payload: not JSON ({exc})") from None
            ops = [validate_op(key, kind, parsed)]
    except OutboxInputError as exc:
        raise fail(str(exc)) from None
    with connect_postgres(settings, autocommit=True) as conn:
        ensure_schema(conn)
        added, existing = add_operations(conn, chain, ops)
    result = {"chain": chain, "added": added, "already_queued": existing}
    if as_json:
        sys.stdout.write(json.dumps(result) + "\n")
    else:
        err.print(f"{chain}: {added} added, {existing} already queued")


@app.command("status")
def status(
    chain: Annotated[str | None, typer.Option(help="only this chain")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
) -> None:
    """Operations per status and the age of the oldest pending one, per chain."""
    from scaleops.cli.console import load_cli_settings
    from tasks.l2.outbox import OP_STATUSES, ensure_schema, outbox_status

    settings = load_cli_settings()
    if chain is not None:
        chain = chain.lower()
        _check_chain(settings, chain)
    with connect_postgres(settings, autocommit=True) as conn:
        ensure_schema(conn)
        result = outbox_status(conn, chain)
    if as_json:
        sys.stdout.write(json.dumps(result, indent=2) + "\n")
        return
    table = Table("chain", *OP_STATUSES, "oldest pending (s)", box=None)
    for name, entry in result.items():
        age = entry["oldest_pending_age_seconds"]
        table.add_row(name, *(str(entry["counts"][s]) for s in OP_STATUSES), "-" if age is None else str(age))
    out.print(table)
