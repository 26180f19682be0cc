"""Which setting points at the endpoint an error came from.

A duty whose client cannot reach its system (after the retry budget) ends "could not check", exit 2,
with one line that names the environment variable to fix, e.g.
`SCALEOPS_CHAINS__OPTIMISM__RPC_URL: connection refused at http://127.0.0.1:1`. The clients (built in
`scaleops.core.clients`) raise their own errors (psycopg, redis, botocore, httpx, requests/web3); each
names the host and port it tried in its own words. `unreachable(exc, settings)` reads them and matches
them against every endpoint the settings hold.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit

from pydantic import BaseModel, SecretStr

from scaleops.core.retry import exception_chain, is_transient
from scaleops.core.settings import Settings, env_name

DEFAULT_PORTS = {
    "http": 80,
    "https": 443,
    "postgres": 5432,
    "postgresql": 5432,
    "redis": 6379,
    "rediss": 6379,
}
# How the clients name what they tried: urllib3/requests (web3), libpq (psycopg), redis-py and URLs
# (botocore, httpx), then a bare host:port.
_HOST_PORT = (
    re.compile(r"host='([^']+)', port=(\d+)"),
    re.compile(r'server at "([^"]+)"(?: \([^)]*\))?, port (\d+)'),
    re.compile(r"connecting to ([\w.\-]+|\[[0-9a-fA-F:]+\]):(\d+)"),
)
_URL = re.compile(r"\b[a-z][a-z0-9+.\-]*://[^\s\"'<>]+")
CREDENTIALS_REFUSED = ("password authentication failed", "no pg_hba.conf entry")
_BARE = re.compile(r"(?<![\w.:/\-])((?:\d{1,3}\.){3}\d{1,3}|localhost|\[[0-9a-fA-F:]+\]):(\d{1,5})(?!\d)")


def endpoints(settings: Settings) -> list[tuple[str, str, str, int]]:
    """(environment variable, the endpoint as shown, host, port) of every URL or DSN in the settings."""
    found: list[tuple[str, str, str, int]] = []

    def walk(value: Any, path: tuple[str, ...]) -> None:
        if isinstance(value, SecretStr):
            value = value.get_secret_value()
        if isinstance(value, str) and "://" in value:
            split = urlsplit(value)
            try:
                port = split.port or DEFAULT_PORTS.get(split.scheme.lower())
            except ValueError:
                return
            if split.hostname and port:
                path_ = split.path if split.scheme in ("http", "https") else ""
                shown = f"{split.scheme}://{split.hostname}:{port}{path_}"
                found.append((env_name(path), shown, split.hostname.lower(), port))
        elif isinstance(value, BaseModel):
            for name in type(value).model_fields:
                walk(getattr(value, name), (*path, name))
        elif isinstance(value, dict):
            for key, item in value.items():
                walk(item, (*path, str(key)))

    walk(settings, ())
    return found


def tried(exc: BaseException) -> list[tuple[str, int]]:
    """The (host, port) pairs an error and its causes name."""
    pairs: list[tuple[str, int]] = []
    for link in exception_chain(exc):
        texts = [str(link), repr(link)]
        try:  # httpx errors carry their request, whose URL their message leaves out
            request = getattr(link, "request", None)
        except RuntimeError:
            request = None
        url = getattr(request, "url", None)
        if url is not None:
            texts.append(str(url))
        for text in texts:
            for pattern in _HOST_PORT:
                pairs += [(h.strip("[]").lower(), int(p)) for h, p in pattern.findall(text)]
            for raw in _URL.findall(text):
                split = urlsplit(raw.rstrip(".,;)"))
                try:
                    port = split.port or DEFAULT_PORTS.get(split.scheme.lower())
                except ValueError:
                    continue
                if split.hostname and port:
                    pairs.append((split.hostname.lower(), port))
            pairs += [(h.strip("[]").lower(), int(p)) for h, p in _BARE.findall(text)]
    return list(dict.fromkeys(pairs))


def _is_connection_error(exc: BaseException) -> bool:
    """Transient by the shared policy (refused, reset, timed out, 5xx), or PostgreSQL refusing the
    DSN's credentials: either way the endpoint's setting is at fault. (A database that does not exist
    may be a parameter's fault: it is left to the duty.)"""
    if is_transient(exc):
        return True
    return any(
        type(link).__name__ == "OperationalError" and any(w in str(link) for w in CREDENTIALS_REFUSED)
        for link in exception_chain(exc)
    )


def what_failed(exc: BaseException) -> str:
    """'connection refused', 'timed out', 'host not found', or the error's first line."""
    text = " ".join(str(link) for link in exception_chain(exc)).lower()
    if "password authentication failed" in text:
        return "password authentication failed"
    if "pg_hba.conf" in text:
        return "no pg_hba.conf entry for this client"
    if "refused" in text:
        return "connection refused"
    if "timed out" in text or "timeout" in text:
        return "timed out"
    if "name or service not known" in text or "nodename nor servname" in text or "resolve" in text:
        return "host not found"
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return first[:200]


def unreachable(exc: BaseException, settings: Settings) -> str | None:
    """'<ENV VAR>: connection refused at <endpoint>' when `exc` is a connection error to an endpoint
    the settings name; None when it is not (a bug, bad data: the caller re-raises)."""
    if not _is_connection_error(exc):
        return None
    pairs = set(tried(exc))
    matches = [(env, shown) for env, shown, host, port in endpoints(settings) if (host, port) in pairs]
    if not matches:
        return None
    names = " or ".join(dict.fromkeys(env for env, _ in matches))
    return f"{names}: {what_failed(exc)} at {matches[0][1]}"
