"""The command line starts fast: `scaleops --help` imports neither Prefect nor the settings models."""

from __future__ import annotations

import subprocess
import sys

PROBE = """
import sys
from scaleops.cli.app import app
heavy = sorted(m for m in ("prefect", "pydantic_settings", "scaleops.core.settings", "flows", "tasks")
               if m in sys.modules)
print(",".join(heavy))
"""


def test_help_imports_no_prefect_and_no_settings() -> None:
    result = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == ""


def test_help_works_without_configuration() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "scaleops.cli", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin", "SCALEOPS_REDIS__URL": "not-a-url"},
    )
    assert result.returncode == 0, result.stderr
    assert "duties" in result.stdout
