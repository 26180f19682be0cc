"""prefect.yaml is the single place schedules, triggers and alert mappings live: check it is coherent
with the duty registry, the flows, the README and the example alert rules."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from scaleops.core.duties import all_duties

ROOT = Path(__file__).resolve().parents[3]
CONFIG = yaml.safe_load((ROOT / "prefect.yaml").read_text())
DEPLOYMENTS: list[dict[str, Any]] = CONFIG["deployments"]


def alert_mapping() -> dict[str, str]:
    """alertname -> deployment, from the deployments' alert triggers."""
    mapping: dict[str, str] = {}
    for dep in DEPLOYMENTS:
        for trigger in dep.get("triggers", []):
            if "scaleops.alert.firing" in trigger.get("expect", []):
                for name in trigger["match"]["alertname"]:
                    assert name not in mapping, f"{name} is mapped twice"
                    mapping[name] = dep["name"]
    return mapping


def test_one_deployment_per_duty() -> None:
    assert sorted(d["name"] for d in DEPLOYMENTS) == sorted(all_duties())


@pytest.mark.parametrize("dep", DEPLOYMENTS, ids=lambda d: d["name"])
def test_deployment_is_complete(dep: dict[str, Any]) -> None:
    module, _, attribute = dep["entrypoint"].partition(":")
    assert (ROOT / module).is_file()
    assert all_duties()[dep["name"]].load().name == dep["name"]
    assert all_duties()[dep["name"]].flow == f"{module.removesuffix('.py').replace('/', '.')}:{attribute}"
    assert dep["description"] and "scaleops" in dep["tags"]
    assert dep["work_pool"]["name"] == "scaleops"
    for schedule in dep["schedules"]:
        assert schedule["cron"] and schedule["timezone"]
    assert dep["concurrency_limit"]["limit"] >= 1
    assert dep["concurrency_limit"]["collision_strategy"] == "ENQUEUE"  # CANCEL_NEW would cancel backfills
    flow_parameters = set(all_duties()[dep["name"]].load().parameters.properties)
    assert set(dep.get("parameters", {})) <= flow_parameters
    for trigger in dep.get("triggers", []):
        assert set(trigger.get("parameters", {})) <= flow_parameters
        # automations are named after what they do, not <deployment>__automation_N
        assert trigger["name"].startswith(f"{dep['name']} ") and trigger.get("description")
        if "scaleops.alert.firing" in trigger.get("expect", []):  # alert runs work on now, with the alert
            # labels may map to other parameters (test_alert_parameters.py), never to as_of
            assert trigger["parameters"]["alert"] == "{{ event.payload }}"
            assert "as_of" not in trigger["parameters"]


def test_readme_documents_the_alert_mapping() -> None:
    readme = (ROOT / "README.md").read_text()
    table = readme.split("| alert | deployment |", 1)[1].split("\n\n", 1)[0]
    rows = dict(re.findall(r"^\| `(\w+)` \| `([\w-]+)` \|", table, flags=re.MULTILINE))
    assert rows == alert_mapping()


def test_example_alert_rules_cover_every_mapped_alert() -> None:
    rules = yaml.safe_load((ROOT / "deployments/prometheus/alert-rules.yml").read_text())
    defined = {rule["alert"] for group in rules["groups"] for rule in group["rules"]}
    assert set(alert_mapping()) <= defined
    routed = (ROOT / "deployments/alertmanager/alertmanager.yml").read_text()
    for name in alert_mapping():
        assert name in routed


def test_example_configs_are_valid() -> None:
    promtool, amtool = shutil.which("promtool"), shutil.which("amtool")
    assert promtool and amtool, "make setup installs prometheus and prometheus-alertmanager"
    rules = subprocess.run([promtool, "check", "rules", str(ROOT / "deployments/prometheus/alert-rules.yml")])
    assert rules.returncode == 0
    config = subprocess.run([amtool, "check-config", str(ROOT / "deployments/alertmanager/alertmanager.yml")])
    assert config.returncode == 0


@pytest.mark.parametrize("name", sorted(all_duties()))
def test_every_parameter_has_a_description_in_the_ui(name: str) -> None:
    """Prefect's deployment form shows each parameter's description (the flow's Google-style Args)."""
    properties = all_duties()[name].load().parameters.properties
    undocumented = sorted(p for p, schema in properties.items() if not schema.get("description"))
    assert not undocumented, f"{name}: add these to the flow docstring's Args: {undocumented}"
