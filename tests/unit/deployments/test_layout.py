"""The layout is a contract: every duty's tasks package and flow module is under the import-linter
independence contracts in pyproject.toml, so a new duty cannot slip out of `make lint`."""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
CONTRACTS = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]


def independent(prefix: str) -> set[str]:
    found = [set(c["modules"]) for c in CONTRACTS if c["type"] == "independence"]
    return {m for modules in found for m in modules if m.startswith(prefix)}


def test_every_duty_tasks_package_is_independent() -> None:
    packages = {f"tasks.{p.name}" for p in (ROOT / "tasks").iterdir() if (p / "__init__.py").is_file()}
    assert independent("tasks.") == packages - {"tasks.common"}


def test_every_flow_module_is_independent() -> None:
    modules = {f"flows.{p.stem}" for p in (ROOT / "flows").glob("*.py") if p.stem != "__init__"}
    assert independent("flows.") == modules


def test_layers_are_cli_flows_tasks_core() -> None:
    (layers,) = [c["layers"] for c in CONTRACTS if c["type"] == "layers"]
    assert layers[0] == "scaleops.cli" and "flows" in layers[1] and layers[2:] == ["tasks", "scaleops.core"]
