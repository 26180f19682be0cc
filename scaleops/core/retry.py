"""The shared retry policy: retry what a retry can fix (transient network, throttling, 5xx), nothing else.

`is_transient(exc)` is the classifier; `retry_on_transient` plugs it into Prefect's `retry_condition_fn`;
`RETRY` holds the task options (exponential backoff with jitter) every task spreads into `@task(...)`;
`call_with_retry` is the same policy for plain functions that run outside a task.
"""

from __future__ import annotations

import os
import random
import socket
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

T = TypeVar("T")

# S3/AWS error codes that mean "slow down" or "try again": never a bad request.
TRANSIENT_AWS_CODES = frozenset(
    {
        "SlowDown",
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "RequestThrottled",
        "RequestThrottledException",
        "TooManyRequestsException",
        "ProvisionedThroughputExceededException",
        "RequestLimitExceeded",
        "RequestTimeout",
        "RequestTimeoutException",
        "InternalError",
        "InternalFailure",
        "ServiceUnavailable",
        "ServiceUnavailableException",
        "PriorRequestNotComplete",
        "503",
        "500",
    }
)
# JSON-RPC error codes providers use for rate limits and overload.
TRANSIENT_RPC_CODES = frozenset({-32005, -32029, 429})
TRANSIENT_RPC_WORDS = (
    "rate limit",
    "too many requests",
    "limit exceeded",
    "try again",
    "timeout",
    "overloaded",
)
# PostgreSQL SQLSTATE classes that no retry fixes even when psycopg raises OperationalError for them.
PERMANENT_PG_CLASSES = ("28", "3D", "42")
PERMANENT_PG_WORDS = ("password authentication failed", "does not exist", "no pg_hba.conf entry")


def _status_code(exc: BaseException) -> int | None:
    response = getattr(exc, "response", None)
    for holder in (response, exc):
        for attr in ("status_code", "status"):
            code = getattr(holder, attr, None)
            if isinstance(code, int):
                return code
    if isinstance(response, dict):  # botocore ClientError
        code = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if isinstance(code, int):
            return code
    return None


def _is_transient_status(code: int | None) -> bool:
    return code is not None and (code == 429 or code >= 500)


def _classify_one(exc: BaseException) -> bool | None:
    """True: transient. False: known permanent. None: no opinion (look at the cause)."""
    module = type(exc).__module__.split(".")[0]
    name = type(exc).__name__

    if module == "psycopg" or module == "psycopg_pool":
        import psycopg

        if isinstance(exc, psycopg.errors.SerializationFailure | psycopg.errors.DeadlockDetected):
            return True
        if isinstance(exc, psycopg.OperationalError):
            sqlstate = getattr(exc, "sqlstate", None) or ""
            if sqlstate.startswith(PERMANENT_PG_CLASSES):
                return False
            text = str(exc).lower()
            return not any(word in text for word in PERMANENT_PG_WORDS)
        return module == "psycopg_pool" and name == "PoolTimeout"

    if module == "redis":
        import redis.exceptions as rex

        transient = (
            rex.ConnectionError,
            rex.TimeoutError,
            rex.BusyLoadingError,
            rex.TryAgainError,
            rex.ClusterDownError,
            rex.MasterDownError,
        )
        if isinstance(exc, transient):
            return not isinstance(exc, rex.AuthenticationError)
        return False

    if module == "botocore":
        from botocore.exceptions import (
            ClientError,
            ConnectionClosedError,
            ConnectTimeoutError,
            EndpointConnectionError,
            ReadTimeoutError,
        )

        if isinstance(exc, EndpointConnectionError | ConnectionClosedError | ReadTimeoutError):
            return True
        if isinstance(exc, ConnectTimeoutError):
            return True
        if isinstance(exc, ClientError):
            code = str(exc.response.get("Error", {}).get("Code", ""))
            return code in TRANSIENT_AWS_CODES or _is_transient_status(_status_code(exc))
        return False

    if module == "httpx":
        import httpx

        if isinstance(exc, httpx.TransportError):  # connect/read/write errors and timeouts
            return True
        if isinstance(exc, httpx.HTTPStatusError):
            return _is_transient_status(exc.response.status_code)
        return False

    if module == "requests" or module == "urllib3":
        if "Timeout" in name or "Connection" in name or "ProtocolError" in name:
            return True
        if name == "HTTPError":
            return _is_transient_status(_status_code(exc))
        return None

    if module in ("web3", "aiohttp", "solana", "solders"):
        if "Timeout" in name or "Connection" in name:
            return True
        rpc_code = _rpc_code(exc)
        text = str(exc).lower()
        if rpc_code in TRANSIENT_RPC_CODES or any(word in text for word in TRANSIENT_RPC_WORDS):
            return True
        if _is_transient_status(_status_code(exc)):
            return True
        return None

    if isinstance(exc, ConnectionError | TimeoutError | socket.timeout):
        return True
    if isinstance(exc, OSError) and exc.errno in (104, 110, 111, 113):  # reset, timed out, refused, no route
        return True
    return None


