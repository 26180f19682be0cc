"""Flow-run heartbeats (scaleops.core.heartbeats): the same events as Prefect's own, and a thread that
ends when the run does instead of sleeping out its last second."""

from __future__ import annotations

import inspect
import threading
from typing import Any

import pytest

from scaleops.core import heartbeats


class Run:
    def __init__(self) -> None:
        self.final = False

    @property
    def state(self) -> Any:
        final = self.final

        class State:
            def is_final(self) -> bool:
                return final

        return State()


class Engine:
    """What the flow engine gives `_send_heartbeats`: the interval, the event template, the emitter."""

    def __init__(self, seconds: int | None = 30) -> None:
        self.heartbeat_seconds = seconds
        self.flow_run = Run()
        self.sent: list[tuple[Any, Any]] = []
        self.first = threading.Event()
        self.logger = __import__("logging").getLogger("test")

    def _build_heartbeat_event_template(self) -> tuple[dict[str, str], list[Any]]:
        return {"prefect.resource.id": "prefect.flow-run.x"}, []

    def _emit_flow_run_heartbeat(self, resource: Any, related: Any) -> None:
        self.sent.append((resource, related))
        self.first.set()


def test_a_heartbeat_goes_out_at_the_start_and_the_thread_ends_with_the_run(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Prefect's loop sleeps in time.sleep(1) steps; ours must not depend on sleeping at all
    monkeypatch.setattr("time.sleep", lambda _s: threading.Event().wait())
    engine = Engine()
    before = set(threading.enumerate())
    with heartbeats.send_heartbeats(engine):
        assert engine.first.wait(10)
        (thread,) = set(threading.enumerate()) - before
    assert not thread.is_alive()  # joined: it woke on the stop event
    assert engine.sent == [({"prefect.resource.id": "prefect.flow-run.x"}, [])]


def test_no_heartbeats_when_they_are_switched_off_nor_once_the_run_is_final() -> None:
    off = Engine(seconds=None)
    with heartbeats.send_heartbeats(off):
        pass
    assert off.sent == []
    final = Engine()
    final.flow_run.final = True
    with heartbeats.send_heartbeats(final):
        pass
    assert final.sent == []


def test_installed_over_the_prefect_function_it_was_written_for() -> None:
    import prefect.flow_engine as engine

    original = heartbeats.replaced or engine._send_heartbeats
    assert list(inspect.signature(original).parameters) == heartbeats.EXPECTED_PARAMETERS
    try:
        engine._send_heartbeats = original
        assert heartbeats.install()
        assert engine._send_heartbeats is heartbeats.send_heartbeats
        assert heartbeats.replaced is original
        # the engine calls it by its module-level name, which is what install() replaces
        assert "_send_heartbeats(self" in inspect.getsource(engine.FlowRunEngine)
    finally:
        engine._send_heartbeats = original


def test_prefect_function_of_another_shape_is_left_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    import prefect.flow_engine as engine

    def other(engine: Any, join_on_exit: bool = True, extra: int = 0) -> None: ...

    monkeypatch.setattr(engine, "_send_heartbeats", other)
    assert heartbeats.install() is False
    assert engine._send_heartbeats is other


def test_every_duty_runs_with_these_heartbeats(monkeypatch: pytest.MonkeyPatch) -> None:
    import prefect.flow_engine as engine

    from scaleops.core.duties import duty
    from scaleops.core.reporting import DutyReport

    monkeypatch.setattr(engine, "_send_heartbeats", heartbeats.replaced or engine._send_heartbeats)
    assert engine._send_heartbeats is not heartbeats.send_heartbeats
    duty("heartbeat-test", namespace="test", report=DutyReport, summary="declaring a duty installs them")
    assert engine._send_heartbeats is heartbeats.send_heartbeats
