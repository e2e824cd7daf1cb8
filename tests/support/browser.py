"""Logging a TestClient in through a page's login form, as a browser does."""

from __future__ import annotations

import re

import httpx
from fastapi.testclient import TestClient

_CSRF = re.compile(r'name="csrf" value="([^"]*)"')


def form_csrf(html: str) -> str:
    """The CSRF token of the (first) form of a page."""
    found = _CSRF.search(html)
    assert found is not None, "the page has no form with a CSRF token"
    return found.group(1)


def log_in(client: TestClient, page: str, key: str, next_url: str | None = None) -> httpx.Response:
    """Open ``page``'s login form (``/review`` or ``/monitor``) and submit ``key`` with it.

    Returns:
        The answer to the POST (not followed): 303 and a session cookie on success.
    """
    form = client.get(f"{page}/login")
    assert form.status_code == 200, form.text
    data = {"key": key, "csrf": form_csrf(form.text)}
    if next_url is not None:
        data["next"] = next_url
    return client.post(f"{page}/login", data=data, follow_redirects=False)
