"""EVM L2 nodes for the sandbox: anvil (npm `@foundry-rs/anvil-linux-amd64`, pinned in package.json).

Three nodes: an OP-stack one (`--network optimism`, chain id 10), an Arbitrum-id one (chain id 42161) and
a zkSync-style one (chain id 324) behind scaleops.sandbox.zksync_rpc, which adds `zks_estimateFee`.
anvil has no L2 fee oracles, so `ready()` installs contracts with the real interfaces at the real
addresses with `anvil_setCode` (contracts/GasPriceOracle.sol at 0x42..0F, contracts/NodeInterface.sol at
0x..C8), funds a signer generated for this sandbox, and deploys the project's OperationLog contract from it.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from scaleops.sandbox.probes import http_json
from scaleops.sandbox.procs import owned_pid, spawn
from scaleops.sandbox.services import LOCAL, SandboxError, Service

ROOT = Path(__file__).resolve().parents[2]
ANVIL_BIN = ROOT / "node_modules" / "@foundry-rs" / "anvil-linux-amd64" / "bin" / "anvil"
ARTIFACTS = ROOT / "contracts" / "artifacts"
GAS_PRICE_ORACLE = "0x420000000000000000000000000000000000000F"
NODE_INTERFACE = "0x00000000000000000000000000000000000000C8"
FUNDING_WEI = 10_000 * 10**18


def artifact(name: str) -> dict[str, Any]:
    return dict(json.loads((ARTIFACTS / f"{name}.json").read_text()))


def keccak_hex(text: str) -> str:
    from eth_utils import keccak

    return "0x" + keccak(text=text).hex()


def operation_log_build() -> str:
    """Fingerprint of the OperationLog creation code: a sandbox redeploys when the artifact changes."""
    return keccak_hex(artifact("OperationLog")["bytecode"])


def _address_of(key: str) -> str:
    from eth_account import Account

    return str(Account.from_key(key).address)


def rpc(url: str, method: str, params: list[Any] | None = None, timeout: float = 5) -> Any:
    """One JSON-RPC call over plain HTTP; an error answer raises SandboxError naming the method."""
    body = http_json(
        "POST", url, {"jsonrpc": "2.0", "id": 1, "method": method, "params": params or []}, timeout=timeout
    )
    if "error" in body:
        raise SandboxError(f"{method}: {body['error'].get('message')}")
    return body["result"]


class Anvil(Service):
    chain: str = ""  # the SCALEOPS_CHAINS__<NAME> this node stands for
    chain_id: int = 0
    kind: str = "evm"
    base_fee_wei: int = 1_000_000
    extra_args: tuple[str, ...] = ()
    oracle: tuple[str, str] | None = None  # (address, artifact name)
    max_batch_ops = 500
    max_batch_bytes = 120_000  # geth-style pools refuse transactions over 128 KiB
    max_fee_per_batch = 10**16  # 0.01 ETH: far above a batch's fee here, far below a runaway
    confirmations = 1

    def start(self) -> None:
        if not ANVIL_BIN.exists():
            raise SandboxError(f"{self.name}: {ANVIL_BIN} is missing; run `make setup` (npm ci)")
        self.home.mkdir(parents=True, exist_ok=True)
        args = [
            str(ANVIL_BIN),
            "--host",
            LOCAL,
            "--port",
            str(self.node_port()),
            "--chain-id",
            str(self.chain_id),
            "--accounts",
            "1",
            "--block-base-fee-per-gas",
            str(self.base_fee_wei),
            "--state",
            str((self.home / "chain-state.json").resolve()),
            *self.extra_args,
        ]
        spawn(args, cwd=self.home, log=self.log, pidfile=self.node_pidfile())

    def node_port(self) -> int:
        """The port anvil itself listens on: the service's own, unless a proxy fronts it."""
        return self.port

    def node_pidfile(self) -> Path:
        return self.pidfiles()[0]

    def call(self, method: str, params: list[Any] | None = None) -> Any:
        return rpc(self.url(), method, params)

    def probe(self) -> bool:
        return int(self.call("eth_chainId"), 16) == self.chain_id

    # -- the signer and the contracts -------------------------------------------------------------------
    # key, address and build are memoised in the state: computing them imports eth_account (seconds)
    def signer_key(self) -> str:
        return self.sb.memo(f"{self.name}_signer_key", self.sb.secret(f"{self.name}_signer_seed"), keccak_hex)

    def signer_address(self) -> str:
        return self.sb.memo(f"{self.name}_signer_address", self.signer_key(), _address_of)

    def operation_log_build(self) -> str:
        return self.sb.memo("operation_log_build", artifact("OperationLog")["bytecode"], keccak_hex)

    def contract_address(self) -> str | None:
        value = self.sb.state.get("anvil_contracts", {}).get(self.name)
        return str(value) if value else None

    def ready(self) -> None:
        if self.oracle:
            address, name = self.oracle
            code = artifact(name)["deployedBytecode"]
            if self.call("eth_getCode", [address, "latest"]) != code:
                self.call("anvil_setCode", [address, code])
        signer = self.signer_address()
        if int(self.call("eth_getBalance", [signer, "latest"]), 16) < FUNDING_WEI // 2:
            self.call("anvil_setBalance", [signer, hex(FUNDING_WEI)])
        deployed = self.contract_address()
        built = self.sb.state.get("anvil_contract_builds", {}).get(self.name)
        if (
            deployed
            and built == self.operation_log_build()
            and self.name in self.sb.state.get("anvil_contract_blocks", {})
            and self.call("eth_getCode", [deployed, "latest"]) not in ("0x", "0x0", None)
        ):
            return
        # first start, a chain that lost its state, a changed contract, or a deployment block not on
        # record (sandboxes older than FROM_BLOCK): deploy the current artifact
        address, block = self.deploy_operation_log()
        self.sb.state.setdefault("anvil_contracts", {})[self.name] = address
        self.sb.state.setdefault("anvil_contract_blocks", {})[self.name] = block
        self.sb.state.setdefault("anvil_contract_builds", {})[self.name] = self.operation_log_build()
        self.sb.save()

    def deploy_operation_log(self) -> tuple[str, int]:
        """Deploy OperationLog from the signer; (its address, the block it was deployed in)."""
        import time

        from eth_abi import encode
        from eth_account import Account

        account = Account.from_key(self.signer_key())
        data = artifact("OperationLog")["bytecode"] + encode(["address"], [account.address]).hex()
        nonce = int(self.call("eth_getTransactionCount", [account.address, "pending"]), 16)
        base_fee = int(self.call("eth_getBlockByNumber", ["latest", False])["baseFeePerGas"], 16)
        tx = {
            "chainId": self.chain_id,
            "nonce": nonce,
            "gas": 1_500_000,
            "maxFeePerGas": 2 * base_fee + 10**6,
            "maxPriorityFeePerGas": 10**6,
            "data": data,
            "value": 0,
            "type": 2,
        }
        raw = account.sign_transaction(tx).raw_transaction
        tx_hash = self.call("eth_sendRawTransaction", ["0x" + raw.hex()])
        for _ in range(100):
            receipt = self.call("eth_getTransactionReceipt", [tx_hash])
            if receipt:
                if int(receipt["status"], 16) != 1:
                    raise SandboxError(f"{self.name}: OperationLog deployment reverted; see {self.log}")
                return str(receipt["contractAddress"]), int(receipt["blockNumber"], 16)
            self.call("evm_mine")
            time.sleep(0.05)
        raise SandboxError(f"{self.name}: OperationLog deployment was not mined; see {self.log}")

    def env(self) -> dict[str, str]:
        prefix = f"SCALEOPS_CHAINS__{self.chain.upper()}__"
        values = {
            "RPC_URL": self.url(),
            "CHAIN_ID": str(self.chain_id),
            "KIND": self.kind,
            "SIGNER_ADDRESS": self.signer_address(),
            "SIGNER_KEY": self.signer_key(),
            "MAX_BATCH_OPS": str(self.max_batch_ops),
            "MAX_BATCH_BYTES": str(self.max_batch_bytes),
            "MAX_FEE_PER_BATCH": str(self.max_fee_per_batch),
            "CONFIRMATIONS": str(self.confirmations),
        }
        contract = self.contract_address()
        if contract is not None:
            values["CONTRACT"] = str(contract)
            values["FROM_BLOCK"] = str(self.sb.state.get("anvil_contract_blocks", {}).get(self.name, 0))
        return {prefix + key: value for key, value in values.items()}

    def details(self) -> dict[str, Any]:
        return {"chain_id": self.chain_id, "kind": self.kind, "contract": self.contract_address()}


