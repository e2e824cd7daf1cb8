"""What every area of the HTTP API shares: error bodies, id bounds, label names.

:func:`error_responses` documents error answers in the OpenAPI schema with
:class:`ErrorOut`, the body of every error answer.
"""

from __future__ import annotations

from typing import Any, Final, Literal

from pydantic import AfterValidator, BaseModel, Field

from cartag.vocab import (
    ADVERTISER_ID_MAX,
    ADVERTISER_ID_PATTERN,
    Color,
    normalize_color,
)

ColorName = Color
SourceName = Literal["model", "cache", "fix", "override", "scrape", "advertiser_model"]

# An advertiser id in a body (cartag.vocab.check_advertiser_id's rule).
ID_FIELD = Field(min_length=1, max_length=ADVERTISER_ID_MAX, pattern=ADVERTISER_ID_PATTERN)


def no_nul(value: str) -> str:
    """Free text without NUL characters: PostgreSQL's text cannot hold one."""
    if "\x00" in value:
        at = value.index("\x00")
        raise ValueError(f"contains a NUL character (\\u0000) at position {at}; remove it")
    return value


# The check of free text a request may send (comments, names, callback URLs): anything
# but NUL. Its length and pattern go before it, in StringConstraints (a Field's would be
# checked after it, and the schema would lose the pattern):
# ``Annotated[str, StringConstraints(max_length=2000), NoNul]``.
NoNul = AfterValidator(no_nul)

# Largest id / offset a request may name. Past 2**63 - 1 the database driver raises (a
# 500); this bound is lower, the largest integer JSON numbers (JavaScript, and the float
# that JSON Schema tools compare with) hold exactly, so the schema states it exactly.
MAX_ID: Final[int] = 2**53 - 1


class ProblemOut(BaseModel):
    field: str
    message: str


class ErrorDetailOut(BaseModel):
    code: str = Field(description="Machine-readable, e.g. invalid_input, not_found.")
    message: str = Field(description="What is wrong and how to fix it.")
    field: str | None = Field(
        default=None, description="The offending request field (dotted path), if one is."
    )
    problems: list[ProblemOut] | None = Field(
        default=None, description="Every invalid field (422 invalid_input only)."
    )


class ErrorOut(BaseModel):
    """The body of every error answer."""

    error: ErrorDetailOut


# ErrorOut in the OpenAPI components (the JSON routes' error_responses put it there).
ERROR_SCHEMA_REF: Final[str] = "#/components/schemas/ErrorOut"


_ERROR_DESCRIPTIONS: Final[dict[int, str]] = {
    400: "The body is not JSON in UTF-8 (invalid_body).",
    401: "No API key, or an unknown or revoked one (unauthorized).",
    403: "The API key lacks the role (forbidden).",
    404: "Not found.",
    409: "The object's state forbids the operation (conflict).",
    413: "The request body is over the size limit (body_too_large): CARTAG_MAX_BODY_BYTES, "
    "CARTAG_MAX_JOB_BODY_BYTES for POST /v1/jobs.",
    422: "A request field is invalid (invalid_input); field names it.",
    503: "The model, the store or the job queue is unavailable; try again later.",
}


def error_responses(*codes: int, html_route: bool = False) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` documenting the error answers ``codes`` with :class:`ErrorOut`.

    Args:
        codes: HTTP statuses.
        html_route: The route answers HTML (``response_class=HTMLResponse``): FastAPI would
            put the model under text/html, where the JSON errors are not.
    """
    if html_route:
        return {
            code: {
                "description": _ERROR_DESCRIPTIONS[code],
                "content": {"application/json": {"schema": {"$ref": ERROR_SCHEMA_REF}}},
            }
            for code in codes
        }
    return {code: {"model": ErrorOut, "description": _ERROR_DESCRIPTIONS[code]} for code in codes}


def color_or_none(value: object) -> object:
    if value is None or not isinstance(value, str):
        return value
    """A color field's value normalised (aliases, case); a ValueError is a 422 naming it."""
    return normalize_color(value)  # ValueError -> 422 naming the field
