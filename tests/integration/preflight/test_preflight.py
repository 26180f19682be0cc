"""`scaleops run preflight` end to end against the sandbox, through the real CLI and exit codes."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from scaleops.sandbox.procs import free_port

pytestmark = pytest.mark.integration


def run_cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "scaleops.cli", *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=180,
    )


def test_all_systems_answer(sandbox_env: dict[str, str]) -> None:
    result = run_cli(sandbox_env, "run", "preflight", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["ok"] is True
    systems = {c["system"]: c for c in report["checks"]}
    chains = {f"chain_{name.split('__')[1].lower()}" for name in sandbox_env if name.endswith("__RPC_URL")}
    assert chains >= {"chain_optimism", "chain_arbitrum"}
    assert (
        set(systems)
        == {
            "postgres_primary",
            "postgres_replica",
            "redis_standalone",
            "redis_cluster",
            "s3_primary",
            "s3_replica",
            "prometheus",
            "alertmanager",
            "alert_bridge",
        }
        | chains
    )
    assert systems["postgres_replica"]["facts"]["in_recovery"] is True
    # the password is in the environment, never in the output
    password = sandbox_env["SCALEOPS_POSTGRES__DSN"].split(":")[2].split("@")[0]
    assert password not in result.stdout + result.stderr


def test_a_system_down_could_not_be_checked_exit_2_naming_its_setting(sandbox_env: dict[str, str]) -> None:
    """A wrong endpoint ends preflight as every duty: 'could not check', exit 2, the variable named."""
    dead = f"redis://127.0.0.1:{free_port()}"
    result = run_cli({**sandbox_env, "SCALEOPS_REDIS__URL": f"{dead}/0"}, "run", "preflight", "--json")
    assert result.returncode == 2, result.stderr
    report = json.loads(result.stdout)
    assert report["ok"] is False and report["problems"] == []
    assert [s for s in report["failed_steps"] if s.startswith("redis_standalone")] == [
        f"redis_standalone: SCALEOPS_REDIS__URL: connection refused at {dead}"
    ], report["failed_steps"]


def test_replica_pointed_at_primary_is_caught(sandbox_env: dict[str, str]) -> None:
    env = {**sandbox_env, "SCALEOPS_POSTGRES__REPLICA_DSN": sandbox_env["SCALEOPS_POSTGRES__DSN"]}
    result = run_cli(env, "run", "preflight", "--param", 'systems=["postgres_replica"]', "--json")
    assert result.returncode == 1
    assert "in recovery" in json.loads(result.stdout)["problems"][0]


def test_bad_settings_and_bad_params_exit_2(sandbox_env: dict[str, str]) -> None:
    bad_settings = run_cli({**sandbox_env, "SCALEOPS_REDIS__URL": "redis//nope"}, "run", "preflight")
    assert bad_settings.returncode == 2
    assert "SCALEOPS_REDIS__URL" in bad_settings.stderr
    bad_param = run_cli(sandbox_env, "run", "preflight", "--param", "systems=7")
    assert bad_param.returncode == 2
    assert "systems" in bad_param.stderr


def test_a_wrong_chain_endpoint_is_named_by_its_setting(sandbox_env: dict[str, str]) -> None:
    env = {**sandbox_env, "SCALEOPS_CHAINS__OPTIMISM__RPC_URL": f"http://127.0.0.1:{free_port()}"}
    result = run_cli(env, "run", "preflight", "--json", "--param", 'systems=["chains", "alert_bridge"]')
    assert result.returncode == 2, result.stderr
    report = json.loads(result.stdout)
    failed = {c["system"]: c["detail"] for c in report["checks"] if not c["ok"]}
    assert list(failed) == ["chain_optimism"], report["checks"]
    assert failed["chain_optimism"].startswith(
        "SCALEOPS_CHAINS__OPTIMISM__RPC_URL: connection refused at http://127.0.0.1:"
    )
    assert {c["system"] for c in report["checks"] if c["ok"]} >= {"chain_arbitrum", "alert_bridge"}
