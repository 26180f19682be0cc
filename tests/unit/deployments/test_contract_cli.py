"""`scaleops contract deploy`'s plain parts without a node: the creation code, the artifact check, the
verification against a node's answers (a fake provider), the settings lines and the refusals."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner
from web3 import Web3

from scaleops.cli.app import app
from scaleops.cli.contract import (
    ContractError,
    creation_code,
    find_artifact,
    load_artifact,
    settings_lines,
    verify_deployment,
)

POSTER = "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266"
ADDRESS = "0x5FbDB2315678afecb367f032d93F642f64180aa3"
ARTIFACT = load_artifact(find_artifact())


class FakeProvider:
    def __init__(self, answers: dict[str, Any]):
        self.answers = answers
        self.calls: list[tuple[str, list[Any]]] = []

    def make_request(self, method: str, params: list[Any]) -> dict[str, Any]:
        self.calls.append((method, params))
        key = method
        if method == "eth_call":
            key = "eth_call:create" if "to" not in params[0] else "eth_call:" + params[0]["data"]
        return {"jsonrpc": "2.0", "id": 1, "result": self.answers[key]}


class FakeW3:
    keccak = staticmethod(Web3.keccak)

    def __init__(self, answers: dict[str, Any]):
        self.provider = FakeProvider(answers)


RUNTIME = "0x6080604052" + "00" * 12 + POSTER[2:].lower() + "5b00"
POSTER_SELECTOR = "0x" + Web3.keccak(text="poster()").hex().removeprefix("0x")[:8]


def answers(**overrides: Any) -> dict[str, Any]:
    base = {
        "eth_getCode": RUNTIME,
        "eth_call:create": RUNTIME,
        f"eth_call:{POSTER_SELECTOR}": "0x" + "00" * 12 + POSTER[2:].lower(),
    }
    return {**base, **overrides}


def test_creation_code_is_the_build_plus_the_poster() -> None:
    data = creation_code(ARTIFACT, POSTER.lower())
    assert data.startswith(ARTIFACT["bytecode"])
    assert data[len(ARTIFACT["bytecode"]) :] == "00" * 12 + POSTER[2:].lower()


def test_load_artifact_refuses_another_build(tmp_path: Path) -> None:
    other = tmp_path / "Other.json"
    other.write_text(json.dumps({"contractName": "GasPriceOracle", "bytecode": "0x00"}))
    with pytest.raises(ContractError, match="not the OperationLog build"):
        load_artifact(other)


def test_verified_when_code_and_poster_match() -> None:
    w3 = FakeW3(answers())
    assert verify_deployment(w3, ADDRESS, ARTIFACT, POSTER) == []
    (create,) = [p for m, p in w3.provider.calls if m == "eth_call" and "to" not in p[0]]
    assert create[0]["data"] == creation_code(ARTIFACT, POSTER)  # expected code: the build, this poster


def test_other_code_or_poster_are_problems() -> None:
    other = "0x" + "00" * 12 + "70997970c51812dc3a010c7d01b50e0d17dc79c8"
    problems = verify_deployment(
        FakeW3(answers(eth_getCode=RUNTIME + "00", **{f"eth_call:{POSTER_SELECTOR}": other})),
        ADDRESS,
        ARTIFACT,
        POSTER,
    )
    assert len(problems) == 2
    assert "is not contracts/artifacts/OperationLog.json" in problems[0] and "poster() is" in problems[1]


def test_no_code_is_a_problem() -> None:
    assert verify_deployment(FakeW3(answers(eth_getCode="0x")), ADDRESS, ARTIFACT, POSTER) == [
        f"no contract at {ADDRESS}"
    ]


def test_settings_lines() -> None:
    assert settings_lines("base", ADDRESS, 1234) == [
        f"SCALEOPS_CHAINS__BASE__CONTRACT={ADDRESS}",
        "SCALEOPS_CHAINS__BASE__FROM_BLOCK=1234",
    ]
    assert settings_lines("base", ADDRESS, None) == [f"SCALEOPS_CHAINS__BASE__CONTRACT={ADDRESS}"]


def test_refuses_unknown_and_solana_chains(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SCALEOPS_CHAINS__SOL__RPC_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("SCALEOPS_CHAINS__SOL__CHAIN_ID", "101")
    monkeypatch.setenv("SCALEOPS_CHAINS__SOL__KIND", "solana")
    runner = CliRunner()
    unknown = runner.invoke(app, ["contract", "deploy", "--chain", "nope"])
    assert unknown.exit_code == 2 and "unknown chain" in unknown.output
    solana = runner.invoke(app, ["contract", "deploy", "--chain", "sol"])
    assert solana.exit_code == 2 and "Solana" in solana.output


def test_needs_a_signer(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SCALEOPS_CHAINS__BASE__RPC_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("SCALEOPS_CHAINS__BASE__CHAIN_ID", "8453")
    result = CliRunner().invoke(app, ["contract", "deploy", "--chain", "base"])
    assert result.exit_code == 2 and "SIGNER_KEY" in result.output


def test_a_provider_key_in_the_rpc_url_is_masked_in_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SCALEOPS_CHAINS__BASE__RPC_URL", "http://127.0.0.1:9/v2/providerkey0123456789")
    monkeypatch.setenv("SCALEOPS_CHAINS__BASE__CHAIN_ID", "8453")
    monkeypatch.setenv("SCALEOPS_CHAINS__BASE__SIGNER_KEY", "0x" + "11" * 32)
    result = CliRunner().invoke(app, ["contract", "deploy", "--chain", "base"])
    assert result.exit_code == 2 and "base:" in result.output
    assert "providerkey0123456789" not in result.output and "11" * 32 not in result.output


def test_l2_deploy_contract_is_the_same_command() -> None:
    runner = CliRunner()
    for args in (["l2", "deploy-contract"], ["contract", "deploy"]):
        result = runner.invoke(app, [*args, "--chain", "nope"])
        assert result.exit_code == 2 and "--chain 'nope': unknown chain" in result.output, args
