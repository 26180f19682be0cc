"""Solana for the sandbox: a JSON-RPC server backed by `solders.litesvm` (scaleops.sandbox.solana_rpc),
with a signer generated for this sandbox and funded by airdrop. State lives in memory: a restart
starts a fresh ledger."""

from __future__ import annotations

import sys
from typing import Any

from scaleops.sandbox.anvil import rpc
from scaleops.sandbox.procs import spawn
from scaleops.sandbox.services import LOCAL, Service

MEMO_PROGRAM = "MemoSq4gqABAXKb96qnH8TysNcWxMyWCqXgDLGmfcHr"
FUNDING_LAMPORTS = 1_000 * 10**9


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
        from solders.keypair import Keypair

        seed = self.sb.secret("solana_signer_seed").encode()
        from hashlib import sha256

        return Keypair.from_seed(sha256(seed).digest())

    def ready(self) -> None:
        signer = str(self.keypair().pubkey())
        if int(self.call("getBalance", [signer])["value"]) < FUNDING_LAMPORTS // 2:
            self.call("requestAirdrop", [signer, FUNDING_LAMPORTS])

    def env(self) -> dict[str, str]:
        keypair = self.keypair()
        prefix = "SCALEOPS_CHAINS__SOLANA__"
        values = {
            "RPC_URL": self.url(),
            "CHAIN_ID": "900",  # informational: Solana has no chain id; the genesis hash names a cluster
            "KIND": "solana",
            "CONTRACT": MEMO_PROGRAM,
            "SIGNER_ADDRESS": str(keypair.pubkey()),
            "SIGNER_KEY": str(keypair),
            "MAX_BATCH_OPS": "64",
            "MAX_BATCH_BYTES": "1232",
            "MAX_FEE_PER_BATCH": "1000000",
            "CONFIRMATIONS": "1",
        }
        return {prefix + key: value for key, value in values.items()}
