"""Solana for the sandbox: a JSON-RPC server backed by `solders.litesvm` (scaleops.sandbox.solana_rpc),
with a signer generated for this sandbox and funded by airdrop. State lives in memory: a restart
starts a fresh ledger."""

from __future__ import annotations

import sys
from hashlib import sha256
from typing import Any

from scaleops.sandbox.anvil import rpc
from scaleops.sandbox.procs import spawn
from scaleops.sandbox.services import LOCAL, Service

MEMO_PROGRAM = "MemoSq4gqABAXKb96qnH8TysNcWxMyWCqXgDLGmfcHr"
FUNDING_LAMPORTS = 1_000 * 10**9


def _keypair(seed: str) -> Any:
    from solders.keypair import Keypair

    return Keypair.from_seed(sha256(seed.encode()).digest())


class SolanaLiteSvm(Service):
    name = "solana"
    description = "Solana JSON-RPC backed by solders.litesvm (Memo + System programs)"

    def start(self) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        args = [
            sys.executable,
            "-m",
            "scaleops.sandbox.solana_rpc",
            "--host",
            LOCAL,
            "--port",
            str(self.port),
        ]
        spawn(args, cwd=self.home, log=self.log, pidfile=self.pidfiles()[0])

    def call(self, method: str, params: list[Any] | None = None) -> Any:
        return rpc(self.url(), method, params)

    def probe(self) -> bool:
        return bool(self.call("getHealth") == "ok")

    def keypair(self) -> Any:
        return _keypair(self.sb.secret("solana_signer_seed"))

    # memoised in the state, like the EVM signers: a healthy `up` need not import solders
    def signer_key(self) -> str:
        seed = self.sb.secret("solana_signer_seed")
        return self.sb.memo("solana_signer_key", seed, lambda s: str(_keypair(s)))

    def signer_address(self) -> str:
        seed = self.sb.secret("solana_signer_seed")
        return self.sb.memo("solana_signer_address", seed, lambda s: str(_keypair(s).pubkey()))

    def ready(self) -> None:
        signer = self.signer_address()
        if int(self.call("getBalance", [signer])["value"]) < FUNDING_LAMPORTS // 2:
            self.call("requestAirdrop", [signer, FUNDING_LAMPORTS])

    def env(self) -> dict[str, str]:
        prefix = "SCALEOPS_CHAINS__SOLANA__"
        values = {
            "RPC_URL": self.url(),
            "CHAIN_ID": "900",  # informational: Solana has no chain id; the genesis hash names a cluster
            "KIND": "solana",
            "CONTRACT": MEMO_PROGRAM,
            "SIGNER_ADDRESS": self.signer_address(),
            "SIGNER_KEY": self.signer_key(),
            "MAX_BATCH_OPS": "64",
            "MAX_BATCH_BYTES": "1232",
            "MAX_FEE_PER_BATCH": "1000000",
            "CONFIRMATIONS": "1",
        }
        return {prefix + key: value for key, value in values.items()}
