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


def postgres_rows(conn: Any, query: str, s3_client: Any = None) -> list[NewContent]:
    """Rows `key, content_type, bytes-or-s3-url` of the source's query."""
    found = []
    for key, kind, value in conn.execute(query).fetchall():
        if isinstance(value, str) and value.startswith("s3://"):
            if s3_client is None:
                raise ValueError(f"{key}: an s3:// value needs the S3 settings")
            bucket, object_key = parse_s3_url(value)
            body = s3_client.get_object(Bucket=bucket, Key=object_key)["Body"].read()
            c = NewContent.of(str(key), body, kind or content_type_of(str(key)))
            found.append(NewContent(c.key, None, c.content_type, c.sha256, c.size, source_url=value))
        elif isinstance(value, bytes | bytearray | memoryview):
            found.append(NewContent.of(str(key), bytes(value), kind or content_type_of(str(key))))
        elif isinstance(value, str):
            found.append(NewContent.of(str(key), value.encode(), kind or "text/plain"))
        else:
            raise ValueError(f"{key}: the third column must be bytes or an s3:// URL")
    return found


def describe(source: ArchiveSource) -> str:
    return source.url or "postgres query"