class AnvilOptimism(Anvil):
    name = "anvil_optimism"
    description = "anvil --network optimism (chain 10) + GasPriceOracle at 0x42..0F + OperationLog"
    chain = "optimism"
    chain_id = 10
    kind = "op"
    base_fee_wei = 1_000_000  # 0.001 gwei, an OP-stack base fee of a quiet day
    extra_args = ("--network", "optimism")
    oracle = (GAS_PRICE_ORACLE, "GasPriceOracle")


class AnvilArbitrum(Anvil):
    name = "anvil_arbitrum"
    description = "anvil (chain 42161) + NodeInterface at 0x..C8 + OperationLog"
    chain = "arbitrum"
    chain_id = 42161
    kind = "arbitrum"
    base_fee_wei = 10_000_000  # 0.01 gwei, Arbitrum One's floor
    oracle = (NODE_INTERFACE, "NodeInterface")


class AnvilZkSync(Anvil):
    """anvil on an inner port, fronted by the zks_estimateFee proxy on the service's port."""

    name = "anvil_zksync"
    description = "anvil (chain 324) behind a zks_estimateFee proxy + OperationLog"
    chain = "zksync"
    chain_id = 324
    kind = "zksync"
    base_fee_wei = 25_000_000  # 0.025 gwei, zkSync Era's base fee

    def port_keys(self) -> list[str]:
        return [self.name, f"{self.name}_node"]

    def pidfiles(self) -> list[Path]:
        return [self.home / "proxy.pid", self.home / "anvil.pid"]

    def node_port(self) -> int:
        return self.ports()[1]

    def node_pidfile(self) -> Path:
        return self.pidfiles()[1]

    def start(self) -> None:
        if owned_pid(self.node_pidfile(), self.home) is None:
            super().start()
        if owned_pid(self.pidfiles()[0], self.home) is None:
            args = [
                sys.executable,
                "-m",
                "scaleops.sandbox.zksync_rpc",
                "--host",
                LOCAL,
                "--port",
                str(self.port),
                "--upstream",
                f"http://{LOCAL}:{self.node_port()}",
            ]
            spawn(args, cwd=self.home, log=self.log, pidfile=self.pidfiles()[0])

    def probe(self) -> bool:
        fee = self.call("zks_estimateFee", [{"from": self.signer_address(), "to": self.signer_address()}])
        return super().probe() and int(fee["gas_limit"], 16) > 21_000
