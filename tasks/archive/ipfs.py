"""A thin httpx client of an IPFS node's RPC (Kubo's `/api/v0`, which js-ipfs also serves), and CIDs.

Content is added as CIDv1 with raw leaves and a fixed chunker, pinned, and recorded with those import
parameters, so the CID can be recomputed later from the bytes alone. Kubo and js-ipfs differ: Kubo
prints CIDv1 in base32 (`bafk...`), js-ipfs in base58btc (`zb2...`) unless asked; CIDs are compared
as bytes, never as strings. `dag/stat` is missing on js-ipfs: nothing here uses it.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Sequence
from typing import Any

import httpx

CHUNK_SIZE = 262_144
IMPORT_PARAMS: dict[str, Any] = {"cid_version": 1, "raw_leaves": True, "chunker": f"size-{CHUNK_SIZE}"}
B58 = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"


def _b58decode(text: str) -> bytes:
    n = 0
    for ch in text:
        n = n * 58 + B58.index(ch)
    raw = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return b"\x00" * (len(text) - len(text.lstrip("1"))) + raw


def cid_bytes(cid: str) -> bytes:
    """The binary CID of a CIDv1 in base32 (`b...`) or base58btc (`z...`), or a CIDv0 (`Qm...`)."""
    if cid.startswith("Qm"):
        return _b58decode(cid)
    if cid.startswith("z"):
        return _b58decode(cid[1:])
    if cid.startswith("b"):
        body = cid[1:].upper()
        return base64.b32decode(body + "=" * (-len(body) % 8))
    raise ValueError(f"unsupported CID encoding: {cid[:8]}...")


def same_cid(a: str, b: str) -> bool:
    return cid_bytes(a) == cid_bytes(b)


def raw_cid(data: bytes) -> str | None:
    """The CIDv1 (raw leaves) of data that fits one chunk, computed here; None when it needs a DAG."""
    if len(data) > CHUNK_SIZE or not data:
        return None
    binary = b"\x01\x55\x12\x20" + hashlib.sha256(data).digest()  # v1, raw, sha2-256, 32 bytes
    return "b" + base64.b32encode(binary).decode().lower().rstrip("=")


def _params(params: dict[str, Any], **extra: str) -> dict[str, str]:
    return {
        "cid-version": str(params["cid_version"]),
        "raw-leaves": str(params["raw_leaves"]).lower(),
        "chunker": str(params["chunker"]),
        "cid-base": "base32",
        **extra,
    }


class IpfsNode:
    def __init__(self, url: str, timeout: float = 30, client: httpx.Client | None = None):
        self.url = url.rstrip("/")
        self.http = client or httpx.Client(base_url=self.url, timeout=timeout)

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> IpfsNode:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _post(self, path: str, **kwargs: Any) -> httpx.Response:
        response = self.http.post(f"/api/v0/{path}", **kwargs)
        response.raise_for_status()
        return response

    def add(
        self, files: Sequence[tuple[str, bytes]], params: dict[str, Any] = IMPORT_PARAMS, pin: bool = True
    ) -> dict[str, str]:
        """Add (and pin) files in one request; name -> CID. Names must be unique (use the SHA-256)."""
        if not files:
            return {}
        multipart = [("file", (name, body, "application/octet-stream")) for name, body in files]
        response = self._post(
            "add", params=_params(params, pin=str(pin).lower(), quiet="false"), files=multipart
        )
        out = {}
        for line in response.text.splitlines():
            if line.strip():
                entry = json.loads(line)
                out[entry["Name"]] = entry["Hash"]
        return out

    def only_hash(self, data: bytes, params: dict[str, Any] = IMPORT_PARAMS) -> str:
        """The CID the node's importer gives these bytes with these parameters, nothing stored."""
        response = self._post(
            "add",
            params=_params(params, **{"only-hash": "true", "pin": "false"}),
            files=[("file", ("x", data))],
        )
        return str(json.loads(response.text.splitlines()[-1])["Hash"])

    def pinned(self) -> set[bytes]:
        """Every recursively pinned CID, as binary CIDs."""
        response = self._post("pin/ls", params={"type": "recursive"})
        return {cid_bytes(c) for c in response.json().get("Keys", {})}

    def cat(self, cid: str) -> bytes | None:
        """The bytes of `cid`, or None when the node does not hold them (offline: no network fetch)."""
        try:
            response = self.http.post("/api/v0/cat", params={"arg": cid, "offline": "true"})
        except httpx.TimeoutException:
            return None
        absent = ("not found", "no such file", "enoent", "could not")  # Kubo and js-ipfs wordings
        if response.status_code >= 500 and not any(w in response.text.lower() for w in absent):
            response.raise_for_status()
        return response.content if response.status_code == 200 else None

    def unpin(self, cid: str) -> None:
        self._post("pin/rm", params={"arg": cid})

    def gc(self) -> None:
        self._post("repo/gc")
