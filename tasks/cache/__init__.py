"""Duty cache-warming: the warm plan, the PostgreSQL source, the Redis side, the report."""
