"""Duty backup-verification: dump, replication check, restore test, replica lag, catalog, retention,
report."""
