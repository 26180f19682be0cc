"""Duty preflight: the report; the probes themselves are shared (tasks/common/health.py)."""
