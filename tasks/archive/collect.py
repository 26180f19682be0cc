"""Collect content to archive into the ledger (deduplicated by SHA-256): local files queued by hand
(`scaleops archive add`), an S3 prefix (objects new or changed since the source's watermark) and a
PostgreSQL query returning `key, content_type, bytes` (or an `s3://` URL in place of the bytes)."""

from __future__ import annotations

import mimetypes
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from scaleops.core.settings import ArchiveSource
from tasks.archive.ledger import NewContent

CHUNK = 500  # contents per ledger transaction


def content_type_of(name: str) -> str:
    return mimetypes.guess_type(name)[0] or "application/octet-stream"


def local_files(paths: Sequence[Path]) -> Iterator[NewContent]:
    for path in paths:
        body = path.read_bytes()
        yield NewContent.of(str(path.resolve()), body, content_type_of(path.name))


def parse_s3_url(url: str) -> tuple[str, str]:
    bucket, _, prefix = url.removeprefix("s3://").partition("/")
    if not bucket:
        raise ValueError(f"{url!r}: not an s3://bucket/prefix URL")
    return bucket, prefix


def s3_new_objects(client: Any, url: str, watermark: str | None) -> tuple[list[NewContent], str | None]:
    """Objects under the prefix modified after `watermark` (ISO time), read and hashed; the new watermark."""
    bucket, prefix = parse_s3_url(url)
    found: list[NewContent] = []
    newest = watermark
    paginator = client.get_paginator("list_objects_v2")
    for page in paginator.paginate(Bucket=bucket, Prefix=prefix):
        for obj in page.get("Contents", []):
            stamp = obj["LastModified"].isoformat()
            if watermark is not None and stamp <= watermark:
                continue
            got = client.get_object(Bucket=bucket, Key=obj["Key"])
            body = got["Body"].read()
            kind = got.get("ContentType") or content_type_of(obj["Key"])
            content = NewContent.of(f"s3://{bucket}/{obj['Key']}", body, kind)
            found.append(
                NewContent(content.key, None, kind, content.sha256, content.size, source_url=content.key)
            )
            newest = max(newest or stamp, stamp)
    return found, newest


def _row_content(key: Any, kind: Any, value: Any, s3_client: Any) -> NewContent:
    """One row `key, content_type, bytes-or-s3-url` of a PostgreSQL source."""
    if isinstance(value, str) and value.startswith("s3://"):
        client = s3_client() if callable(s3_client) else s3_client
        if client is None:
            raise ValueError(f"{key}: an s3:// value needs the S3 settings")
        bucket, object_key = parse_s3_url(value)
        body = client.get_object(Bucket=bucket, Key=object_key)["Body"].read()
        c = NewContent.of(str(key), body, kind or content_type_of(str(key)))
        return NewContent(c.key, None, c.content_type, c.sha256, c.size, source_url=value)
    if isinstance(value, bytes | bytearray | memoryview):
        return NewContent.of(str(key), bytes(value), kind or content_type_of(str(key)))
    if isinstance(value, str):
        return NewContent.of(str(key), value.encode(), kind or "text/plain")
    raise ValueError(f"{key}: the third column must be bytes or an s3:// URL")


def postgres_rows(conn: Any, query: str, s3_client: Any = None) -> list[NewContent]:
    """Every row `key, content_type, bytes-or-s3-url` of the source's query (a source without a
    watermark: each run reads them all; the ledger's dedupe keeps them from being queued twice)."""
    return [_row_content(k, kind, v, s3_client) for k, kind, v, *_ in conn.execute(query).fetchall()]


def postgres_batches(
    conn: Any, query: str, column: str, watermark: str | None, s3_client: Any = None, batch: int = CHUNK
) -> Iterator[tuple[list[NewContent], str]]:
    """Rows of the source's query whose `column` is past `watermark`, in batches in the column's order:
    (contents, the batch's new watermark, as PostgreSQL prints the column). A batch never splits rows
    that share a value of the column (the next batch starts strictly after it), so none is skipped.

    The caller stores the watermark only after the batch is committed to the ledger: a crash in
    between reads the batch again, and the ledger's dedupe makes that harmless."""
    quoted = '"' + column.replace('"', '""') + '"'
    select = f"select src.*, src.{quoted}::text from ({query.strip().rstrip(';')}) as src"
    while True:
        if watermark is None:
            rows = conn.execute(f"{select} order by src.{quoted} limit %s", (batch,)).fetchall()
        else:
            rows = conn.execute(
                f"{select} where src.{quoted} > %s order by src.{quoted} limit %s", (watermark, batch)
            ).fetchall()
        rows = [r for r in rows if r[-1] is not None]
        if not rows:
            return
        last = rows[-1][-1]
        if len(rows) == batch:  # rows sharing the last value may go on past the limit: take them all
            rows = [r for r in rows if r[-1] != last]
            rows += conn.execute(f"{select} where src.{quoted} = %s", (last,)).fetchall()
        yield [_row_content(r[0], r[1], r[2], s3_client) for r in rows], last
        watermark = last


def describe(source: ArchiveSource) -> str:
    return source.url or "postgres query"
