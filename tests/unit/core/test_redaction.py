"""Secrets never reach a log line, a traceback or published data."""

from __future__ import annotations

import io
import logging

import pytest

from scaleops.core.redaction import MASK, Redactor, SecretFilter, install_log_filter

SECRET = "hunter2-very-secret"


def test_text_masks_known_secrets_and_url_passwords() -> None:
    r = Redactor([SECRET])
    assert r.text(f"token={SECRET}!") == f"token={MASK}!"
    assert r.text("postgresql://app:otherpass@db:5432/x") == f"postgresql://app:{MASK}@db:5432/x"
    assert r.text("host=db password=kvpass user=app") == f"host=db password={MASK} user=app"
    assert r.text("redis://:nopass@cache:6379") == f"redis://:{MASK}@cache:6379"
    assert r.text("nothing to see") == "nothing to see"


def test_short_values_are_not_masked_everywhere() -> None:
    r = Redactor(["ab", ""])
    assert r.text("abc") == "abc"


def test_data_masks_nested_values() -> None:
    r = Redactor([SECRET])
    data = {"a": [SECRET, {"b": f"x{SECRET}"}], "n": 3, SECRET: "key"}
    masked = r.data(data)
    assert SECRET not in repr(masked)
    assert masked["n"] == 3


def _logger_with_stream() -> tuple[logging.Logger, io.StringIO]:
    stream = io.StringIO()
    logger = logging.getLogger(f"test.redaction.{id(stream)}")
    logger.propagate = False
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    return logger, stream


def test_filter_masks_message_args_and_traceback() -> None:
    logger, stream = _logger_with_stream()
    install_log_filter(Redactor([SECRET]))
    logger.info("connecting with %s", SECRET)
    try:
        raise RuntimeError(f"failed to connect to postgresql://u:{SECRET}@db/x")
    except RuntimeError:
        logger.exception("boom")
    text = stream.getvalue()
    assert SECRET not in text
    assert text.count(MASK) >= 2
    assert "RuntimeError" in text


def test_filter_is_installed_once_per_handler() -> None:
    logger, _ = _logger_with_stream()
    redactor = Redactor([SECRET])
    install_log_filter(redactor)
    install_log_filter(redactor)
    handler = logger.handlers[0]
    assert sum(isinstance(f, SecretFilter) for f in handler.filters) == 1


# ---------------------------------------------------------------------------------------------- issue 18.1
# A malformed DSN printed its password: libpq quotes the token it cannot parse.
BAD_DSN = "postgresql://postgres:Sekr3t%ZZpw@127.0.0.1:5432/postgres"


def test_redactor_masks_the_token_libpq_quotes() -> None:
    from psycopg.conninfo import conninfo_to_dict

    from scaleops.core.settings import url_password

    try:
        conninfo_to_dict(BAD_DSN)
    except Exception as exc:
        message = str(exc)
    assert "Sekr3t%ZZpw" in message  # libpq really does quote it
    masked = Redactor([BAD_DSN, url_password(BAD_DSN) or ""]).text(message)
    assert "Sekr3t" not in masked and MASK in masked


@pytest.mark.parametrize(
    ("secret", "message", "leak"),
    [
        ("Sekr3t longpw", 'unexpected spaces found in "Sekr3t longpw"', "longpw"),
        ("Sekr3t longerpart", 'missing "=" after "longerpart" in connection info string', "longerpart"),
        ("p@ss w0rd!", "password p%40ss%20w0rd%21 refused", "p%40ss"),
        ("pa%20ss%20word", "bad password 'pa ss word'", "word"),
    ],
)
def test_redactor_masks_every_form_of_a_secret(secret: str, message: str, leak: str) -> None:
    assert leak not in Redactor([secret]).text(message)


def test_connection_strings_are_not_split_into_pieces() -> None:
    r = Redactor(["host=db.internal user=app password=Sekr3tpw"])
    assert r.text("connecting to host=db.internal") == "connecting to host=db.internal"


