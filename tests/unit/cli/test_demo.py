"""The demo reads each deployment run's outcome from its final state, in the CLI's words."""

from __future__ import annotations

import pytest

from scaleops.cli.demo import status_of
from scaleops.core.reporting import COMPLETED_WITH_WARNINGS, COULD_NOT_CHECK, PROBLEMS_FOUND


@pytest.mark.parametrize(
    ("state_type", "name", "expected"),
    [
        ("COMPLETED", "Completed", "ok"),
        ("COMPLETED", COMPLETED_WITH_WARNINGS, "warnings"),
        ("FAILED", PROBLEMS_FOUND, "problems"),
        ("FAILED", COULD_NOT_CHECK, "failed"),
        ("FAILED", "Failed", "crashed"),  # raised without a report
        ("CRASHED", "Crashed", "crashed"),
        ("CANCELLED", "Cancelled", "crashed"),
    ],
)
def test_a_final_state_says_what_the_run_came_to(state_type: str, name: str, expected: str) -> None:
    assert status_of(state_type, name) == expected
