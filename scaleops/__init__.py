"""scaleops runtime: `core/` (settings, clients, retry, redaction, reporting, duties), `cli/` (the command
line), `ops/` (alert bridge, backfills) and `sandbox/` (local real services)."""

__version__ = "0.1.0"
