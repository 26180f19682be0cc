"""A STAND-IN for a Turbo-compatible upload service (ArDrive Turbo's `upload.ardrive.io/v1`), for the
sandbox and the benchmarks. No real Turbo runs offline; this is not Turbo, only the part of its upload
API the archive duty uses, over arlocal:

    POST /tx/{token}            a signed ANS-104 data item (raw bytes); its signature is verified here
                                (400 otherwise); 200 + a receipt, or 202 + the same receipt when the id
                                was already received
    GET  /tx/{id}/status        {"status": "CONFIRMED" | "FINALIZED", "bundleId": ...} or 404
    GET  /account/balance/{token}?address=A   {"winc": ...}: what the stand-in's own wallet holds
    GET  /info                  version, the stand-in's address, the gateway

Accepted items are kept in SQLite (a restart loses none) and, unless `--no-forward`, posted to the
gateway in ANS-104 bundles signed with the stand-in's own wallet, every `--every` seconds (chunked
above 4 MiB, like the duty). A receipt is signed by the stand-in's wallet over the deep hash of
(id, timestamp, winc) — Turbo's receipts are signed too, with a different layout.

    python -m scaleops.sandbox.turbo_standin --port P --gateway URL --wallet FILE --db FILE
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sqlite3
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

MAX_ITEM_BYTES = 10 * 1024 * 1024
MAX_BUNDLE_BYTES = 4 * 1024 * 1024
CHUNKED_ABOVE = 4 * 1024 * 1024
VERSION = "scaleops-turbo-standin/1"


class Standin:
    def __init__(self, gateway: str, jwk: str, db: Path, forward: bool = True, every: float = 1.0):
        from tasks.archive.ans104 import b64url, wallet_from_jwk
        from tasks.archive.gateway import Gateway

        self.wallet = wallet_from_jwk(jwk)
        self.public = b64url(self.wallet.owner)
        self.gateway_url = gateway.rstrip("/")
        self.gateway = Gateway(self.gateway_url, timeout=300)
        self.forward = forward
        self.every = every
        self.lock = threading.Lock()
        self.db = sqlite3.connect(str(db), check_same_thread=False, isolation_level=None)
        self.db.execute("pragma journal_mode=wal")
        self.db.execute("pragma synchronous=normal")  # WAL: survives a crash of this process
        self.db.execute(
            "create table if not exists items (id text primary key, raw blob, receipt text, bundle_id text)"
        )
        self.stopping = threading.Event()
        self.rate: tuple[float, float] | None = None  # (when asked, winston per byte)

    # -- uploads -------------------------------------------------------------------------------------
    def upload(self, raw: bytes) -> tuple[int, dict[str, Any]]:
        from tasks.archive.ans104 import DataItem, b64url, deep_hash

        if len(raw) > MAX_ITEM_BYTES:
            return 413, {"error": f"data item larger than {MAX_ITEM_BYTES} bytes"}
        item = DataItem(raw)
        if not item.verify():
            return 400, {"error": "Invalid Data Item: the signature does not verify"}
        with self.lock:
            row = self.db.execute("select receipt from items where id = ?", (item.id,)).fetchone()
        if row:
            return 202, dict(json.loads(row[0]))
        winc = self.price(len(raw))
        stamp = int(time.time() * 1000)
        message = deep_hash([item.id.encode(), str(stamp).encode(), str(winc).encode()])
        receipt = {
            "id": item.id,
            "owner": b64url(hashlib.sha256(item.parts()["owner"]).digest()),
            "dataCaches": ["arlocal"],
            "fastFinalityIndexes": [],
            "winc": str(winc),
            "timestamp": stamp,
            "version": VERSION,
            "public": self.public,
            "signature": b64url(self.wallet.sign(message)),
        }
        with self.lock:
            self.db.execute(
                "insert or ignore into items (id, raw, receipt) values (?, ?, ?)",
                (item.id, raw, json.dumps(receipt)),
            )
        return 200, receipt

    def price(self, size: int) -> int:
        """Winston for `size` bytes at the gateway's rate per byte, asked once a minute (a price per
        item from the gateway would cost a round trip per upload)."""
        now = time.monotonic()
        if self.rate is None or now - self.rate[0] > 60:
            self.rate = (now, self.gateway.price(1_000_000) / 1_000_000)
        return max(1, int(-(-size * self.rate[1] // 1)))

    def status(self, item_id: str) -> tuple[int, dict[str, Any]]:
        with self.lock:
            row = self.db.execute("select bundle_id from items where id = ?", (item_id,)).fetchone()
        if row is None:
            return 404, {"error": "Not Found"}
        bundle = row[0]
        return 200, {
            "status": "FINALIZED" if bundle else "CONFIRMED",
            "bundleId": bundle,
            "info": "posted to the gateway in a bundle" if bundle else "received, waiting to be bundled",
        }

    # -- bundling ------------------------------------------------------------------------------------
    def bundle_once(self) -> int:
        """Post one bundle of waiting items to the gateway; the number of items posted."""
        from tasks.archive.ans104 import DataItem, bundle_items, sign_transaction

        with self.lock:
            rows = self.db.execute(
                "select id, raw from items where bundle_id is null order by rowid limit 1000"
            ).fetchall()
        batch: list[DataItem] = []
        size = 32
        for _id, raw in rows:
            if batch and size + 64 + len(raw) > MAX_BUNDLE_BYTES:
                break
            batch.append(DataItem(bytes(raw)))
            size += 64 + len(raw)
        if not batch:
            return 0
        data = bundle_items(batch)
        tx = sign_transaction(self.wallet, data, self.gateway.price(len(data)), self.gateway.anchor())
        self.gateway.post_transaction(tx, data, chunked=len(data) > CHUNKED_ABOVE)
        with self.lock:
            self.db.executemany(
                "update items set bundle_id = ? where id = ?", [(tx["id"], i.id) for i in batch]
            )
        return len(batch)

    def run_bundler(self) -> None:
        while not self.stopping.wait(self.every):
            if not self.forward:
                continue
            try:
                while self.bundle_once():
                    pass
            except Exception as exc:  # the next round tries again; the items stay waiting
                print(f"bundling failed: {exc}", flush=True)

    def balance(self) -> int:
        return self.gateway.balance(self.wallet.address)


def handler(standin: Standin) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def reply(self, status: int, body: dict[str, Any]) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            url = urlparse(self.path)
            parts = [p for p in url.path.split("/") if p]
            try:
                if parts in ([], ["info"]):
                    self.reply(
                        200,
                        {
                            "version": VERSION,
                            "standIn": True,
                            "addresses": {"arweave": standin.wallet.address},
                            "gateway": standin.gateway_url,
                            "forward": standin.forward,
                        },
                    )
                elif len(parts) == 3 and parts[0] == "tx" and parts[2] == "status":
                    self.reply(*standin.status(parts[1]))
                elif len(parts) == 3 and parts[:2] == ["account", "balance"]:
                    address = parse_qs(url.query).get("address", [""])[0]
                    self.reply(200, {"winc": str(standin.balance()), "address": address})
                else:
                    self.reply(404, {"error": "Not Found"})
            except Exception as exc:
                self.reply(502, {"error": f"gateway: {exc}"})

        def do_POST(self) -> None:
            parts = [p for p in urlparse(self.path).path.split("/") if p]
            length = int(self.headers.get("content-length") or 0)
            raw = self.rfile.read(length)
            if len(parts) != 2 or parts[0] != "tx":
                self.reply(404, {"error": "Not Found"})
            elif parts[1] != "arweave":
                self.reply(400, {"error": f"token {parts[1]!r}: only arweave-signed items here"})
            else:
                try:
                    self.reply(*standin.upload(raw))
                except Exception as exc:
                    self.reply(502, {"error": f"gateway: {exc}"})

    return Handler


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--gateway", required=True)
    parser.add_argument("--wallet", type=Path, required=True, help="the stand-in's JWK file")
    parser.add_argument("--db", type=Path, required=True)
    parser.add_argument("--every", type=float, default=1.0, help="seconds between bundling rounds")
    parser.add_argument("--no-forward", action="store_true", help="accept and keep items, post nothing")
    args = parser.parse_args()
    standin = Standin(args.gateway, args.wallet.read_text(), args.db, not args.no_forward, args.every)
    threading.Thread(target=standin.run_bundler, daemon=True).start()
    server = ThreadingHTTPServer((args.host, args.port), handler(standin))
    print(f"turbo stand-in on {args.host}:{args.port} -> {args.gateway}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