DSN_CASES = [
    BAD_DSN,
    "postgresql://postgres:Sekr3t longpw@127.0.0.1:5432/postgres",
    "host=127.0.0.1 password=Sekr3t longerpart user=postgres",
    "host=127.0.0.1 password='Sekr3t longerpart user=postgres",
]


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    import os

    for key in list(os.environ):
        if key.startswith("SCALEOPS_") or key == "PREFECT_API_URL":
            monkeypatch.delenv(key)
    return monkeypatch


def _pieces(dsn: str) -> list[str]:
    from scaleops.core.settings import url_password

    password = url_password(dsn) or ""
    return [p for p in (password, *password.split()) if len(p) >= 4]


@pytest.mark.parametrize("dsn", DSN_CASES)
def test_config_check_never_prints_a_bad_dsns_password(clean_env: pytest.MonkeyPatch, dsn: str) -> None:
    from typer.testing import CliRunner

    from scaleops.cli.app import app

    clean_env.setenv("SCALEOPS_POSTGRES__DSN", dsn)
    result = CliRunner().invoke(app, ["config", "check"])
    assert result.exit_code == 2
    output = result.output + (result.stderr if result.stderr_bytes is not None else "")
    assert "SCALEOPS_POSTGRES__DSN" in output
    for piece in _pieces(dsn):
        assert piece not in output, piece


@pytest.mark.parametrize("dsn", DSN_CASES)
def test_config_error_and_validation_error_never_quote_the_password(
    clean_env: pytest.MonkeyPatch, dsn: str
) -> None:
    from pydantic import ValidationError

    from scaleops.core.settings import ConfigError, Settings, load_settings

    clean_env.setenv("SCALEOPS_POSTGRES__DSN", dsn)
    with pytest.raises(ConfigError) as config_error:
        load_settings()
    with pytest.raises(ValidationError) as validation_error:
        Settings()  # constructed directly (tests, the sandbox): pydantic's own text quotes no input
    for text in (str(config_error.value), repr(config_error.value.problems), str(validation_error.value)):
        for piece in _pieces(dsn):
            assert piece not in text, (piece, text)


def test_a_secret_pasted_into_the_wrong_setting_is_masked_in_its_message(
    clean_env: pytest.MonkeyPatch,
) -> None:
    """Not only DSNs: any configured secret value, wherever a validator's message quotes it."""
    from scaleops.core.settings import ConfigError, load_settings

    clean_env.setenv("SCALEOPS_ALERTS__TOKEN", "tok-9f8e7d6c5b4a")
    clean_env.setenv("SCALEOPS_CAPACITY__LOOKBACK", "tok-9f8e7d6c5b4a")  # the duration validator quotes it
    with pytest.raises(ConfigError) as error:
        load_settings()
    assert "SCALEOPS_CAPACITY__LOOKBACK" in str(error.value)
    assert "tok-9f8e7d6c5b4a" not in str(error.value)


@pytest.mark.parametrize(
    ("dsn", "shown"),
    [
        ("host=db password='Sekr3t longpw' user=x", "host=db password=**** user=x"),
        ("host=db password=Sekr3tpw user=x", "host=db password=**** user=x"),
        ("host=db user=x password=Sekr3tpw", "host=db user=x password=****"),
        ("host=db user=x", "host=db user=x"),
    ],
)
def test_config_show_masks_a_quoted_password_with_spaces_whole(
    clean_env: pytest.MonkeyPatch, dsn: str, shown: str
) -> None:
    from scaleops.core.settings import load_settings, mask_url_password

    assert mask_url_password(dsn) == shown
    clean_env.setenv("SCALEOPS_POSTGRES__DSN", dsn)
    # a DSN without a password is shown as **** whole (it may hold other secrets)
    assert load_settings().masked()["postgres"]["dsn"] == (shown if "password" in dsn else "****")
