"""Reusable Prefect tasks, one module per external system. Each task is a thin wrapper over a plain
function in the same module that takes a client and returns data (testable without Prefect)."""
