"""`scaleops db ...`: the project's PostgreSQL schema."""

from __future__ import annotations

import typer
from rich.console import Console

app = typer.Typer(help="The project's PostgreSQL schema (migrations).", no_args_is_help=True)
err = Console(stderr=True, soft_wrap=True)


@app.command("migrate")
def migrate_command() -> None:
    """Apply every schema migration not applied yet (idempotent, safe to run concurrently)."""
    from scaleops.cli import load_cli_settings
    from scaleops.clients import postgres_connect
    from scaleops.migrations import migrate

    settings = load_cli_settings()
    with postgres_connect(settings, autocommit=True) as conn:
        applied = migrate(conn)
    for migration in applied:
        err.print(f"applied {migration.version}: {migration.name}")
    err.print("schema is up to date" if not applied else f"{len(applied)} migration(s) applied")
