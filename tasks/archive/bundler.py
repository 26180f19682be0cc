"""A thin httpx client of a Turbo-compatible upload service (mode `bundler`): upload a signed data item
(`POST /tx/arweave`, the receipt back), its status (`GET /tx/{id}/status`: the bundle it went into) and
the account's balance. The caller owns the client; HTTP errors raise (transient ones are retried by the
shared policy)."""

from __future__ import annotations

from typing import Any

import httpx

SIGNATURE_KIND = "arweave"  # the signer type in Turbo's upload path (/tx/arweave), not a credential


class BundlerRefused(RuntimeError):
    """The upload service refused a data item (4xx): not transient, the item is not posted."""


class Bundler:
    def __init__(self, url: str, timeout: float = 30, client: httpx.Client | None = None):
        self.url = url.rstrip("/")
        self.http = client or httpx.Client(base_url=self.url, timeout=timeout)

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> Bundler:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def upload(self, raw: bytes, kind: str = SIGNATURE_KIND) -> tuple[dict[str, Any], bool]:
        """Upload one signed data item: (its receipt, whether the service did not have it yet: 200;
        202 means it already had the id and charges nothing again)."""
        response = self.http.post(
            f"/tx/{kind}", content=raw, headers={"content-type": "application/octet-stream"}
        )
        if response.status_code in (200, 201, 202):
            return dict(response.json()), response.status_code != 202
        if 400 <= response.status_code < 500 and response.status_code != 429:
            raise BundlerRefused(
                f"upload service refused the item: {response.status_code} {response.text[:200]}"
            )
        response.raise_for_status()
        raise BundlerRefused(f"upload service answered {response.status_code}")

    def status(self, item_id: str) -> dict[str, Any] | None:
        """What the service says of an item (`status`, `bundleId`), or None when it does not know it."""
        response = self.http.get(f"/tx/{item_id}/status")
        if response.status_code == 404:
            return None
        response.raise_for_status()
        return dict(response.json())

    def balance(self, address: str, kind: str = SIGNATURE_KIND) -> int:
        """Winston credits the service holds for `address` (a stand-in answers for its own wallet)."""
        response = self.http.get(f"/account/balance/{kind}", params={"address": address})
        response.raise_for_status()
        return int(response.json()["winc"])
