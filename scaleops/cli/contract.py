"""`scaleops contract deploy`: put the OperationLog contract (contracts/OperationLog.sol, built as
contracts/artifacts/OperationLog.json) on a configured EVM chain with the chain's signer as its poster,
or verify the one already configured. Prints the settings lines to add."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from scaleops.cli.console import EXIT_PROBLEMS, err, fail, out, print_json, progress

app = typer.Typer(help="The OperationLog contract the l2-batch-posting duty posts to.", no_args_is_help=True)
# `scaleops l2 deploy-contract` is the same command under the duty's name (the and README's spelling)
l2_app = typer.Typer(help="The l2-batch-posting duty's chain set-up.", no_args_is_help=True)

ARTIFACT_PATH = Path("contracts") / "artifacts" / "OperationLog.json"
GAS_MARGIN = 1.2


class ContractError(RuntimeError):
    """Deploying or verifying failed; the message says where."""


def find_artifact() -> Path:
    """The committed build: beside the source tree (a checkout), else under the working directory (the
    image's /opt/scaleops, where the package itself is installed in a virtual environment)."""
    for base in (Path(__file__).resolve().parents[2], Path.cwd()):
        if (base / ARTIFACT_PATH).is_file():
            return base / ARTIFACT_PATH
    return Path.cwd() / ARTIFACT_PATH


def load_artifact(path: Path) -> dict[str, Any]:
    artifact = dict(json.loads(path.read_text()))
    if artifact.get("contractName") != "OperationLog" or not str(artifact.get("bytecode", "")).startswith(
        "0x"
    ):
        raise ContractError(f"{path}: not the OperationLog build (contractName, bytecode)")
    return artifact


def creation_code(artifact: dict[str, Any], poster: str) -> str:
    """The deployment transaction's data: creation code + the ABI-encoded constructor argument."""
    from eth_abi import encode
    from eth_utils import to_checksum_address

    return str(artifact["bytecode"]) + encode(["address"], [to_checksum_address(poster)]).hex()


def _code_hex(value: Any) -> str:
    return str(value or "0x").lower()


def verify_deployment(w3: Any, address: str, artifact: dict[str, Any], poster: str) -> list[str]:
    """Problems with the contract at `address` (empty: it is the committed build with this poster).

    The expected runtime code is what the node returns for an eth_call of the creation code with the
    same constructor argument, so the poster immutable is in place; `poster()` is checked as well."""
    from eth_utils import to_checksum_address

    from tasks.l2.evm import rpc

    deployed = _code_hex(rpc(w3, "eth_getCode", [to_checksum_address(address), "latest"]))
    if deployed in ("0x", ""):
        return [f"no contract at {address}"]
    expected = _code_hex(
        rpc(w3, "eth_call", [{"from": poster, "data": creation_code(artifact, poster)}, "latest"])
    )
    problems = []
    if deployed != expected:
        problems.append(
            f"the code at {address} is not contracts/artifacts/OperationLog.json built for poster {poster}"
            f" ({(len(deployed) - 2) // 2} bytes deployed, {(len(expected) - 2) // 2} expected)"
        )
    selector = "0x" + w3.keccak(text="poster()").hex().removeprefix("0x")[:8]
    answer = _code_hex(
        rpc(w3, "eth_call", [{"to": to_checksum_address(address), "data": selector}, "latest"])
    )
    actual = "0x" + answer[-40:] if len(answer) >= 42 else answer
    if actual != poster.lower():
        problems.append(f"poster() is {actual}, not the signer {poster}")
    return problems


def deploy(
    w3: Any, chain_id: int, key: str, data: str, *, confirmations: int, timeout: float
) -> tuple[str, int, str]:
    """Send the creation transaction from the signer, wait for its receipt and `confirmations` blocks;
    (contract address, block number, transaction hash)."""
    from eth_account import Account

    from tasks.l2.evm import quantity, rpc

    account = Account.from_key(key)
    sender = str(account.address)
    nonce = int(rpc(w3, "eth_getTransactionCount", [sender, "pending"]), 16)
    gas = int(int(rpc(w3, "eth_estimateGas", [{"from": sender, "data": data}]), 16) * GAS_MARGIN)
    base_fee = quantity(
        rpc(w3, "eth_getBlockByNumber", ["latest", False]), "baseFeePerGas", "eth_getBlockByNumber"
    )
    try:
        priority = int(rpc(w3, "eth_maxPriorityFeePerGas", []), 16)
    except Exception:
        priority = 10**6  # nodes without the method (older anvil/geth forks): a token tip
    fields = {
        "type": 2,
        "chainId": chain_id,
        "nonce": nonce,
        "gas": gas,
        "maxFeePerGas": 2 * base_fee + priority,
        "maxPriorityFeePerGas": priority,
        "data": data,
        "value": 0,
    }
    signed = account.sign_transaction(fields)
    tx_hash = "0x" + bytes(signed.hash).hex()
    rpc(w3, "eth_sendRawTransaction", ["0x" + bytes(signed.raw_transaction).hex()])
    progress(f"sent {tx_hash} (nonce {nonce}, gas {gas})")
    deadline = time.monotonic() + timeout
    receipt: dict[str, Any] | None = None
    while time.monotonic() < deadline:
        receipt = rpc(w3, "eth_getTransactionReceipt", [tx_hash])
        if receipt:
            if int(receipt["status"], 16) != 1:
                raise ContractError(f"the deployment {tx_hash} reverted")
            block = int(receipt["blockNumber"], 16)
            head = int(rpc(w3, "eth_blockNumber", []), 16)
            if head - block + 1 >= confirmations:
                from eth_utils import to_checksum_address

                return to_checksum_address(receipt["contractAddress"]), block, tx_hash
        time.sleep(1)
    state = "not mined" if not receipt else f"mined, fewer than {confirmations} confirmations"
    raise ContractError(
        f"the deployment {tx_hash} is {state} after {timeout:.0f} s; look it up before retrying"
    )


def settings_lines(chain: str, address: str, block: int | None) -> list[str]:
    prefix = f"SCALEOPS_CHAINS__{chain.upper()}__"
    lines = [f"{prefix}CONTRACT={address}"]
    if block is not None:
        lines.append(f"{prefix}FROM_BLOCK={block}")
    return lines


@l2_app.command("deploy-contract")
@app.command("deploy")
def deploy_command(
    chain: Annotated[str, typer.Option(help="chain name (SCALEOPS_CHAINS__<NAME>__...)")],
    dry_run: Annotated[bool, typer.Option("--dry-run", help="check and estimate; send nothing")] = False,
    timeout: Annotated[float, typer.Option(help="seconds to wait for the receipt and confirmations")] = 600,
    artifact_path: Annotated[
        Path | None, typer.Option("--artifact", help="the OperationLog build JSON")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the result as JSON")] = False,
) -> None:
    """Deploy OperationLog with the chain's signer as poster, wait for confirmations, verify the code
    and print the settings lines; with SCALEOPS_CHAINS__<NAME>__CONTRACT set, verify it instead."""
    from eth_account import Account

    from scaleops.cli.console import load_cli_settings
    from scaleops.core.clients import evm_client
    from tasks.l2.evm import RpcFailure

    settings = load_cli_settings()
    chain = chain.lower()
    if chain not in settings.chains:
        known = ", ".join(sorted(settings.chains)) or "none configured (SCALEOPS_CHAINS__<NAME>__...)"
        raise fail(f"--chain {chain!r}: unknown chain; known: {known}")
    cfg = settings.chains[chain]
    if cfg.kind == "solana":
        raise fail(f"--chain {chain}: a Solana chain has no OperationLog contract (it posts memos)")
    key = cfg.signer_key.get_secret_value() if cfg.signer_key else None
    poster = str(Account.from_key(key).address) if key else cfg.signer_address
    if not poster:
        raise fail(f"SCALEOPS_CHAINS__{chain.upper()}__SIGNER_KEY (or __SIGNER_ADDRESS to verify) is not set")
    if cfg.signer_address and key and cfg.signer_address.lower() != poster.lower():
        raise fail(f"SCALEOPS_CHAINS__{chain.upper()}__SIGNER_ADDRESS is not the address of its SIGNER_KEY")
    try:
        artifact = load_artifact(artifact_path or find_artifact())
    except (OSError, ValueError, ContractError) as exc:
        raise fail(f"the OperationLog build: {exc}") from None

    w3 = evm_client(settings, chain)
    try:
        node_chain_id = int(w3.provider.make_request("eth_chainId", [])["result"], 16)
        if node_chain_id != cfg.chain_id:
            raise fail(f"{chain}: the node's chain id is {node_chain_id}, the settings say {cfg.chain_id}")
        result: dict[str, Any] = {"chain": chain, "poster": poster}
        if cfg.contract:
            progress(f"{chain}: verifying the configured contract {cfg.contract}")
            problems = verify_deployment(w3, cfg.contract, artifact, poster)
            result.update(action="verified", contract=cfg.contract, problems=problems)
            _report(result, settings_lines(chain, cfg.contract, None), as_json)
            if problems:
                raise typer.Exit(EXIT_PROBLEMS)
            return
        data = creation_code(artifact, poster)
        if dry_run or not key:
            from tasks.l2.evm import rpc

            gas = int(rpc(w3, "eth_estimateGas", [{"from": poster, "data": data}]), 16)
            balance = int(rpc(w3, "eth_getBalance", [poster, "latest"]), 16)
            result.update(
                action="dry-run", gas_estimate=gas, signer_balance_wei=balance, data_bytes=len(data) // 2 - 1
            )
            _report(result, [], as_json)
            if not key:
                raise fail(
                    f"SCALEOPS_CHAINS__{chain.upper()}__SIGNER_KEY is not set: nothing can be deployed"
                )
            return
        address, block, tx_hash = deploy(
            w3, cfg.chain_id, key, data, confirmations=cfg.confirmations, timeout=timeout
        )
        problems = verify_deployment(w3, address, artifact, poster)
        result.update(action="deployed", contract=address, block=block, tx=tx_hash, problems=problems)
        _report(result, settings_lines(chain, address, block), as_json)
        if problems:
            raise typer.Exit(EXIT_PROBLEMS)
    except (RpcFailure, ContractError, OSError) as exc:  # OSError: the node does not answer
        from scaleops.core.redaction import protect

        # a provider URL's path or query may hold an API key, and connection errors quote it
        raise fail(f"{chain}: {protect(settings.secrets()).text(str(exc))}") from None


def _report(result: dict[str, Any], lines: list[str], as_json: bool) -> None:
    if as_json:
        print_json({**result, "settings": lines})
        return
    for problem in result.get("problems", []):
        err.print(f"[red]problem[/red] {problem}", highlight=False)
    if result["action"] == "dry-run":
        err.print(
            f"would deploy OperationLog on {result['chain']} from {result['poster']}:"
            f" ~{result['gas_estimate']} gas, signer balance {result['signer_balance_wei']} wei"
        )
    elif result.get("problems"):
        return  # no settings lines for a contract that is not this build
    else:
        err.print(
            f"OperationLog {result['action']} on {result['chain']} (poster {result['poster']}); settings:"
        )
    for line in lines:
        out.print(line, highlight=False)
