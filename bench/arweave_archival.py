"""Benchmark: 1,000 items of 1-64 KiB archived on the sandbox's arlocal as ANS-104 bundles by the duty's
own protocol (ledger, write-ahead, post, confirm) vs one Arweave transaction per item, the way `arkb` or a
plain client uploads, here arweave-js 1.15 itself (`createTransaction`, `sign`, `post`; npm, beside
arlocal). Then IPFS add + pin (the duty's batched client) vs bare `POST /api/v0/add` of the same files, and
verification (download + SHA-256 + data item signature, and IPFS cat + CID) in items per second.

arlocal prices storage linearly (65,595,508 winston per 1,000 bytes) with no minimum; Arweave itself
bills every transaction at least one 256 KiB chunk, which is what bundling saves for small items. The
"Arweave chunk pricing" rows apply that rule to the same bytes at arlocal's per-byte rate.

    .venv/bin/python -m bench arweave_archival            # needs `scaleops sandbox up`
    .venv/bin/python -m bench.arweave_archival --items 1000
    .venv/bin/python -m bench.arweave_archival --our-side --items 1000   # where our time goes

`--our-side` measures the duty without arlocal's unbundling: (1) items/s from bytes to signed data
items and signed bundle transactions, in process; (2) the whole archive pass (ledger, GraphQL lookup,
sign, write-ahead, upload, receipts) in mode `bundler` against the sandbox's Turbo stand-in code run
in this process with `forward=False` (it verifies each item's signature and keeps it; nothing is posted
to arlocal, so nothing is unbundled), with the wall time of each step.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from scaleops.sandbox.scratch import drop_scratch_database, scratch_database

ROOT = Path(__file__).resolve().parents[1]
CHUNK = 256 * 1024

BASELINE_JS = """
const Arweave = require('arweave');
const fs = require('fs');
const { host, port, jwk, dir, count } = JSON.parse(fs.readFileSync(process.argv[2]));
const arweave = Arweave.init({ host, port, protocol: 'http', timeout: 60000, logging: false });
(async () => {
  let winston = 0n;
  const started = Date.now();
  for (let i = 0; i < count; i++) {
    const data = fs.readFileSync(`${dir}/${i}`);
    const tx = await arweave.createTransaction({ data }, jwk);
    tx.addTag('Content-Type', 'application/octet-stream');
    await arweave.transactions.sign(tx, jwk);
    const res = await arweave.transactions.post(tx);
    if (res.status !== 200) throw new Error(`post ${i}: ${res.status} ${JSON.stringify(res.data)}`);
    winston += BigInt(tx.reward);
  }
  console.log(JSON.stringify({ seconds: (Date.now() - started) / 1000, winston: winston.toString() }));
})().catch((e) => { console.error(e); process.exit(1); });
"""


def chunk_priced(size: int, per_byte: float) -> float:
    return -(-max(size, 1) // CHUNK) * CHUNK * per_byte


def main(argv: list[str]) -> None:  # noqa: PLR0915 - one linear script
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--items", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=14)
    parser.add_argument("--bundle-mib", type=float, default=2.0, help="MAX_BUNDLE_BYTES of the run, MiB")
    parser.add_argument("--no-baseline", action="store_true", help="skip the one-tx-per-item contender")
    parser.add_argument("--our-side", action="store_true", help="only where the duty's own time goes")
    args = parser.parse_args(argv)
    if args.our_side:
        return our_side(args)

    import httpx
    import psycopg

    from scaleops.core.settings import Settings, load_settings
    from scaleops.sandbox.manager import Sandbox, apply_env
    from tasks.archive import ledger
    from tasks.archive.ipfs import IpfsNode
    from tasks.archive.ledger import NewContent
    from tasks.archive.steps import archive_pass, ipfs_pin_pass, verify_pass

    sandbox = Sandbox(Settings())
    apply_env(sandbox.env())
    base = os.environ["SCALEOPS_POSTGRES__DSN"]
    rng = random.Random(args.seed)
    bodies = [rng.randbytes(rng.randint(1024, 64 * 1024)) for _ in range(args.items)]
    total_bytes = sum(len(b) for b in bodies)
    name, dsn = scratch_database(base, "archbench")
    os.environ["SCALEOPS_POSTGRES__DSN"] = dsn
    os.environ["SCALEOPS_ARCHIVE__MAX_BUNDLE_BYTES"] = str(int(args.bundle_mib * 1024 * 1024))
    os.environ["SCALEOPS_ARCHIVE__TIMEOUT_SECONDS"] = "600"  # arlocal unbundles a bundle before answering
    os.environ["SCALEOPS_ARCHIVE__MAX_WINSTON_PER_RUN"] = str(10**18)  # the budget is not measured here
    results: dict[str, Any] = {"items": args.items, "bytes": total_bytes, "bundle_mib": args.bundle_mib}
    try:
        settings = load_settings()
        gateway = settings.archive.gateway_url or ""
        per_byte = int(httpx.get(f"{gateway}/price/1000000", timeout=10).text) / 1_000_000
        with psycopg.connect(dsn, autocommit=True) as conn:
            ledger.ensure_schema(conn)
            ledger.add_content(conn, [NewContent.of(f"bench/{i}", b) for i, b in enumerate(bodies)])
        from tasks.archive.gateway import Gateway

        real_post = Gateway.post_transaction
        in_gateway = [0.0]

        def timed_post(self: Gateway, tx: dict[str, Any], data: bytes, chunked: bool = False) -> None:
            t = time.perf_counter()
            try:
                real_post(self, tx, data, chunked)
            finally:
                in_gateway[0] += time.perf_counter() - t

        Gateway.post_transaction = timed_post  # type: ignore[method-assign]
        started = time.perf_counter()
        part = archive_pass.fn(settings, False)
        posted_s = time.perf_counter() - started
        Gateway.post_transaction = real_post  # type: ignore[method-assign]
        while True:
            archive_pass.fn(settings, False)
            with psycopg.connect(dsn, autocommit=True) as conn:
                left = ledger.status_counts(conn)["items"]
            if left["confirmed"] == args.items:
                break
            time.sleep(0.5)
        confirmed_s = time.perf_counter() - started
        assert part.items_posted == args.items, f"the first pass posted {part.items_posted} items"
        results["bundled"] = {
            "transactions": len(part.bundles),
            "winston": part.winston_paid,
            "winston_per_item": part.winston_paid / args.items,
            "chunk_priced_per_item": sum(chunk_priced(b.bytes, per_byte) for b in part.bundles) / args.items,
            "items_per_s_posted": args.items / posted_s,
            "mb_per_s_posted": total_bytes / posted_s / 1e6,
            "items_per_s_without_gateway": args.items / (posted_s - in_gateway[0]),
            "gateway_share": in_gateway[0] / posted_s,
            "items_per_s_confirmed": args.items / confirmed_s,
        }

        started = time.perf_counter()
        verified = verify_pass.fn(settings, 0.0)
        verify_s = time.perf_counter() - started
        results["verify_items_per_s"] = len(verified["verified"]) / verify_s

        if settings.archive.ipfs_api_url:
            ipfs = settings.archive.ipfs_api_url
            started = time.perf_counter()
            pinned = ipfs_pin_pass.fn(settings)
            ours = time.perf_counter() - started
            salted = [b + b"bare" for b in bodies]  # other bytes, so the node stores them anew
            started = time.perf_counter()
            with httpx.Client(base_url=ipfs, timeout=60) as http:
                for i, body in enumerate(salted):
                    http.post(
                        "/api/v0/add",
                        params={"cid-version": "1", "raw-leaves": "true", "pin": "true"},
                        files=[("file", (str(i), body))],
                    ).raise_for_status()
            bare = time.perf_counter() - started
            results["ipfs"] = {
                "pinned": pinned,
                "ours_items_per_s": pinned / ours,
                "bare_items_per_s": args.items / bare,
                "ratio": (pinned / ours) / (args.items / bare),
            }
            started = time.perf_counter()
            with psycopg.connect(dsn, autocommit=True) as conn:
                on_ipfs = ledger.with_cid(conn, ["verified"])
            from tasks.archive.steps import ipfs_check

            with IpfsNode(ipfs) as node:
                ok, _ = ipfs_check(node, on_ipfs)
            results["ipfs"]["verify_items_per_s"] = len(ok) / (time.perf_counter() - started)

        if args.no_baseline:
            return report(results)
        with tempfile.TemporaryDirectory() as tmp:
            for i, body in enumerate(bodies):
                Path(tmp, str(i)).write_bytes(body + b"\0")  # other bytes: no dedupe at the gateway
            host, port = gateway.removeprefix("http://").split(":")
            jwk = json.loads(settings.archive.wallet_jwk.get_secret_value())  # type: ignore[union-attr]
            config = Path(tmp, "config.json")
            config.write_text(
                json.dumps({"host": host, "port": int(port), "jwk": jwk, "dir": tmp, "count": args.items})
            )
            script = Path(tmp, "baseline.js")
            script.write_text(BASELINE_JS)
            done = subprocess.run(
                ["node", str(script), str(config)],
                cwd=ROOT,
                capture_output=True,
                text=True,
                timeout=1800,
                env={**os.environ, "NODE_PATH": str(ROOT / "node_modules")},
            )
            if done.returncode != 0:
                raise SystemExit(f"baseline failed: {done.stderr[-2000:]}")
            base_run = json.loads(done.stdout.strip().splitlines()[-1])
        results["one_tx_per_item"] = {
            "transactions": args.items,
            "winston": int(base_run["winston"]),
            "winston_per_item": int(base_run["winston"]) / args.items,
            "chunk_priced_per_item": sum(chunk_priced(len(b) + 1, per_byte) for b in bodies) / args.items,
            "items_per_s_posted": args.items / base_run["seconds"],
            "mb_per_s_posted": total_bytes / base_run["seconds"] / 1e6,
        }
    finally:
        os.environ["SCALEOPS_POSTGRES__DSN"] = base
        drop_scratch_database(base, name)
    return report(results)


def our_side(args: argparse.Namespace) -> None:  # noqa: PLR0915 - one linear script
    import socket
    import sys
    from concurrent.futures import ThreadPoolExecutor

    import httpx
    import psycopg

    from scaleops.core.settings import Settings, load_settings
    from scaleops.sandbox.manager import Sandbox, apply_env
    from tasks.archive import archiver, ledger
    from tasks.archive.ans104 import (
        bundle_items,
        create_data_item,
        generate_jwk,
        sign_transaction,
        wallet_from_jwk,
    )
    from tasks.archive.archiver import SIGNING_THREADS, item_tags, plan_bundles
    from tasks.archive.ledger import NewContent
    from tasks.archive.steps import archive_pass

    sandbox = Sandbox(Settings())
    apply_env(sandbox.env())
    base = os.environ["SCALEOPS_POSTGRES__DSN"]
    rng = random.Random(args.seed)
    bodies = [rng.randbytes(rng.randint(1024, 64 * 1024)) for _ in range(args.items)]
    total = sum(len(b) for b in bodies)
    settings = load_settings()
    wallet = wallet_from_jwk(settings.archive.wallet_jwk.get_secret_value())  # type: ignore[union-attr]
    print(
        f"{args.items} items, {total / 1e6:.1f} MB (1-64 KiB each), {os.cpu_count()} CPUs, "
        f"{SIGNING_THREADS} signing threads, load {os.getloadavg()[0]:.1f}"
    )

    # (1) in process: bytes -> signed data items -> bundles -> signed bundle transactions
    contents = [NewContent.of(f"bench/{i}", b) for i, b in enumerate(bodies)]
    items = [ledger.Item(c.sha256, c.size, c.content_type, c.key, [c.key], "queued") for c in contents]
    started = time.perf_counter()
    with ThreadPoolExecutor(SIGNING_THREADS) as pool:
        signed = list(
            pool.map(
                lambda p: create_data_item(wallet, p[1], item_tags(p[0], "bench")),
                zip(items, bodies, strict=True),
            )
        )
    signing_s = time.perf_counter() - started
    by_sha = {item.sha256: s for item, s in zip(items, signed, strict=True)}
    for plan in plan_bundles(items, int(args.bundle_mib * 1024 * 1024)):
        chosen = [by_sha[i.sha256] for i in plan]
        sign_transaction(wallet, bundle_items(chosen), 1, "A" * 43)
    in_process_s = time.perf_counter() - started
    assert len({s.id for s in signed}) == args.items
    print(f"| in process: data items signed (RSA-4096 PSS) | {args.items / signing_s:,.1f} items/s |")
    print(
        "| in process: + bundled + bundle transactions signed (data_root) | "
        f"{args.items / in_process_s:,.1f} items/s |"
    )

    # (2) the archive pass in mode bundler, against the stand-in (its own process) with --no-forward
    with tempfile.TemporaryDirectory() as tmp:
        jwk = generate_jwk()
        Path(tmp, "wallet.json").write_text(json.dumps(jwk))
        gateway = settings.archive.gateway_url or ""
        address = wallet_from_jwk(jwk).address
        httpx.get(f"{gateway}/mint/{address}/{10**18}", timeout=30).raise_for_status()
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        standin = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "scaleops.sandbox.turbo_standin",
                "--port",
                str(port),
                "--gateway",
                gateway,
            ]
            + ["--wallet", str(Path(tmp, "wallet.json")), "--db", str(Path(tmp, "items.db")), "--no-forward"],
            stdout=subprocess.DEVNULL,
        )
        url = f"http://127.0.0.1:{port}"
        for _ in range(100):
            try:
                httpx.get(f"{url}/info", timeout=1).raise_for_status()
                break
            except httpx.HTTPError:
                time.sleep(0.1)
        name, dsn = scratch_database(base, "archbench")
        os.environ.update(
            {
                "SCALEOPS_POSTGRES__DSN": dsn,
                "SCALEOPS_ARCHIVE__MODE": "bundler",
                "SCALEOPS_ARCHIVE__BUNDLER_URL": url,
                "SCALEOPS_ARCHIVE__MAX_BUNDLE_BYTES": str(int(args.bundle_mib * 1024 * 1024)),
                "SCALEOPS_ARCHIVE__MAX_WINSTON_PER_RUN": str(10**18),
            }
        )
        steps: dict[str, float] = {}

        def timed(label: str, module: Any, attr: str) -> None:
            real = getattr(module, attr)

            def wrapper(*a: Any, **k: Any) -> Any:
                t = time.perf_counter()
                try:
                    return real(*a, **k)
                finally:
                    steps[label] = steps.get(label, 0.0) + time.perf_counter() - t

            setattr(module, attr, wrapper)

        timed("ledger: read the queue", archiver.ledger, "queued")
        timed("GraphQL: already archived? (gateway)", archiver, "find_archived")
        timed("gateway: price", archiver.Gateway, "price")
        timed("ledger: write-ahead (batch bytes + items)", archiver.ledger, "write_ahead")
        timed(
            "upload to the stand-in (8 at a time; it verifies each signature, signs a receipt)",
            archiver,
            "upload_items",
        )
        timed("ledger: receipts, posted", archiver.ledger, "mark_posted")
        timed("gateway: height", archiver.Gateway, "height")
        try:
            s = load_settings()
            with psycopg.connect(dsn, autocommit=True) as conn:
                ledger.ensure_schema(conn)
                ledger.add_content(conn, contents)
            started = time.perf_counter()
            part = archive_pass.fn(s, False)
            wall = time.perf_counter() - started
        finally:
            standin.terminate()
            standin.wait(10)
            os.environ["SCALEOPS_POSTGRES__DSN"] = base
            drop_scratch_database(base, name)
    assert part.items_posted == args.items, (part.items_posted, part.problems)
    print(
        f"| archive pass, mode bundler, stand-in not unbundling | {args.items / wall:,.1f} items/s "
        f"({total / wall / 1e6:.1f} MB/s, {wall:.1f} s, {len(part.bundles)} batches) |"
    )
    rest = wall - sum(steps.values())
    for label, spent in sorted(steps.items(), key=lambda kv: -kv[1]):
        print(f"| - {label} | {spent:.2f} s ({spent / wall:.0%}) |")
    print(
        f"| - sign items + bundle (threads), SHA-256 re-check, the rest | {rest:.2f} s ({rest / wall:.0%}) |"
    )


def report(r: dict[str, Any]) -> None:
    b = r["bundled"]
    o = r.get("one_tx_per_item") or {k: float("nan") for k in b}
    print(f"{r['items']} items, {r['bytes'] / 1e6:.1f} MB (1-64 KiB each), bundles <= {r['bundle_mib']} MiB")
    print("| metric | bundled (duty) | one tx per item (arweave-js) | ratio |")
    print("|---|---|---|---|")
    rows = [
        ("transactions", b["transactions"], o["transactions"]),
        ("winston / item (arlocal, linear price)", b["winston_per_item"], o["winston_per_item"]),
        ("winston / item (Arweave chunk pricing)", b["chunk_priced_per_item"], o["chunk_priced_per_item"]),
        ("items/s signed + posted", b["items_per_s_posted"], o["items_per_s_posted"]),
        ("MB/s signed + posted", b["mb_per_s_posted"], o["mb_per_s_posted"]),
    ]
    for label, ours, theirs in rows:
        lower_is_better = "winston" in label or label == "transactions"
        ratio = theirs / ours if lower_is_better else ours / theirs
        print(f"| {label} | {ours:,.1f} | {theirs:,.1f} | {ratio:.2f}x |")
    print(
        f"| items/s of the duty's own work (ledger, sign, bundle; posting excluded: {b['gateway_share']:.0%} "
        f"of the time was arlocal answering POST /tx) | {b['items_per_s_without_gateway']:,.1f} | | |"
    )
    print(
        "| items/s to confirmed (2 confirmations, a block every 2 s) | "
        f"{b['items_per_s_confirmed']:,.1f} | | |"
    )
    print(
        "verification (bundle download + item signature + SHA-256 + fetch by id): "
        f"{r['verify_items_per_s']:,.1f} items/s"
    )
    if "ipfs" in r:
        i = r["ipfs"]
        print(
            f"IPFS add + pin: duty {i['ours_items_per_s']:,.1f} items/s vs bare POST /api/v0/add per file "
            f"{i['bare_items_per_s']:,.1f} items/s = {i['ratio']:.2f}x; IPFS verify (pin/ls + cat + CID) "
            f"{i['verify_items_per_s']:,.1f} items/s"
        )


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
