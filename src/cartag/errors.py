"""The one exception hierarchy of cartag.

Every error a user can cause or fix derives from :class:`CartagError`; the API
maps each branch to an HTTP status and the CLI to a message and exit code 2.
Messages say how to fix the problem.

::

    CartagError
    ├── ConfigError                 bad settings / missing files          (500, CLI exit 2)
    ├── InputError                  a request field is wrong              (422) .field names it
    │   └── BodyTooLargeError       request body over the size limit      (413) body_too_large
    ├── AuthError                   no or unknown API key                 (401)
    │   └── PermissionDeniedError   key lacks the role                    (403)
    ├── NotFoundError               unknown image key / job id            (404)
    ├── ConflictError               state forbids the operation           (409)
    │   └── ModelUnloadableError    promote: its files no longer load     (409)
    ├── ModelError                  model files missing or broken         (503)
    ├── StorageError                disk full, read-only or database down (503) storage_unavailable
    ├── QueueUnavailableError       the job broker cannot be reached      (503) queue_unavailable
    ├── FetchError                  one image could not be downloaded     (per image: skipped)
    │   ├── BlockedAddressError     URL points at a forbidden network     reason=blocked_address
    │   ├── HTTPStatusError         server answered 4xx/5xx               reason=http_<code>
    │   ├── FetchTimeoutError       connect/read timeout                  reason=timeout
    │   └── TooLargeError           body over the size limit              reason=too_large
    └── DecodeError                 bytes are not a usable image          (per image: skipped)

``FetchError`` and ``DecodeError`` carry a machine-readable ``reason`` that ends
up in a classify result whose status is ``skipped``; they never fail a batch.
"""

from __future__ import annotations


class CartagError(Exception):
    """Base of every error cartag raises on purpose."""

    status_code = 500
    code = "error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ConfigError(CartagError):
    """A setting or a file the configuration points at is wrong."""

    code = "config_error"


class InputError(CartagError):
    """A request or command-line value is invalid.

    Attributes:
        field: Dotted path of the offending field (e.g. ``images.3.url``).
    """

    status_code = 422
    code = "invalid_input"

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class BodyTooLargeError(InputError):
    """The request body is larger than the server accepts; rejected before it is parsed."""

    status_code = 413
    code = "body_too_large"

    def __init__(self, message: str) -> None:
        super().__init__(message, field="body")


class AuthError(CartagError):
    """No API key, or one that is unknown or revoked."""

    status_code = 401
    code = "unauthorized"


class PermissionDeniedError(AuthError):
    """The API key is valid but lacks the role the operation needs."""

    status_code = 403
    code = "forbidden"


class NotFoundError(CartagError):
    """The addressed object does not exist."""

    status_code = 404
    code = "not_found"


class ConflictError(CartagError):
    """The object's state forbids the operation."""

    status_code = 409
    code = "conflict"


class ModelError(CartagError):
    """The model cannot be loaded or run."""

    status_code = 503
    code = "model_unavailable"


class ModelUnloadableError(ConflictError):
    """A model version cannot be promoted: its registered files no longer load."""

    code = "model_unloadable"


class StorageError(CartagError):
    """The store cannot be written or reached: disk full, read-only, database down.

    Not a bug in the request: the API answers 503 ``storage_unavailable`` and the CLI
    names the path or database and what to do.
    """

    status_code = 503
    code = "storage_unavailable"


class QueueUnavailableError(CartagError):
    """The job queue (``CARTAG_BROKER_URL``) could not take a job's work."""

    status_code = 503
    code = "queue_unavailable"


class FetchError(CartagError):
    """One image could not be downloaded.

    Attributes:
        reason: Machine-readable reason put in the ``skipped`` result.
    """

    code = "fetch_failed"

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


class BlockedAddressError(FetchError):
    """The URL resolves to a network that is not allowed (SSRF guard)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, "blocked_address")


class HTTPStatusError(FetchError):
    """The image server answered with an error status."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message, f"http_{status}")
        self.status = status


class FetchTimeoutError(FetchError):
    """Connecting to or reading from the image server timed out."""

    def __init__(self, message: str) -> None:
        super().__init__(message, "timeout")


class TooLargeError(FetchError):
    """The response body is larger than the configured limit."""

    def __init__(self, message: str) -> None:
        super().__init__(message, "too_large")


class DecodeError(CartagError):
    """The bytes are not an image cartag can use.

    Attributes:
        reason: ``not_an_image``, ``truncated``, ``too_many_pixels`` or ``unsupported``.
    """

    code = "decode_failed"

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason
