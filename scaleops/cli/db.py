"""`scaleops db ...`: the project's PostgreSQL schema."""

from __future__ import annotations

import typer

from scaleops.cli.console import connect_postgres, err, load_cli_settings

app = typer.Typer(help="The project's PostgreSQL schema (migrations).", no_args_is_help=True)


@app.command("migrate")
def migrate_command() -> None:
    """Apply every schema migration not applied yet (idempotent, safe to run concurrently)."""
    from scaleops.core.migrations import migrate

    settings = load_cli_settings()
    with connect_postgres(settings, autocommit=True) as conn:
        applied = migrate(conn)
    for migration in applied:
        err.print(f"applied {migration.version}: {migration.name}")
    err.print("schema is up to date" if not applied else f"{len(applied)} migration(s) applied")
