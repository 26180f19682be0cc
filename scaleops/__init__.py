"""scaleops runtime: settings, clients, CLI, sandbox, retry policy, redaction and reporting."""

__version__ = "0.1.0"