def _rpc_code(exc: BaseException) -> int | None:
    for candidate in (getattr(exc, "rpc_response", None), *(exc.args[:1] if exc.args else ())):
        if isinstance(candidate, dict):
            error = candidate.get("error", candidate)
            if isinstance(error, dict) and isinstance(error.get("code"), int):
                return int(error["code"])
    return None


def exception_chain(exc: BaseException) -> Iterator[BaseException]:
    """`exc`, then its causes and contexts, each once."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def is_transient(exc: BaseException) -> bool:
    """Whether retrying the operation that raised `exc` can succeed (walks `__cause__`/`__context__`)."""
    for link in exception_chain(exc):
        verdict = _classify_one(link)
        if verdict is not None:
            return verdict
    return False


def retry_on_transient(task: Any, task_run: Any, state: Any) -> bool:
    """Prefect `retry_condition_fn`: retry a failed task run only when its exception is transient."""
    exc = getattr(state, "data", None)
    if not isinstance(exc, BaseException):
        try:
            exc = state.result(raise_on_failure=False)
        except Exception as raised:  # the result could not be read: judge what was raised instead
            exc = raised
    return isinstance(exc, BaseException) and is_transient(exc)


def backoff_delays(retries: int, base: float = 2.0, cap: float = 60.0) -> list[float]:
    """Exponential backoff: base, 2*base, 4*base ... capped (Prefect adds the jitter)."""
    return [min(cap, base * 2**attempt) for attempt in range(retries)]


def retries_from_env(default: int = 4) -> int:
    """The retry budget of every task: `SCALEOPS_RETRIES` (Settings.retries validates it and names it
    when bad; read here because tasks are declared at import, before any settings are loaded)."""
    try:
        value = int(os.environ.get("SCALEOPS_RETRIES", default))
    except ValueError:
        return default
    return value if 0 <= value <= 10 else default


RETRIES = retries_from_env()
JITTER = 0.5
# Spread into @task(...): `@task(**RETRY, task_run_name=...)`.
RETRY: dict[str, Any] = {
    "retries": RETRIES,
    "retry_delay_seconds": backoff_delays(RETRIES),
    "retry_jitter_factor": JITTER,
    "retry_condition_fn": retry_on_transient,
}


def call_with_retry(
    fn: Callable[[], T],
    *,
    retries: int = RETRIES,
    base: float = 0.5,
    cap: float = 30.0,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """Call `fn`, retrying transient failures with exponential backoff and full jitter."""
    for attempt in range(retries + 1):
        try:
            return fn()
        except Exception as exc:
            if attempt >= retries or not is_transient(exc):
                raise
            sleep(random.uniform(0, min(cap, base * 2**attempt)))
    raise AssertionError("unreachable")  # pragma: no cover


def io_task(**options: Any) -> Callable[[Callable[..., T]], Any]:
    """`@task` for work that talks to a system: the shared retry policy, exceptions leave with their
    secrets masked, and nothing is cached across runs (a check or an upload must really happen)."""
    from prefect import task
    from prefect.cache_policies import NO_CACHE

    from scaleops.core.redaction import redacting

    def decorate(fn: Callable[..., T]) -> Any:
        return task(**{**RETRY, "cache_policy": NO_CACHE, **options})(redacting(fn))

    return decorate
