"""Arweave for the sandbox: arlocal (npm `arlocal`, pinned in package.json with the `avsc` override),
started by a small Node script that also mines a block every few seconds, so confirmations arrive.

`ready()` makes an archive wallet for this sandbox (an Arweave JWK, kept in the sandbox state) and funds
it with `/mint`; `env()` exports every SCALEOPS_ARCHIVE__* setting that points at it.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path
from typing import Any

from scaleops.sandbox.probes import http_request
from scaleops.sandbox.procs import spawn
from scaleops.sandbox.services import LOCAL, SandboxError, Service

ROOT = Path(__file__).resolve().parents[2]
ARLOCAL = ROOT / "node_modules" / "arlocal" / "bin" / "app.js"
MINE_EVERY_MS = 2000
FUNDING_WINSTON = 10**15  # 1000 AR
# what the sandbox's archive settings say (confirmations arrive every MINE_EVERY_MS)
CONFIRMATIONS = 2
DROP_AFTER_BLOCKS = 5
MAX_BUNDLE_BYTES = 2 * 1024 * 1024

LAUNCHER = """
// scaleops sandbox: arlocal + a miner (one block every MINE_EVERY_MS)
const path = require('path');
const ArLocal = require(process.env.ARLOCAL).default;
const { ChunkDB } = require(path.join(path.dirname(process.env.ARLOCAL), 'db', 'chunks.js'));
const port = +process.env.PORT;
const every = +process.env.MINE_EVERY_MS;

// Speed-ups for a throwaway test gateway (issue 14, benchmarks), arlocal's own code untouched. Profiled
// under the archive bench, POST /tx of an ANS-104 bundle was mostly waiting on SQLite: arlocal writes each
// bundled item with ~8 statements, each its own autocommit (one fsync each), and for every bundle it reads
// *all* of `chunks` (every byte ever posted, base64) sorted by offset to take the first row
// (ChunkDB.getLastChunkOffset: no LIMIT, no index), so a post got slower as the db grew.
//  - journal_mode=WAL + synchronous=OFF: no fsync per statement. A sandbox may lose its last writes on an
//    OS crash (not on a process crash); it holds nothing that is not re-made (`sandbox up` re-funds).
//  - indexes arlocal lacks: chunks(offset), chunks(data_root, data_size) (chunk lookups of a bundle),
//    transactions(block) (the miner's "pending" query). Created IF NOT EXISTS: harmless on its schema.
//  - getLastChunkOffset reads the same row (the largest offset) with LIMIT 1 instead of every row.
// Applied only after start(): a query before it creates db.sqlite, and arlocal then skips making its tables.
async function tune(db) {
  const pragmas = ['PRAGMA journal_mode=WAL', 'PRAGMA synchronous=OFF', 'PRAGMA cache_size=-65536'];
  for (const sql of pragmas) await db.raw(sql);
  // synchronous and cache_size are per connection: also on any connection knex's pool opens later
  db.client.pool.on('createSuccess', (_id, conn) => { for (const sql of pragmas) conn.run(sql); });
  await db.raw('CREATE INDEX IF NOT EXISTS scaleops_chunks_offset ON chunks ("offset")');
  await db.raw('CREATE INDEX IF NOT EXISTS scaleops_chunks_root ON chunks (data_root, data_size)');
  await db.raw('CREATE INDEX IF NOT EXISTS scaleops_transactions_block ON transactions (block)');
  ChunkDB.prototype.getLastChunkOffset = async function () {
    const chunk = await this.connection('chunks').select('offset').orderBy('offset', 'desc').first();
    return !chunk || !chunk.offset ? 0 : chunk.offset;
  };
}

