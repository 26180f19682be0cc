"""Duty-specific command groups (`scaleops forecast`, `scaleops outbox`, ...), each a typer app in its
own module, registered in scaleops/cli.py with one `app.add_typer(...)` line."""
