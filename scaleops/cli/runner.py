"""Run a duty's flow by name with `key=value` parameters: what `scaleops run` and the demo call.

Exit codes: 0 the duty ran and every check passed (warnings are printed); 1 it ran and found problems
of error severity (its flow run ended Failed, "Problems found"); 2 it could not run or check, or its
input (settings, duty name, parameters) was bad.
"""

from __future__ import annotations

import gc
import json
from typing import Any

from scaleops.cli.console import EXIT_FAILED, EXIT_OK, EXIT_PROBLEMS
from scaleops.core.duties import get_duty
from scaleops.core.reporting import COULD_NOT_CHECK, PROBLEMS_FOUND, DutyReport, report_of


class BadInput(ValueError):
    """The duty name or a parameter is wrong; the message names it."""


class DutyFailed(RuntimeError):
    """The flow run ended in a failed or crashed state."""


def parse_params(pairs: list[str]) -> dict[str, Any]:
    """`["limit=10", "dry_run=false", "name=x"]` -> values parsed as JSON where they are JSON."""
    params: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        key = key.strip()
        if not sep or not key:
            raise BadInput(f"--param {pair!r}: expected key=value")
        try:
            params[key] = json.loads(raw)
        except ValueError:
            params[key] = raw
    return params


def check_params(flow: Any, duty: str, params: dict[str, Any]) -> None:
    """Unknown names and wrong types fail here, before any flow run is created."""
    known = set(flow.parameters.properties)
    unknown = sorted(set(params) - known)
    if unknown:
        listed = ", ".join(sorted(known)) or "none"
        raise BadInput(f"unknown parameter(s) for {duty}: {', '.join(unknown)}; known: {listed}")
    try:
        flow.validate_parameters(params)
    except Exception as exc:  # prefect's ParameterTypeError names the field and the expected type
        raise BadInput(f"bad parameter for {duty}: {exc}") from None


def run_duty(name: str, params: dict[str, Any]) -> DutyReport:
    """Run the duty's flow in this process (against PREFECT_API_URL when set); return its report."""
    gc.disable()  # the imports (Prefect, the duty's clients) make no garbage: ~25% faster without it
    try:
        duty = get_duty(name)
        flow = duty.load()
    except KeyError as exc:
        raise BadInput(str(exc.args[0])) from None
    finally:
        gc.enable()
    check_params(flow, name, params)
    # `scaleops run` runs one flow and exits. What the imports built lives until the exit: frozen, the
    # cyclic collector never walks it again, during the run nor in the interpreter's final collection
    # (1.5-3.5 s of every exit here, 0.3-0.5 s with both freezes).
    gc.freeze()
    state = flow(**params, return_state=True)
    gc.freeze()  # and what the run leaves for the exit
    report = (
        report_of(state) if state.is_completed() or state.name in (PROBLEMS_FOUND, COULD_NOT_CHECK) else None
    )
    if report is None:
        raise DutyFailed(f"{name}: flow run ended {state.name}: {state.message or ''}".strip())
    return report


def exit_code(report: DutyReport) -> int:
    """0 ok (warnings are printed, not failed), 1 problems of error severity found, 2 a step failed."""
    if report.failed_steps:
        return EXIT_FAILED
    return EXIT_PROBLEMS if report.problems else EXIT_OK
