"""How many pages a listing of ``limit`` items a page fills, and which page a request gets.

Every listing pages this way (the advertisers and images listings, and the API's
jobs and conflicts): an empty listing is one empty page.
"""

from __future__ import annotations


def page_count(total: int, limit: int) -> int:
    """The pages ``total`` items fill at ``limit`` a page; at least 1."""
    return max(1, -(-total // limit))


def clamped_page(total: int, page: int, limit: int) -> tuple[int, int]:
    """``(page, pages)``: the asked 1-based ``page``, past the end the last one."""
    pages = page_count(total, limit)
    return max(1, min(page, pages)), pages
