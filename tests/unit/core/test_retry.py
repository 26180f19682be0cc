"""The transient-error classifier: retry what a retry can fix, nothing else."""

from __future__ import annotations

import httpx
import psycopg
import pytest
import redis.exceptions as rex
from botocore.exceptions import ClientError, EndpointConnectionError, ReadTimeoutError
from hypothesis import given
from hypothesis import strategies as st
from prefect.states import Failed

from scaleops.core.retry import RETRY, backoff_delays, call_with_retry, is_transient, retry_on_transient


def client_error(code: str, status: int = 400) -> ClientError:
    return ClientError(
        {"Error": {"Code": code, "Message": code}, "ResponseMetadata": {"HTTPStatusCode": status}},
        "PutObject",
    )


def http_error(status: int) -> httpx.HTTPStatusError:
    request = httpx.Request("GET", "http://example.invalid/")
    return httpx.HTTPStatusError("boom", request=request, response=httpx.Response(status, request=request))


class Web3RPCError(Exception):
    """Stand-in with web3's shape: a JSON-RPC error dict in `rpc_response`."""

    __module__ = "web3.exceptions"

    def __init__(self, code: int, message: str):
        super().__init__(message)
        self.rpc_response = {"jsonrpc": "2.0", "id": 1, "error": {"code": code, "message": message}}


TRANSIENT = [
    ConnectionResetError(104, "reset"),
    ConnectionRefusedError(111, "refused"),
    TimeoutError("timed out"),
    TimeoutError("timed out"),
    httpx.ConnectError("refused"),
    httpx.ReadTimeout("slow"),
    http_error(429),
    http_error(503),
    client_error("SlowDown", 503),
    client_error("ThrottlingException", 400),
    client_error("InternalError", 500),
    client_error("RequestTimeout", 400),
    EndpointConnectionError(endpoint_url="http://s3"),
    ReadTimeoutError(endpoint_url="http://s3"),
    psycopg.OperationalError("server closed the connection unexpectedly"),
    psycopg.errors.SerializationFailure("could not serialize access"),
    psycopg.errors.DeadlockDetected("deadlock detected"),
    rex.ConnectionError("Connection refused"),
    rex.TimeoutError("Timeout reading from socket"),
    rex.BusyLoadingError("LOADING"),
    rex.TryAgainError("TRYAGAIN"),
    Web3RPCError(-32005, "limit exceeded"),
    Web3RPCError(-32000, "Too Many Requests: rate limit reached"),
]

PERMANENT = [
    ValueError("bad value"),
    KeyError("missing"),
    http_error(400),
    http_error(404),
    client_error("AccessDenied", 403),
    client_error("NoSuchBucket", 404),
    psycopg.OperationalError('connection failed: FATAL:  password authentication failed for user "x"'),
    psycopg.OperationalError('connection failed: FATAL:  database "nope" does not exist'),
    psycopg.errors.UndefinedTable("relation does not exist"),
    psycopg.errors.UniqueViolation("duplicate key"),
    rex.ResponseError("WRONGTYPE"),
    rex.AuthenticationError("invalid password"),
    Web3RPCError(-32000, "execution reverted"),
    Web3RPCError(3, "execution reverted: paused"),
]


@pytest.mark.parametrize("exc", TRANSIENT, ids=lambda e: f"{type(e).__name__}:{e}"[:60])
def test_transient(exc: BaseException) -> None:
    assert is_transient(exc)


@pytest.mark.parametrize("exc", PERMANENT, ids=lambda e: f"{type(e).__name__}:{e}"[:60])
def test_permanent(exc: BaseException) -> None:
    assert not is_transient(exc)


def test_cause_chain_is_followed() -> None:
    try:
        try:
            raise ConnectionResetError(104, "reset by peer")
        except ConnectionResetError as inner:
            raise RuntimeError("upload failed") from inner
    except RuntimeError as outer:
        assert is_transient(outer)
    try:
        try:
            raise ValueError("bad manifest")
        except ValueError as inner:
            raise RuntimeError("upload failed") from inner
    except RuntimeError as outer:
        assert not is_transient(outer)


def test_prefect_retry_condition() -> None:
    assert retry_on_transient(None, None, Failed(data=client_error("SlowDown", 503)))
    assert not retry_on_transient(None, None, Failed(data=ValueError("bad parameter")))
    assert RETRY["retry_condition_fn"] is retry_on_transient
    assert RETRY["retry_jitter_factor"] > 0


def test_call_with_retry_retries_transient_only() -> None:
    calls: list[int] = []
    sleeps: list[float] = []

    def flaky() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise ConnectionResetError(104, "reset")
        return "done"

    assert call_with_retry(flaky, sleep=sleeps.append) == "done"
    assert len(calls) == 3 and len(sleeps) == 2

    bad_calls: list[int] = []

    def bad() -> None:
        bad_calls.append(1)
        raise ValueError("validation")

    with pytest.raises(ValueError):
        call_with_retry(bad, sleep=sleeps.append)
    assert len(bad_calls) == 1

    def always_down() -> None:
        raise TimeoutError("down")

    with pytest.raises(TimeoutError):
        call_with_retry(always_down, retries=2, sleep=lambda _s: None)


@given(st.integers(min_value=0, max_value=20), st.floats(min_value=0.01, max_value=10), st.floats(1, 100))
def test_backoff_grows_and_is_capped(retries: int, base: float, cap: float) -> None:
    delays = backoff_delays(retries, base=base, cap=cap)
    assert len(delays) == retries
    assert all(0 < d <= cap for d in delays)
    assert delays == sorted(delays)


def test_the_retry_budget_comes_from_scaleops_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    from scaleops.core.retry import retries_from_env
    from scaleops.core.settings import ConfigError, load_settings

    monkeypatch.delenv("SCALEOPS_RETRIES", raising=False)
    assert retries_from_env() == 4
    monkeypatch.setenv("SCALEOPS_RETRIES", "0")  # what the wrong-endpoint tests use: fail at once
    assert retries_from_env() == 0 and load_settings().retries == 0
    monkeypatch.setenv("SCALEOPS_RETRIES", "many")
    assert retries_from_env() == 4  # the tasks keep the default; the settings name the variable
    with pytest.raises(ConfigError, match="SCALEOPS_RETRIES"):
        load_settings()
