"""The sandbox's one alert bridge coalesces alerts per duty for SCALEOPS_ALERTS__COALESCE_SECONDS (600 s):
an e2e test that needs its alert to start a run first closes the duty's open window, as if the time had
passed (tests post alerts for the same duty minutes apart, against the same bridge)."""

from __future__ import annotations

import psycopg


def close_alert_windows(env: dict[str, str], duty: str) -> None:
    with psycopg.connect(env["SCALEOPS_POSTGRES__DSN"], autocommit=True) as conn:
        if conn.execute("select to_regclass('alert_windows')").fetchone() in (None, (None,)):
            return  # the bridge has not created its store (yet): nothing is coalesced
        conn.execute(
            "update alert_windows set closes_at = now() where duty = %s and closes_at > now()", (duty,)
        )
