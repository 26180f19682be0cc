"""A client that cannot reach its system names the setting that points at it (issue 12, section 5).

Each client is really tried against a closed port on loopback (refused at once, no service needed)."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from scaleops.core import clients
from scaleops.core.endpoints import unreachable
from scaleops.core.settings import Settings

SETTINGS = Settings(
    postgres={"dsn": "postgresql://postgres:hunter2@127.0.0.1:1/postgres"},  # type: ignore[arg-type]
    redis={"url": "redis://127.0.0.1:2/0"},  # type: ignore[arg-type]
    chains={"optimism": {"rpc_url": "http://127.0.0.1:4", "chain_id": 10}},  # type: ignore[dict-item]
    capacity={"prometheus_url": "http://127.0.0.1:5"},  # type: ignore[arg-type]
    archive={"gateway_url": "http://localhost:6"},  # type: ignore[arg-type]
)


def raised(call: Callable[[], object]) -> BaseException:
    try:
        call()
    except Exception as exc:
        return exc
    raise AssertionError("the call did not fail")


@pytest.mark.parametrize(
    ("call", "expected"),
    [
        (
            lambda: clients.postgres_connect(SETTINGS),
            "SCALEOPS_POSTGRES__DSN: connection refused at postgresql://127.0.0.1:1",
        ),
        (
            lambda: clients.redis_client(SETTINGS).ping(),
            "SCALEOPS_REDIS__URL: connection refused at redis://127.0.0.1:2",
        ),
        (
            lambda: clients.evm_client(SETTINGS, "optimism").eth.chain_id,
            "SCALEOPS_CHAINS__OPTIMISM__RPC_URL: connection refused at http://127.0.0.1:4",
        ),
        (
            lambda: clients.prometheus_http(SETTINGS).get("/api/v1/query"),
            "SCALEOPS_CAPACITY__PROMETHEUS_URL: connection refused at http://127.0.0.1:5",
        ),
    ],
    ids=["psycopg", "redis", "web3", "httpx"],
)
def test_a_refused_connection_names_its_setting(call: Callable[[], object], expected: str) -> None:
    message = unreachable(raised(call), SETTINGS)
    assert message == expected
    assert "hunter2" not in message


def test_an_httpx_error_without_the_url_in_its_text_is_named_by_its_request() -> None:
    import httpx

    exc = raised(lambda: httpx.get("http://localhost:6/price"))
    assert "localhost:6" not in str(exc)  # httpx says only "[Errno 111] Connection refused"
    assert (
        unreachable(exc, SETTINGS)
        == "SCALEOPS_ARCHIVE__GATEWAY_URL: connection refused at http://localhost:6"
    )


def test_errors_that_are_not_about_an_endpoint_are_left_alone() -> None:
    assert unreachable(ValueError("bad row at 127.0.0.1:1"), SETTINGS) is None  # not a connection error
    refused = ConnectionRefusedError(111, "Connection refused")  # names no endpoint the settings hold
    assert unreachable(refused, SETTINGS) is None
    other = raised(lambda: clients.redis_client(Settings(redis={"url": "redis://127.0.0.1:9/0"})).ping())  # type: ignore[arg-type]
    assert unreachable(other, SETTINGS) is None  # port 9 is no setting of SETTINGS


def test_a_database_that_does_not_exist_is_left_to_the_duty() -> None:
    """It may be a parameter's fault (databases=["nosuch_db"]), not the DSN's."""
    import psycopg

    text = 'connection to server at "127.0.0.1", port 1 failed: FATAL:  database "nosuch_db" does not exist'
    assert unreachable(psycopg.OperationalError(text), SETTINGS) is None
    denied = text.replace(
        'database "nosuch_db" does not exist', 'password authentication failed for user "x"'
    )
    assert unreachable(psycopg.OperationalError(denied), SETTINGS) == (
        "SCALEOPS_POSTGRES__DSN: password authentication failed at postgresql://127.0.0.1:1"
    )
