"""Keep secrets that travel inside URLs out of the database and the logs.

Callers may put credentials in a URL: ``https://user:pass@host/a.jpg`` for an image, or
``https://backend.example/hook?token=abc`` for a job callback. They are needed for the
request itself and nowhere else, so what cartag stores or logs is a redacted copy:

* :func:`strip_password` — the password of the userinfo becomes ``***``
  (``https://user:***@host/a.jpg``); stored image URLs, job items and results.
* :func:`redact_url` — the same, and the values of sensitive-looking query parameters
  (``token``, ``sig``, ``key``, ``secret``, ``password``, ``auth``, ``credential``,
  ``session``...) become ``***`` too; callback URLs.
* :func:`redact_text` — both, for any URL found in free text; :class:`RedactingFilter`
  applies it to log records (the httpx ``HTTP Request:`` lines included).

The query of an *image* URL is kept in storage: it is part of the image's identity
(signed CDN URLs) and of its cache key. Logs redact it like any other URL.
"""

from __future__ import annotations

import logging
import re
from typing import Final
from urllib.parse import urlsplit, urlunsplit

REDACTED: Final[str] = "***"

# Query parameter names that usually carry a secret (matched anywhere in the name,
# case-insensitively: access_token, X-Amz-Signature, api_key, client_secret...).
_SENSITIVE_NAME: Final = re.compile(
    r"token|sig|secret|pass|pwd|key|auth|credential|session", re.IGNORECASE
)
# In free text: scheme://user:password@ (the password may contain ':').
_USERINFO_IN_TEXT: Final = re.compile(
    r"(?P<head>\b[a-zA-Z][a-zA-Z0-9+.\-]*://[^\s/?#@:\"'<>\\]*):[^\s/?#@\"'<>\\]*@"
)
# In free text: ?name=value or &name=value with a sensitive-looking name.
_QUERY_IN_TEXT: Final = re.compile(
    r"(?P<head>[?&][^=&\s#\"'<>\\]*?(?:token|sig|secret|pass|pwd|key|auth|credential|session)"
    r"[^=&\s#\"'<>\\]*=)[^&\s#\"'<>\\]+",
    re.IGNORECASE,
)


def has_password(url: str) -> bool:
    """Whether the URL's userinfo carries a password (``user:pass@``)."""
    if "@" not in url:  # the cached classify path checks every URL: stay cheap
        return False
    try:
        return urlsplit(url).password is not None
    except ValueError:
        return False


def strip_password(url: str) -> str:
    """``url`` with the password of its userinfo replaced by ``***``; the rest untouched.

    A URL without a password (or one ``urllib`` cannot split) is returned as it is.
    """
    if "@" not in url:  # the cached classify path strips every URL: stay cheap
        return url
    try:
        parts = urlsplit(url)
    except ValueError:
        return url
    userinfo, at, hostport = parts.netloc.rpartition("@")
    if not at or ":" not in userinfo:
        return url
    user = userinfo.split(":", 1)[0]
    return urlunsplit(parts._replace(netloc=f"{user}:{REDACTED}@{hostport}"))


def redact_url(url: str) -> str:
    """``url`` without its password and without the values of sensitive query parameters.

    Example:
        ``https://u:p@h/hook?token=abc&id=7`` -> ``https://u:***@h/hook?token=***&id=7``
    """
    stripped = strip_password(url)
    try:
        parts = urlsplit(stripped)
    except ValueError:
        return stripped
    if not parts.query:
        return stripped
    fields = []
    for field in parts.query.split("&"):
        name, eq, value = field.partition("=")
        if eq and value and _SENSITIVE_NAME.search(name):
            field = f"{name}={REDACTED}"
        fields.append(field)
    return urlunsplit(parts._replace(query="&".join(fields)))


def redact_text(text: str) -> str:
    """Redact every URL password and sensitive query value found in ``text``."""
    if "@" in text:
        text = _USERINFO_IN_TEXT.sub(rf"\g<head>:{REDACTED}@", text)
    if "=" in text:
        text = _QUERY_IN_TEXT.sub(rf"\g<head>{REDACTED}", text)
    return text


class RedactingFilter(logging.Filter):
    """Rewrites a record's message (and traceback) with :func:`redact_text`.

    Attach it to a *handler*: a handler's filters see the records of every logger
    (httpx's and httpcore's included), a logger's filters only its own records.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        redacted = redact_text(message)
        if redacted != message:
            record.msg, record.args = redacted, None
        if record.exc_info and not record.exc_text:
            # Exception messages name URLs too (FetchError); format the traceback now so
            # that formatters use this redacted text instead of formatting it again.
            record.exc_text = redact_text(logging.Formatter().formatException(record.exc_info))
        elif record.exc_text:
            record.exc_text = redact_text(record.exc_text)
        return True


def redact_handlers(logger: logging.Logger) -> None:
    """Add a :class:`RedactingFilter` to each handler of ``logger`` that lacks one."""
    for handler in logger.handlers:
        if not any(isinstance(f, RedactingFilter) for f in handler.filters):
            handler.addFilter(RedactingFilter())
