"""The command line's one console: data to stdout (tables, or JSON with `--json`), messages to stderr,
one width policy, and the exit codes every command shares.

Exit codes: 0 the command (or duty) completed and every check passed; 1 it completed and found
problems; 2 it failed, or its input (settings, names, parameters) was bad.
"""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING, Any

import typer
from rich.console import Console
from rich.markup import escape

if TYPE_CHECKING:  # settings import pydantic models: only commands that need them pay for it
    from scaleops.core.settings import Settings

EXIT_OK, EXIT_PROBLEMS, EXIT_FAILED = 0, 1, 2

# A terminal gets its own width; piped or captured output gets room for URLs and keys instead of
# rich's 80-column default, the same for every command.
PIPED_WIDTH = 160
out = Console(soft_wrap=True, width=None if sys.stdout.isatty() else PIPED_WIDTH)
err = Console(stderr=True, soft_wrap=True, width=None if sys.stderr.isatty() else PIPED_WIDTH)


def print_json(data: Any) -> None:
    """Machine-readable output: JSON on stdout, nothing else."""
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")


def progress(message: str) -> None:
    """A progress line on stderr (never mixed into the data on stdout)."""
    err.print(f"  {escape(message)}", highlight=False)


def fail(message: str) -> typer.Exit:
    """Print `message` as an error on stderr; return the exit (2) for the caller to raise."""
    err.print(f"[red]error[/red] {escape(message)}", highlight=False)
    return typer.Exit(EXIT_FAILED)


def load_cli_settings() -> Settings:
    """Load settings or exit 2 with one line per bad field."""
    from scaleops.core.settings import ConfigError, load_settings

    try:
        return load_settings()
    except ConfigError as exc:
        for name, message in exc.problems:
            err.print(f"[red]invalid setting[/red] {name}: {escape(message)}", highlight=False)
        raise typer.Exit(EXIT_FAILED) from None


def connect_postgres(settings: Settings, **kwargs: Any) -> Any:
    """`postgres_connect`, or exit 2 naming SCALEOPS_POSTGRES__DSN when the database does not answer
    (one line, secrets masked, no traceback)."""
    import psycopg

    from scaleops.core.clients import postgres_connect
    from scaleops.core.redaction import Redactor

    try:
        return postgres_connect(settings, **kwargs)
    except psycopg.OperationalError as exc:
        reason = " ".join(Redactor(settings.secrets()).text(str(exc)).split())
        raise fail(f"SCALEOPS_POSTGRES__DSN: cannot connect to PostgreSQL ({reason})") from None
