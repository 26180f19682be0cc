"""Secrets never reach a log line, a traceback or published data."""

from __future__ import annotations

import io
import logging

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
