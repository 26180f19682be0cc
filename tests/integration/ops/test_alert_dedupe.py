"""The alert bridge's durable dedupe against the sandbox's PostgreSQL: a repeat is emitted once, across
a bridge restart, under concurrent identical webhooks, and a claim left by a crashed request goes stale."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import httpx
from starlette.testclient import TestClient

from scaleops.ops.alert_bridge import (
    BridgeMetrics,
    Emission,
    PostgresDedupe,
    create_app,
)
from tests.bridge_sinks import RecordingSink

TOKEN = "dedupe-test-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def webhook(fingerprint: str, status: str = "firing", starts: str = "2026-11-26T10:00:00Z") -> dict[str, Any]:
    return {
        "version": "4",
        "status": status,
        "receiver": "scaleops",
        "alerts": [
            {
                "status": status,
                "labels": {"alertname": "BackupMissing", "database": "app"},
                "startsAt": starts,
                "endsAt": "0001-01-01T00:00:00Z" if status == "firing" else "2026-11-26T12:00:00Z",
                "fingerprint": fingerprint,
            }
        ],
    }


def rows(dsn: str) -> list[tuple[Any, ...]]:
    import psycopg

    with psycopg.connect(dsn) as conn:
        return conn.execute(
            "select fingerprint, starts_at, status, state, repeats from alert_emissions order by status"
        ).fetchall()


def bridge(sink: RecordingSink, dsn: str, **kwargs: Any) -> TestClient:
    """A bridge process: entering the client runs its start-up (migrate, open the pool)."""
    app = create_app(sink, token=TOKEN, dedupe=PostgresDedupe(dsn, **kwargs), metrics=BridgeMetrics())  # type: ignore[arg-type]
    return TestClient(app)


def test_a_repeat_is_emitted_once_across_a_bridge_restart(store_dsn: str) -> None:
    fingerprint = uuid.uuid4().hex[:16]
    sink = RecordingSink()
    with bridge(sink, store_dsn) as first:
        answer = first.post("/alertmanager", json=webhook(fingerprint), headers=AUTH)
        assert answer.status_code == 202
        assert first.post("/alertmanager", json=webhook(fingerprint), headers=AUTH).json() == answer.json()
    assert len(sink.events) == 1
    # the bridge restarts (and Prefect's 30-minute seen-cache would be gone too): Alertmanager repeats
    with bridge(sink, store_dsn) as second:
        again = second.post("/alertmanager", json=webhook(fingerprint), headers=AUTH)
        assert again.status_code == 202 and again.json() == answer.json()
        assert len(sink.events) == 1, "a repeat after a restart was emitted again"
        assert 'scaleops_alerts_deduplicated_total{source="alertmanager"} 1.0' in second.get("/metrics").text
        # resolution is a new status: emitted once; a new start (the alert fired again) is a new alert
        assert (
            second.post("/alertmanager", json=webhook(fingerprint, "resolved"), headers=AUTH).status_code
            == 202
        )
        refired = webhook(fingerprint, starts="2026-11-27T10:00:00Z")
        assert second.post("/alertmanager", json=refired, headers=AUTH).status_code == 202
    assert [e["event"] for e in sink.events] == [
        "scaleops.alert.firing",
        "scaleops.alert.resolved",
        "scaleops.alert.firing",
    ]
    stored = rows(store_dsn)
    assert len(stored) == 3 and {r[3] for r in stored} == {"emitted"}
    assert sorted(r[4] for r in stored) == [0, 0, 2]  # the first firing was repeated twice


def test_concurrent_identical_webhooks_emit_once(store_dsn: str) -> None:
    fingerprint = uuid.uuid4().hex[:16]
    sink = RecordingSink()
    app = create_app(sink, token=TOKEN, dedupe=PostgresDedupe(store_dsn))  # type: ignore[arg-type]

    async def storm() -> list[int]:
        transport = httpx.ASGITransport(app=app)
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(transport=transport, base_url="http://bridge") as client,
        ):
            answers = await asyncio.gather(
                *(client.post("/alertmanager", json=webhook(fingerprint), headers=AUTH) for _ in range(30))
            )
        return [a.status_code for a in answers]

    assert asyncio.run(storm()) == [202] * 30
    assert len(sink.events) == 1


def test_a_failed_send_is_emitted_by_the_senders_retry(store_dsn: str) -> None:
    fingerprint = uuid.uuid4().hex[:16]
    with bridge(RecordingSink(fail=True), store_dsn) as down:
        assert down.post("/alertmanager", json=webhook(fingerprint), headers=AUTH).status_code == 503
    assert rows(store_dsn) == []  # the claim was released
    sink = RecordingSink()
    with bridge(sink, store_dsn) as up:
        assert up.post("/alertmanager", json=webhook(fingerprint), headers=AUTH).status_code == 202
    assert len(sink.events) == 1


def test_a_claim_left_by_a_crashed_request_goes_stale(store_dsn: str) -> None:
    """A bridge killed between claim and send left a 'claimed' row: after claim_seconds a repeat emits."""
    from datetime import UTC, datetime

    fingerprint = uuid.uuid4().hex[:16]
    sink = RecordingSink()
    with bridge(sink, store_dsn, claim_seconds=1) as client:
        from scaleops.ops.alert_bridge import Alert, event_id

        alert = Alert.model_validate(webhook(fingerprint)["alerts"][0])
        crashed = PostgresDedupe(store_dsn, migrate=False)

        async def claim_and_die() -> set[str]:
            await crashed.pool.open()
            try:
                return await crashed.claim([Emission.of(alert)], "alertmanager")
            finally:
                await crashed.close()

        assert asyncio.run(claim_and_die()) == {event_id(alert)}
        assert client.post("/alertmanager", json=webhook(fingerprint), headers=AUTH).status_code == 202
        assert sink.events == []  # claimed a moment ago: the crashed request might still send it
        time.sleep(1.2)
        assert client.post("/alertmanager", json=webhook(fingerprint), headers=AUTH).status_code == 202
        assert [e["id"] for e in sink.events] == [event_id(alert)]
    assert rows(store_dsn)[0][3] == "emitted"
    assert rows(store_dsn)[0][1] == datetime(2026, 11, 26, 10, tzinfo=UTC)


def test_an_unreachable_store_still_emits() -> None:
    """PostgreSQL down: the bridge emits anyway (and counts it), it does not answer 5xx."""
    sink = RecordingSink()
    dead = "postgresql://postgres@127.0.0.1:1/postgres"
    with bridge(sink, dead, timeout=0.5) as client:
        started = time.monotonic()
        assert (
            client.post("/alertmanager", json=webhook(uuid.uuid4().hex[:16]), headers=AUTH).status_code == 202
        )
        assert time.monotonic() - started < 5
        assert "scaleops_alerts_dedupe_errors_total 1.0" in client.get("/metrics").text
    assert len(sink.events) == 1


def test_a_held_migration_lock_does_not_keep_the_bridge_from_serving(store_dsn: str) -> None:
    """Another process migrating (or stuck holding the lock): the bridge starts anyway and emits."""
    import psycopg

    from scaleops.core.migrations import MIGRATION_LOCK

    sink = RecordingSink()
    with psycopg.connect(store_dsn, autocommit=True) as holder:
        holder.execute("select pg_advisory_lock(%s)", (MIGRATION_LOCK,))
        started = time.monotonic()
        with bridge(sink, store_dsn, migrate_lock_timeout=1) as client:
            assert time.monotonic() - started < 10
            answer = client.post("/alertmanager", json=webhook(uuid.uuid4().hex[:16]), headers=AUTH)
            assert answer.status_code == 202
            assert "scaleops_alerts_dedupe_errors_total 1.0" in client.get("/metrics").text
    assert len(sink.events) == 1
