"""Keep secrets out of logs, artifacts, events and error messages.

`Redactor` replaces every configured secret (and the password inside any URL) with `****`, in every form
it may be quoted back: as given, percent-decoded, and (for a value with spaces, which a parser reports one
token at a time) each whitespace-separated piece.
`SecretFilter` is a logging filter built on it; `install_log_filter` puts one on every handler, Prefect's
API log handler included, so a secret that reaches a log call never reaches a terminal or the server.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import logging
import re
import typing
import urllib.parse
from collections.abc import Callable, Iterable, Iterator
from typing import Any, ParamSpec, TypeVar

P = ParamSpec("P")
T = TypeVar("T")

MASK = "****"
# user:password@ inside any URL, whatever the scheme.
_URL_PASSWORD = re.compile(r"(?P<prefix>[a-zA-Z][a-zA-Z0-9+.-]*://[^:/@\s]*:)(?P<pw>[^@\s/]+)(?P<at>@)")
# password=... in libpq key=value strings and similar.
_KV_PASSWORD = re.compile(r"(?P<prefix>\bpassword\s*=\s*)(?P<pw>'[^']*'|\S+)", re.IGNORECASE)


MIN_SECRET_LENGTH = 4  # shorter values would mask ordinary words


def secret_forms(secret: str) -> set[str]:
    """The forms a secret may show up in: itself, percent-decoded and percent-encoded, and, for a value
    with whitespace (a password with a space, which libpq reports token by token), each piece. A
    connection string (`://` or `key=value`) is not split: its pieces are hosts and user names."""
    forms = {secret, secret.strip("'\""), urllib.parse.unquote(secret), urllib.parse.quote(secret, safe="")}
    if not ("://" in secret or "=" in secret):
        for form in list(forms):
            forms.update(form.split())
    return {f for f in forms if len(f) >= MIN_SECRET_LENGTH}


class Redactor:
    """Masks known secret values and URL/DSN passwords in text and nested data."""

    def __init__(self, secrets: Iterable[str] = ()):
        self._secrets: list[str] = []
        self._pattern: re.Pattern[str] | None = None
        self.add(*secrets)

    def add(self, *secrets: str) -> None:
        """Mask these values too, in each of their `secret_forms` (values shorter than 4 characters are
        ignored: they would mask words)."""
        known = set(self._secrets)
        for secret in secrets:
            if secret:
                known |= secret_forms(secret)
        self._secrets = sorted(known, key=len, reverse=True)
        self._pattern = re.compile("|".join(map(re.escape, self._secrets))) if self._secrets else None

    def text(self, value: str) -> str:
        if self._pattern is not None:
            value = self._pattern.sub(MASK, value)
        value = _URL_PASSWORD.sub(lambda m: f"{m['prefix']}{MASK}{m['at']}", value)
        return _KV_PASSWORD.sub(lambda m: f"{m['prefix']}{MASK}", value)

    def data(self, value: Any) -> Any:
        """Redact every string inside dicts, lists and tuples (for event payloads and reports)."""
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, dict):
            return {self.text(str(k)): self.data(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self.data(v) for v in value]
        return value


class SecretFilter(logging.Filter):
    """Rewrites each record's message (and traceback) with its secrets masked. Never drops a record."""

    def __init__(self, redactor: Redactor):
        super().__init__("scaleops.secrets")
        self.redactor = redactor

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "_scaleops_redacted", False):
            return True
        try:
            message = record.getMessage()
        except Exception:  # a broken format string: keep what we have
            message = str(record.msg)
        record.msg = self.redactor.text(message)
        record.args = None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self.redactor.text(record.exc_text)
            record.exc_info = None
        record._scaleops_redacted = True
        return True


def _handlers() -> Iterable[logging.Handler]:
    yield from logging.getLogger().handlers
    for logger in list(logging.Logger.manager.loggerDict.values()):
        if isinstance(logger, logging.Logger):
            yield from logger.handlers


def install_log_filter(redactor: Redactor) -> SecretFilter:
    """Attach one SecretFilter to every handler that exists now (call after Prefect set up logging)."""
    secret_filter = SecretFilter(redactor)
    for handler in _handlers():
        if not any(isinstance(f, SecretFilter) for f in handler.filters):
            handler.addFilter(secret_filter)
    return secret_filter


# The process-wide redactor: every log filter, task and failure hook masks what it knows. It holds
# values to hide, never a connection; `protect()` adds the secrets of the settings in use.
REDACTOR = Redactor()


def protect(secrets: Iterable[str]) -> Redactor:
    """Add these secrets to the process-wide Redactor, filter every log handler with it; return it."""
    REDACTOR.add(*secrets)
    install_log_filter(REDACTOR)
    return REDACTOR


def scrub_exception(exc: BaseException, redactor: Redactor = REDACTOR) -> BaseException:
    """Mask secrets in an exception's message, and its causes', in place (type and chain are kept, so
    the retry policy still classifies it; Prefect stores the masked text as the state message)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if current.args:
            masked = tuple(redactor.text(a) if isinstance(a, str) else a for a in current.args)
            if masked != current.args:
                with contextlib.suppress(Exception):
                    current.args = masked
        current = current.__cause__ or current.__context__
    return exc


@contextlib.contextmanager
def redacted_errors(redactor: Redactor = REDACTOR) -> Iterator[None]:
    """Whatever escapes this block leaves with its secrets masked."""
    try:
        yield
    except BaseException as exc:
        scrub_exception(exc, redactor)
        raise


def redacting(fn: Callable[P, T]) -> Callable[P, T]:
    """Decorator form of `redacted_errors` (used by every task and duty flow)."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        with redacted_errors():
            return fn(*args, **kwargs)

    # Prefect builds parameter models from the signature: give it the annotations evaluated in the
    # wrapped function's own module (they are strings under `from __future__ import annotations`).
    with contextlib.suppress(Exception):
        wrapper.__signature__ = inspect.signature(fn, eval_str=True)  # type: ignore[attr-defined]
        wrapper.__annotations__ = typing.get_type_hints(fn, include_extras=True)
    return wrapper
