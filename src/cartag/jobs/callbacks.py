"""Signed job callbacks: what a receiver checks to trust a POST from cartag.

Each callback carries two headers:

* ``X-Cartag-Timestamp``: the Unix time (seconds) when it was sent;
* ``X-Cartag-Signature``: ``sha256=<hex>``, the HMAC-SHA256 of
  ``<timestamp>.<raw body>`` under the deployment's callback secret.

The receiver recomputes the HMAC over the raw body it got, compares in constant time and
refuses timestamps older than a few minutes (a replayed callback). :func:`verify` is the
reference; the README shows the same in a few lines of Python.

The secret is ``CARTAG_CALLBACK_SECRET`` when set, else one generated once per
deployment and kept in the database (``cartag callbacks secret`` prints it), so that
every API process and Celery worker signs with the same one.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import Any, Final

from pydantic import SecretStr

from cartag.clock import Clock
from cartag.store import secrets as secret_repo
from cartag.store.db import Database

SIGNATURE_HEADER: Final[str] = "X-Cartag-Signature"
TIMESTAMP_HEADER: Final[str] = "X-Cartag-Timestamp"
# The deployment_secrets row used when CARTAG_CALLBACK_SECRET is not set.
SECRET_NAME: Final[str] = "callback"
# How old a callback a receiver should still accept (documented, used by verify()).
DEFAULT_TOLERANCE_S: Final[int] = 300


def callback_secret(db: Database, configured: SecretStr | None, clock: Clock) -> str:
    """The secret that signs callbacks: the configured one, else the deployment's."""
    if configured is not None and configured.get_secret_value():
        return configured.get_secret_value()
    with db.write() as session:
        return secret_repo.get_or_create_secret(session, SECRET_NAME, clock.now())


def encode_payload(payload: dict[str, Any]) -> bytes:
    """The body of a callback: compact JSON, UTF-8."""
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()


def signature(secret: str, timestamp: int, body: bytes) -> str:
    """``sha256=<hex>``: the HMAC-SHA256 of ``<timestamp>.<body>`` under ``secret``."""
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"sha256={digest.hexdigest()}"


def signed_headers(secret: str, timestamp: int, body: bytes) -> dict[str, str]:
    """The headers of a callback whose body is ``body``, sent at ``timestamp``."""
    return {
        "Content-Type": "application/json",
        TIMESTAMP_HEADER: str(timestamp),
        SIGNATURE_HEADER: signature(secret, timestamp, body),
    }


def verify(
    secret: str,
    body: bytes,
    timestamp_header: str | None,
    signature_header: str | None,
    now: float,
    tolerance_s: int = DEFAULT_TOLERANCE_S,
) -> bool:
    """Whether a received callback is authentic and recent (what a receiver does).

    Args:
        secret: The callback secret.
        body: The raw request body, as received.
        timestamp_header: The ``X-Cartag-Timestamp`` header.
        signature_header: The ``X-Cartag-Signature`` header.
        now: The receiver's Unix time.
        tolerance_s: Oldest (and furthest in the future) timestamp accepted.
    """
    if not timestamp_header or not signature_header or not timestamp_header.isdigit():
        return False
    timestamp = int(timestamp_header)
    if abs(now - timestamp) > tolerance_s:
        return False
    return hmac.compare_digest(signature(secret, timestamp, body), signature_header)
