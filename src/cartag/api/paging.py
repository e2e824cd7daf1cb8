"""How /v1 listings page: a 1-based ``page`` of ``limit`` items, or an ``offset``.

``GET /v1/advertisers`` and the images listing take ``page`` only; ``GET /v1/jobs`` and
``GET /v1/conflicts`` take ``page`` or the ``offset`` they took first, not both. Every
answer says ``total``, ``page`` and ``pages``.
"""

from __future__ import annotations

from typing import Final

from cartag.errors import InputError
from cartag.store.paging import page_count

# A page past this is past the end of any listing (at most 1,000 items a page).
MAX_PAGE: Final[int] = 1_000_000
PAGE_DESCRIPTION: Final[str] = (
    "1-based, `limit` items a page, as GET /v1/advertisers pages (past the end: no items); "
    "not with `offset`."
)
OFFSET_DESCRIPTION: Final[str] = (
    "Skip this many first (default 0): the older way to page; not with `page`."
)


def page_offset(page: int | None, offset: int | None, limit: int) -> int:
    """The offset a listing starts at, given a 1-based ``page`` or an ``offset`` (or neither).

    Raises:
        InputError: Both are given (the error names ``page``).
    """
    if page is not None and offset is not None:
        raise InputError(
            f"give page or offset, not both (page {page} is offset {(page - 1) * limit} "
            f"at limit {limit})",
            field="page",
        )
    return (page - 1) * limit if page is not None else offset or 0


def page_numbers(total: int, limit: int, offset: int) -> tuple[int, int]:
    """``(page, pages)`` of a listing: the page its first item is on, and how many pages
    ``total`` items fill (at least 1, as GET /v1/advertisers counts them)."""
    return offset // limit + 1, page_count(total, limit)
