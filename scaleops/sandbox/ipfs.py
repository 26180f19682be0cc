"""IPFS for the sandbox: js-ipfs (npm `ipfs-core` + `ipfs-http-server`, pinned in package.json) offline,
serving a Kubo-compatible RPC (`/api/v0/add`, `pin/*`, `cat`, `repo/gc`, ...) on 127.0.0.1.

No Kubo binary installs offline (its npm packages download at install). `jsipfs daemon` fails here, so a
small ES module starts the node itself; Node 20 lacks `Promise.withResolvers`, which a dependency needs,
so the module defines it before importing js-ipfs. Differences from Kubo that the duty handles: CIDv1
prints in base58btc unless `cid-base=base32` is asked for, and `dag/stat` is missing.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from scaleops.sandbox.probes import http_request
from scaleops.sandbox.procs import spawn
from scaleops.sandbox.services import SandboxError, Service

ROOT = Path(__file__).resolve().parents[2]
NODE_MODULES = ROOT / "node_modules"

LAUNCHER = """
// scaleops sandbox: js-ipfs offline with its Kubo-compatible HTTP RPC
if (!Promise.withResolvers) {
  Promise.withResolvers = function () {
    let resolve, reject;
    const promise = new Promise((res, rej) => { resolve = res; reject = rej; });
    return { promise, resolve, reject };
  };
}
const root = process.env.NODE_MODULES;
const { create } = await import(`${root}/ipfs-core/src/index.js`);
const { HttpApi } = await import(`${root}/ipfs-http-server/src/index.js`);
const port = +process.env.PORT;
const ipfs = await create({
  repo: process.env.REPO,
  offline: true,
  start: false,
  silent: true,
  config: {
    Addresses: { API: `/ip4/127.0.0.1/tcp/${port}`, Gateway: [], Swarm: [], RPC: [] },
    Bootstrap: [],
    Discovery: { MDNS: { Enabled: false }, webRTCStar: { Enabled: false } },
  },
});
const api = new HttpApi(ipfs);
await api.start();
console.log(`ipfs (js-ipfs, offline) RPC on 127.0.0.1:${port}`);
const stop = async () => { try { await api.stop(); await ipfs.stop(); } finally { process.exit(0); } };
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
"""


class Ipfs(Service):
    name = "ipfs"
    description = "js-ipfs offline (ipfs-core + ipfs-http-server): a Kubo-compatible RPC"

    def start(self) -> None:
        node = shutil.which("node")
        if (
            node is None
            or not (NODE_MODULES / "ipfs-core").is_dir()
            or not (NODE_MODULES / "ipfs-http-server").is_dir()
        ):
            raise SandboxError(
                f"{self.name}: node or js-ipfs in {NODE_MODULES} is missing; run `make setup` (npm ci)"
            )
        self.home.mkdir(parents=True, exist_ok=True)
        repo = self.home / "repo"
        # a node killed hard leaves its repo lock behind; nothing of ours runs now (start is called then)
        for lock in (repo / "repo.lock", repo / "repo.lock.lock"):
            if lock.is_dir():
                shutil.rmtree(lock, ignore_errors=True)
            else:
                lock.unlink(missing_ok=True)
        launcher = self.home / "ipfs-node.mjs"
        launcher.write_text(LAUNCHER)
        env = {"NODE_MODULES": str(NODE_MODULES), "PORT": str(self.port), "REPO": str(repo.resolve())}
        spawn([node, str(launcher)], cwd=self.home, log=self.log, pidfile=self.pidfiles()[0], env=dict(env))

    def probe(self) -> bool:
        status, body = http_request("POST", f"{self.url()}/api/v0/version")
        return status == 200 and b"Version" in body

    def env(self) -> dict[str, str]:
        return {"SCALEOPS_ARCHIVE__IPFS_API_URL": self.url()}

    def details(self) -> dict[str, Any]:
        return {"implementation": "js-ipfs 0.18 (offline)"}
