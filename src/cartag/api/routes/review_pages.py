"""The review pages: ``/review/login``, ``/review`` (pick a draft), ``/review/{ref}`` (the grid).

The grid shows one queue (``mode``: the type or the color queue, see
:mod:`cartag.store.review_queue`), by default only its undecided items: a decided item
leaves it. Opened without ``page`` or ``after`` it resumes where the reviewer stopped
(after their latest decision in the queue); ``page`` past the end shows the last page;
``after`` continues after an item (the grid's next page). Every decision goes through the
JSON API (:mod:`cartag.api.routes.review`) from the page's script (``web/static/review.js``);
``/review/{ref}/thumb/{item_id}`` serves the thumbnails. Sessions and CSRF tokens are
:mod:`cartag.api.browser`'s.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Any, Final, Literal
from urllib.parse import urlencode

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse

from cartag.api import browser
from cartag.api.deps import CSRF_HEADER, BrowserPrincipalDep, ReviewerDep, StateDep
from cartag.api.paging import MAX_PAGE
from cartag.api.routes.review import ItemId, Status, listing
from cartag.api.schemas.common import MAX_ID
from cartag.errors import DecodeError, InputError, NotFoundError
from cartag.imaging.decode import decode_image
from cartag.store import review as review_repo
from cartag.store import review_queue as queue_repo
from cartag.store.blobs import BlobStore
from cartag.vocab import IMAGE_TYPES
from cartag.web import environment as web_environment

pages = APIRouter(prefix="/review", include_in_schema=False)

THUMB_SIZE: Final[int] = 128  # shorter side >= 128, longer side <= 256
# Keys that relabel a color after "c" (letters chosen so that none is ambiguous).
COLOR_KEYS: Final[dict[str, str]] = {
    "Black": "k",
    "Blue": "b",
    "Brown": "n",
    "Burgundy": "u",
    "Green": "g",
    "Grey": "e",
    "Orange": "o",
    "Pink": "i",
    "Purple": "p",
    "Red": "r",
    "White": "w",
    "Yellow": "y",
}
Show = Literal["undecided", "decided", "all"]
_DECIDED: Final[dict[str, bool | None]] = {"undecided": False, "decided": True, "all": None}
# Pages load nothing from elsewhere and run no inline script.
_PAGE_HEADERS: Final[dict[str, str]] = browser.PAGE_HEADERS
_templates = web_environment()


def _page(name: str, status_code: int = 200, **context: Any) -> HTMLResponse:
    html = _templates.get_template(name).render(**context)
    return HTMLResponse(html, status_code=status_code, headers=_PAGE_HEADERS)


def _to_login(request: Request) -> RedirectResponse:
    target = browser.page_address(request)
    return RedirectResponse(f"/review/login?{urlencode({'next': target})}", status_code=303)


_LOGIN = browser.LoginArea(
    root="/review",
    render=lambda error, next_url, csrf: _templates.get_template("review_login.html").render(
        error=error, next=next_url, csrf=csrf
    ),
    expired="The login form expired or came from another site; log in again.",
    no_key="Paste an API key.",
)


def _forbidden(request: Request, user: str) -> HTMLResponse:
    message = f"The API key {user!r} lacks the reviewer role; log in with a reviewer or admin key."
    # Logged in with the right key, the browser comes back to the page it asked for.
    here = browser.safe_next(browser.page_address(request), "/review")
    return browser.login_page(request, _LOGIN, 403, error=message, next_url=here)


@pages.get("/login")
def login_form(request: Request, next: str | None = None) -> HTMLResponse:
    return browser.login_page(request, _LOGIN, next_url=browser.safe_next(next, "/review"))


@pages.post("/login", response_model=None)
async def login(request: Request, state: StateDep) -> Response:
    return await browser.login_form_submitted(request, state, _LOGIN)


@pages.post("/logout")
async def logout(request: Request, state: StateDep) -> Response:
    """End the session (revoked in the database, not only forgotten by the browser)."""
    return await browser.logout_form_submitted(request, state, _LOGIN)


@pages.get("", response_model=None)
def index(request: Request, state: StateDep, principal: BrowserPrincipalDep) -> Response:
    if principal is None:
        return _to_login(request)
    if "reviewer" not in principal.roles and "admin" not in principal.roles:
        return _forbidden(request, principal.name)
    with state.db.read() as session:
        drafts = queue_repo.draft_versions(session)
    csrf = browser.session_csrf_token(request)
    return _page("review_index.html", drafts=drafts, user=principal.name, csrf=csrf)


@dataclass(frozen=True)
class _Start:
    """Where the grid starts, and why (a note shown above it, or None)."""

    offset: int
    note: str | None = None


def _start(
    total: int, limit: int, *, page: int | None, after: int | None, resume: int | None
) -> _Start:
    """The offset of the grid: ``after`` an item, at ``page`` (clamped), or resumed.

    ``after`` and ``resume`` arrive as offsets already (items ranked up to the item).
    """
    last_start = max(0, (total - 1) // limit * limit)
    if after is not None:
        return _Start(after if after < total else last_start)
    if page is not None:
        pages_n = last_start // limit + 1
        if page > pages_n:
            return _Start(last_start, f"page {page} is past the end: showing page {pages_n}")
        return _Start((page - 1) * limit)
    if resume is not None and 0 < resume < total:
        return _Start(resume, "resumed after your last decision")
    return _Start(0)


@pages.get("/{ref}", response_model=None)
def grid(
    request: Request,
    ref: str,
    state: StateDep,
    principal: BrowserPrincipalDep,
    mode: Literal["image_type", "color"] = "image_type",
    show: Show = "undecided",
    status: Status | None = None,
    flagged: bool = False,
    page: int | None = Query(default=None, ge=1, le=MAX_PAGE),
    after: int | None = Query(default=None, ge=1, le=MAX_ID),
    limit: int = Query(default=60, ge=1, le=review_repo.MAX_LIMIT),
) -> Response:
    if principal is None:
        return _to_login(request)
    if "reviewer" not in principal.roles and "admin" not in principal.roles:
        return _forbidden(request, principal.name)
    filters = queue_repo.ItemFilter(
        status=status, flagged_only=flagged, queue=mode, decided=_DECIDED[show]
    )
    csrf = browser.session_csrf_token(request)
    try:
        with state.db.read() as session:
            total = queue_repo.count(session, ref, filters)
            after_offset = resume = None
            if after is not None:
                after_offset = queue_repo.offset_after(session, ref, filters, after)
            elif page is None:
                stopped = queue_repo.last_decided(session, ref, principal.name, mode)
                if stopped is not None:
                    resume = queue_repo.offset_after(session, ref, filters, stopped)
            start = _start(total, limit, page=page, after=after_offset, resume=resume)
            items = listing(session, ref, filters, limit=limit, offset=start.offset)
    except NotFoundError as exc:
        # The error, then the drafts there are: a mistyped address is one click from right.
        with state.db.read() as session:
            drafts = queue_repo.draft_versions(session)
        return _page(
            "review_index.html",
            404,
            drafts=drafts,
            user=principal.name,
            error=exc.message,
            csrf=csrf,
        )
    query = {
        "mode": mode if mode != "image_type" else "",
        "show": show if show != "undecided" else "",
        "status": status or "",
        "flagged": "1" if flagged else "",
        "limit": str(limit) if limit != 60 else "",
    }
    offset = items.offset
    return _page(
        "review.html",
        listing=items,
        user=principal.name,
        mode=mode,
        show=show,
        status=status or "",
        flagged=flagged,
        note=start.note,
        first=offset + 1 if items.items else 0,
        last=offset + len(items.items),
        # Previous: the page holding the item just before this one; next: after the last.
        prev_page=(offset - 1) // limit + 1 if offset > 0 else None,
        next_after=items.items[-1].id if offset + len(items.items) < items.total else None,
        focus=next((i.id for i in items.items if not i.decided), None),
        type_keys=[(str(i + 1), t) for i, t in enumerate(IMAGE_TYPES)],
        color_keys=list(COLOR_KEYS.items()),
        csrf_header=CSRF_HEADER,
        csrf=csrf,
        query=lambda **kw: urlencode({k: v for k, v in {**query, **kw}.items() if v}),
    )


def thumbnail(blobs: BlobStore, blob_path: str, max_pixels: int) -> bytes:
    """A JPEG of the blob, shorter side >= 128 px and longer side <= 256 px.

    Raises:
        NotFoundError: The blob is missing.
        DecodeError: The blob is not a usable image.
    """
    decoded = decode_image(blobs.get(blob_path), max_pixels=max_pixels, target_size=THUMB_SIZE)
    buffer = io.BytesIO()
    decoded.image.save(buffer, "JPEG", quality=82)
    return buffer.getvalue()


@pages.get("/{ref}/thumb/{item_id}", response_model=None)
def thumb(request: Request, ref: str, item_id: ItemId, state: StateDep, _: ReviewerDep) -> Response:
    with state.db.read() as session:
        item = review_repo.get_item(session, ref, item_id)
    # A blob path names its content: the thumbnail of an item never changes.
    etag = f'"{item.blob_path.rsplit("/", 1)[-1]}-{THUMB_SIZE}"'
    headers = {"ETag": etag, "Cache-Control": "private, max-age=86400, immutable"}
    if request.headers.get("if-none-match") == etag:
        return Response(status_code=304, headers=headers)
    blobs: BlobStore = request.app.state.blobs
    try:
        data = thumbnail(blobs, item.blob_path, state.settings.max_image_pixels)
    except DecodeError as exc:
        raise InputError(
            f"item {item_id}'s image cannot be shown ({exc.reason}): {exc.message}",
            field="item_id",
        ) from exc
    return Response(data, media_type="image/jpeg", headers=headers)