(async () => {
  const node = new ArLocal(port, false, process.env.DB_PATH, true);
  await node.start();
  await tune(node.connection);
  console.log(`arlocal on 127.0.0.1:${port}, mining every ${every} ms`);
  setInterval(() => { fetch(`http://127.0.0.1:${port}/mine`).catch(() => {}); }, every);
  const stop = async () => { try { await node.stop(); } finally { process.exit(0); } };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
})().catch((err) => { console.error(err); process.exit(1); });
"""


def _wallet_address(jwk: str) -> str:
    from tasks.archive.ans104 import wallet_from_jwk  # imported only when the memo is computed

    return wallet_from_jwk(jwk).address


def _new_jwk(_seed: str) -> str:
    from tasks.archive.ans104 import generate_jwk

    return json.dumps(generate_jwk())


class Arlocal(Service):
    name = "arlocal"
    description = (
        f"arlocal (Arweave gateway) + a miner every {MINE_EVERY_MS / 1000:g} s, a funded archive wallet"
    )

    def start(self) -> None:
        node = shutil.which("node")
        if not ARLOCAL.exists() or node is None:
            raise SandboxError(f"{self.name}: {ARLOCAL} (or node) is missing; run `make setup` (npm ci)")
        self.home.mkdir(parents=True, exist_ok=True)
        (self.home / "db").mkdir(exist_ok=True)
        launcher = self.home / "arlocal-miner.js"
        launcher.write_text(LAUNCHER)
        env = {
            "ARLOCAL": str(ARLOCAL),
            "PORT": str(self.port),
            "MINE_EVERY_MS": str(MINE_EVERY_MS),
            "DB_PATH": str((self.home / "db").resolve()),
        }
        spawn([node, str(launcher)], cwd=self.home, log=self.log, pidfile=self.pidfiles()[0], env=dict(env))

    def outdated(self) -> bool:
        """Started from another launcher (e.g. before the SQLite tuning): `sandbox up` restarts it. The db
        persists (wallets, balances, blocks; arlocal resumes at its last block) and `ready` re-funds."""
        try:
            return (self.home / "arlocal-miner.js").read_text() != LAUNCHER
        except OSError:
            return True

    def probe(self) -> bool:
        status, body = http_request("GET", f"{self.url()}/info")
        return status == 200 and b"height" in body

    # the wallet: generated once per sandbox (a 4096-bit key takes a second), kept in the state
    def wallet_jwk(self) -> str:
        return self.sb.memo("arlocal_wallet_jwk", self.sb.secret("arlocal_wallet_seed"), _new_jwk)

    def wallet_address(self) -> str:
        return self.sb.memo("arlocal_wallet_address", self.wallet_jwk(), _wallet_address)

    def ready(self) -> None:
        address = self.wallet_address()
        status, body = http_request("GET", f"{self.url()}/wallet/{address}/balance")
        balance = int(body) if status == 200 and body.strip().isdigit() else 0
        if balance < FUNDING_WINSTON // 2:
            status, body = http_request("GET", f"{self.url()}/mint/{address}/{FUNDING_WINSTON}", timeout=10)
            if status != 200:
                raise SandboxError(
                    f"{self.name}: could not fund the archive wallet ({status}); see {self.log}"
                )

    def env(self) -> dict[str, str]:
        return {
            "SCALEOPS_ARCHIVE__GATEWAY_URL": self.url(),
            "SCALEOPS_ARCHIVE__MODE": "gateway",
            "SCALEOPS_ARCHIVE__WALLET_JWK": self.wallet_jwk(),
            "SCALEOPS_ARCHIVE__CONFIRMATIONS": str(CONFIRMATIONS),
            "SCALEOPS_ARCHIVE__DROP_AFTER_BLOCKS": str(DROP_AFTER_BLOCKS),
            # arlocal unbundles a posted bundle item by item (SQLite) before it answers
            "SCALEOPS_ARCHIVE__MAX_BUNDLE_BYTES": str(MAX_BUNDLE_BYTES),
            "SCALEOPS_ARCHIVE__TIMEOUT_SECONDS": "300",
        }

    def details(self) -> dict[str, Any]:
        return {"wallet": self.wallet_address(), "mine_every_ms": MINE_EVERY_MS, "host": LOCAL}


class TurboStandin(Service):
    """A STAND-IN for a Turbo-compatible upload service (scaleops.sandbox.turbo_standin): it verifies
    each data item's signature, answers with a signed receipt, and posts the items to arlocal in
    bundles signed with a wallet of its own (funded by /mint). Not Turbo: no real one runs offline."""

    name = "turbo_standin"
    requires = ("arlocal",)
    description = "a Turbo-compatible upload STAND-IN: verifies data items, bundles them to arlocal"

    def wallet_jwk(self) -> str:
        return self.sb.memo("turbo_standin_wallet_jwk", self.sb.secret("turbo_standin_seed"), _new_jwk)

    def wallet_address(self) -> str:
        return self.sb.memo("turbo_standin_wallet_address", self.wallet_jwk(), _wallet_address)

    def start(self) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        wallet = self.home / "wallet.json"
        with os.fdopen(os.open(wallet, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as f:
            f.write(self.wallet_jwk())
        gateway = Arlocal(self.sb).url()
        args = [sys.executable, "-m", "scaleops.sandbox.turbo_standin", "--host", LOCAL, "--port"]
        args += [
            str(self.port),
            "--gateway",
            gateway,
            "--wallet",
            str(wallet),
            "--db",
            str(self.home / "items.db"),
        ]
        spawn(args, cwd=self.home, log=self.log, pidfile=self.pidfiles()[0])

    def probe(self) -> bool:
        status, body = http_request("GET", f"{self.url()}/info")
        return status == 200 and b"standIn" in body

    def ready(self) -> None:
        arlocal = Arlocal(self.sb).url()
        address = self.wallet_address()
        status, body = http_request("GET", f"{arlocal}/wallet/{address}/balance")
        balance = int(body) if status == 200 and body.strip().isdigit() else 0
        if balance < FUNDING_WINSTON // 2:
            status, _ = http_request("GET", f"{arlocal}/mint/{address}/{FUNDING_WINSTON}", timeout=10)
            if status != 200:
                raise SandboxError(f"{self.name}: could not fund its wallet ({status}); see {self.log}")

    def env(self) -> dict[str, str]:
        return {"SCALEOPS_ARCHIVE__BUNDLER_URL": self.url()}

    def details(self) -> dict[str, Any]:
        return {"wallet": self.wallet_address(), "stand_in": True}
