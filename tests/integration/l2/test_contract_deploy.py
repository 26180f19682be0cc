"""`scaleops l2 deploy-contract` against a sandbox anvil node, as an operator would run it for a new chain:
a dry run sends nothing; a deployment prints the settings lines, and the code at the printed address is
the committed build for this poster; re-running with that address configured verifies and deploys
nothing; an address holding another build is refused. The chain's signer is a fresh key per test (funded
with anvil_setBalance), so the duty's own signer and its nonces are left alone."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from scaleops.sandbox.anvil import rpc

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[3]
ARTIFACT = json.loads((ROOT / "contracts" / "artifacts" / "OperationLog.json").read_text())
CHAIN = "deploycheck"
PREFIX = f"SCALEOPS_CHAINS__{CHAIN.upper()}__"


class Chain:
    def __init__(self, sandbox_env: dict[str, str]):
        from eth_account import Account

        self.rpc_url = sandbox_env["SCALEOPS_CHAINS__OPTIMISM__RPC_URL"]
        self.chain_id = sandbox_env["SCALEOPS_CHAINS__OPTIMISM__CHAIN_ID"]
        self.key = "0x" + secrets.token_hex(32)
        self.signer = str(Account.from_key(self.key).address)
        self.other_contract = sandbox_env["SCALEOPS_CHAINS__OPTIMISM__CONTRACT"]  # built for another poster
        self.call("anvil_setBalance", [self.signer, hex(10**18)])

    def call(self, method: str, params: list[Any] | None = None) -> Any:
        return rpc(self.rpc_url, method, params)

    def nonce(self) -> int:
        return int(self.call("eth_getTransactionCount", [self.signer, "latest"]), 16)

    def cli(self, *args: str, **settings: str) -> subprocess.CompletedProcess[str]:
        env = {key: value for key, value in os.environ.items() if not key.startswith(PREFIX)}
        env.update(
            {
                f"{PREFIX}RPC_URL": self.rpc_url,
                f"{PREFIX}CHAIN_ID": self.chain_id,
                f"{PREFIX}KIND": "op",
                f"{PREFIX}SIGNER_KEY": self.key,
                f"{PREFIX}CONFIRMATIONS": "1",
            }
        )
        env.update({PREFIX + key.upper(): value for key, value in settings.items()})
        return subprocess.run(
            [sys.executable, "-m", "scaleops.cli", "l2", "deploy-contract", "--chain", CHAIN, *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )


@pytest.fixture
def chain(sandbox_env: dict[str, str]) -> Chain:
    return Chain(sandbox_env)


def as_in_the_artifact(code: str, poster: str) -> str:
    """Deployed runtime code with the poster immutable zeroed again, as solc leaves it in
    `deployedBytecode` (the committed artifact is checked here without the command's own method)."""
    padded = "00" * 12 + poster.lower().removeprefix("0x")
    assert padded in code, "the poster immutable is not in the deployed code"
    return code.lower().replace(padded, "00" * 32)


def test_deploy_then_verify_on_anvil(chain: Chain) -> None:
    dry = chain.cli("--dry-run", "--json")
    assert dry.returncode == 0, dry.stderr
    planned = json.loads(dry.stdout)
    assert planned["action"] == "dry-run" and planned["poster"] == chain.signer
    assert planned["gas_estimate"] > 100_000 and planned["settings"] == []
    assert chain.nonce() == 0  # nothing was sent

    deployed = chain.cli()
    assert deployed.returncode == 0, deployed.stderr
    lines = deployed.stdout.split()
    assert [line.split("=")[0] for line in lines] == [f"{PREFIX}CONTRACT", f"{PREFIX}FROM_BLOCK"]
    address, block = lines[0].split("=")[1], int(lines[1].split("=")[1])
    assert chain.nonce() == 1  # one transaction: the deployment
    code = chain.call("eth_getCode", [address, "latest"])
    assert as_in_the_artifact(code, chain.signer) == ARTIFACT["deployedBytecode"].lower()
    assert chain.call("eth_getCode", [address, hex(block - 1)]) == "0x"  # FROM_BLOCK is its block
    assert chain.call("eth_getCode", [address, hex(block)]) == code

    again = chain.cli("--json", contract=address)
    assert again.returncode == 0, again.stderr
    verified = json.loads(again.stdout)
    assert verified["action"] == "verified" and verified["problems"] == []
    assert verified["settings"] == [f"{PREFIX}CONTRACT={address}"]
    assert chain.nonce() == 1  # verified, not deployed again

    dry_again = chain.cli("--dry-run", "--json", contract=address)
    assert dry_again.returncode == 0 and json.loads(dry_again.stdout)["action"] == "verified"
    assert chain.nonce() == 1


def test_another_posters_contract_is_refused(chain: Chain) -> None:
    refused = chain.cli("--json", contract=chain.other_contract)
    assert refused.returncode == 1, refused.stderr
    result = json.loads(refused.stdout)
    assert result["action"] == "verified"
    assert any("poster() is" in problem for problem in result["problems"])
    assert any("is not contracts/artifacts/OperationLog.json" in p for p in result["problems"])
    assert chain.nonce() == 0
