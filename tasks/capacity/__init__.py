"""Duty capacity-forecast: metric sources, validation, models, per-series analysis, charts, report."""
