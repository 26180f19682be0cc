"""A thin httpx client of an Arweave gateway (arweave.net, arlocal): price, anchor, balance, post,
status, data and GraphQL. The caller owns the client; HTTP errors raise (transient ones are retried by
the shared policy)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx

from tasks.archive.ans104 import b64url, chunk_proofs


@dataclass(frozen=True)
class TxStatus:
    known: bool  # the gateway knows the transaction (pending or mined)
    confirmations: int = 0
    block_height: int | None = None


class Gateway:
    def __init__(self, url: str, timeout: float = 30, client: httpx.Client | None = None):
        self.url = url.rstrip("/")
        self.http = client or httpx.Client(base_url=self.url, timeout=timeout)

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> Gateway:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _get(self, path: str) -> httpx.Response:
        response = self.http.get(path)
        if response.status_code >= 500 or response.status_code == 429:
            response.raise_for_status()
        return response

    def price(self, size: int) -> int:
        """Winston to store `size` bytes."""
        response = self._get(f"/price/{size}")
        response.raise_for_status()
        return int(response.text)

    def anchor(self) -> str:
        response = self._get("/tx_anchor")
        response.raise_for_status()
        return response.text.strip()

    def balance(self, address: str) -> int:
        response = self._get(f"/wallet/{address}/balance")
        response.raise_for_status()
        return int(response.text)

    def height(self) -> int:
        response = self._get("/info")
        response.raise_for_status()
        return int(response.json()["height"])

    def post_transaction(self, tx: dict[str, Any], data: bytes, chunked: bool = False) -> None:
        """Post a signed transaction with its data inline, or (`chunked`) its header alone and then
        every chunk with its Merkle proof (`POST /chunk`); a repeat of a known id is not an error."""
        body = {**tx, "data": "" if chunked else b64url(data)}
        self._post_tx(tx, body)
        if chunked:
            self.post_chunks(tx, data)

    def post_chunks(self, tx: dict[str, Any], data: bytes) -> int:
        """Upload the data of a posted transaction header chunk by chunk, in order; returns the count.
        (arlocal checks no proof and cannot take a chunk twice; a real gateway checks each proof.)"""
        chunks = chunk_proofs(data)
        for chunk in chunks:
            response = self.http.post(
                "/chunk",
                json={
                    "data_root": tx["data_root"],
                    "data_size": tx["data_size"],
                    "data_path": b64url(chunk.data_path),
                    "offset": str(chunk.offset),
                    "chunk": b64url(data[chunk.start : chunk.end]),
                },
            )
            if response.status_code not in (200, 208):
                response.raise_for_status()
                raise httpx.HTTPStatusError(
                    f"gateway refused chunk {chunk.offset} of {tx['id']}: {response.status_code}",
                    request=response.request,
                    response=response,
                )
        return len(chunks)

    def _post_tx(self, tx: dict[str, Any], body: dict[str, Any]) -> None:
        response = self.http.post("/tx", json=body)
        if response.status_code in (200, 202, 208):
            return
        if response.status_code == 400 and "already" in response.text.lower():
            return
        response.raise_for_status()
        raise httpx.HTTPStatusError(
            f"gateway refused transaction {tx['id']}: {response.status_code} {response.text[:200]}",
            request=response.request,
            response=response,
        )

    def status(self, tx_id: str) -> TxStatus:
        response = self._get(f"/tx/{tx_id}/status")
        if response.status_code == 404:
            return TxStatus(known=False)
        response.raise_for_status()
        if response.status_code == 202 or response.text.strip() == "Pending":  # known, not mined yet
            return TxStatus(known=True)
        body = response.json()
        return TxStatus(
            known=True,
            confirmations=int(body.get("number_of_confirmations", 0)),
            block_height=int(body["block_height"]) if body.get("block_height") is not None else None,
        )

    def data(self, tx_or_item_id: str) -> bytes | None:
        """The bytes the gateway serves for a transaction or data item id, or None when it has none."""
        response = self._get(f"/{tx_or_item_id}")
        if response.status_code in (404, 410):
            return None
        response.raise_for_status()
        return response.content

    FOUND_FIELDS = (
        "id signature anchor recipient owner { key address } tags { name value } block { height } "
        "bundledIn { id }"
    )

    def find_by_tag(self, tag: str, values: list[str], owner: str | None = None) -> list[dict[str, Any]]:
        """Every transaction or data item carrying `tag` with one of `values` (signed by `owner`, when
        given), as GraphQL nodes with what rebuilding a data item needs: id, signature, anchor,
        recipient, owner key, tags in order, block height and the bundle (where the gateway knows it:
        arlocal leaves `bundledIn` null)."""
        query = (
            "query($tags: [TagFilter!], $owners: [String!], $after: String) "
            "{ transactions(tags: $tags, owners: $owners, first: 100, after: $after) "
            f"{{ pageInfo {{ hasNextPage }} edges {{ cursor node {{ {self.FOUND_FIELDS} }} }} }} }}"
        )
        nodes: list[dict[str, Any]] = []
        for start in range(0, len(values), 50):
            after = None
            while True:
                variables = {
                    "tags": [{"name": tag, "values": values[start : start + 50]}],
                    "owners": [owner] if owner else None,
                    "after": after,
                }
                response = self.http.post("/graphql", json={"query": query, "variables": variables})
                response.raise_for_status()
                body = response.json()
                if body.get("errors"):
                    raise RuntimeError(f"GraphQL: {str(body['errors'])[:300]}")
                page = body["data"]["transactions"]
                nodes += [edge["node"] for edge in page["edges"]]
                if not page["edges"] or not page["pageInfo"]["hasNextPage"]:
                    break
                after = page["edges"][-1]["cursor"]
        return nodes

    def graphql_ids(self, tag: str, values: list[str]) -> set[str]:
        """Ids of transactions/items carrying `tag` with one of `values` (GraphQL)."""
        query = (
            "query($tags: [TagFilter!]) { transactions(tags: $tags, first: 100) "
            "{ edges { node { id tags { name value } } } } }"
        )
        found: set[str] = set()
        for start in range(0, len(values), 50):
            variables = {"tags": [{"name": tag, "values": values[start : start + 50]}]}
            response = self.http.post("/graphql", json={"query": query, "variables": variables})
            response.raise_for_status()
            for edge in response.json()["data"]["transactions"]["edges"]:
                found.add(edge["node"]["id"])
        return found
