"""Reviewing a draft dataset: the JSON API under /v1/datasets/{ref}/review and the /review pages.

The API (role ``reviewer`` or ``admin``; ``Authorization: Bearer`` or the login cookie):

* ``GET  /v1/datasets/{ref}/review/items`` — the queue, most suspicious first, with filters;
* ``POST /v1/datasets/{ref}/review/decisions`` — accept / relabel / exclude one item;
* ``GET  /v1/datasets/{ref}/review/decisions`` — every decision (who, when), undone ones too;
* ``POST /v1/datasets/{ref}/review/items/{item_id}/undo`` — undo an item's last decision.

The pages: ``/review/login`` (paste an API key; opens a session, see :mod:`cartag.api.browser`),
``/review`` (pick a draft version), ``/review/{ref}`` (the keyboard-driven grid; its script
is ``web/static/review.js``) and ``/review/{ref}/thumb/{item_id}`` (a small JPEG).
"""

from __future__ import annotations

import io
from typing import Annotated, Any, Final, Literal
from urllib.parse import urlencode

from fastapi import APIRouter, Path, Query, Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse

from cartag.api import browser
from cartag.api.deps import CSRF_HEADER, BrowserPrincipalDep, ReviewerDep, StateDep
from cartag.api.schemas.common import MAX_ID, error_responses
from cartag.api.schemas.review import (
    DecisionIn,
    DecisionOut,
    DecisionResult,
    ItemOut,
    ItemsOut,
    VersionOut,
)
from cartag.errors import DecodeError, InputError, NotFoundError
from cartag.imaging.decode import decode_image
from cartag.store import review as review_repo
from cartag.store.blobs import BlobStore
from cartag.store.tables import DatasetItemRow, ReviewDecisionRow
from cartag.vocab import COLORS, IMAGE_TYPES
from cartag.web import environment as web_environment

router = APIRouter(
    prefix="/v1/datasets", tags=["review"], responses=error_responses(401, 403, 404, 422)
)
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
# Pages load nothing from elsewhere and run no inline script.
_PAGE_HEADERS: Final[dict[str, str]] = browser.PAGE_HEADERS
_templates = web_environment()

Status = Literal["included", "excluded", "flagged"]
# Bounds of the integers a request names: past 2**63 - 1 the database driver raises (a
# 500), so they are 422s. A page beyond MAX_PAGE (of up to MAX_LIMIT items) is past any
# dataset's end.
MAX_PAGE: Final[int] = 1_000_000
ItemId = Annotated[int, Path(ge=1, le=MAX_ID)]


def _decision_out(row: ReviewDecisionRow) -> DecisionOut:
    return DecisionOut.model_validate(row, from_attributes=True)


def _item_out(ref: str, item: DatasetItemRow, last: ReviewDecisionRow | None) -> ItemOut:
    label = item.model_label
    model_field = "image_type" if label in IMAGE_TYPES else "color" if label in COLORS else None
    return ItemOut(
        id=item.id,
        content_sha256=item.content_sha256,
        image_type=item.image_type,
        color=item.color,
        status=item.status,
        reason=item.reason,
        split=item.split,
        width=item.width,
        height=item.height,
        suspicion=item.suspicion,
        model_label=label,
        model_confidence=item.model_confidence,
        model_field=model_field,
        provenance=dict(item.provenance or {}),
        thumb_url=f"/review/{ref}/thumb/{item.id}",
        last_decision=_decision_out(last) if last is not None else None,
    )


def _list(
    state: StateDep, ref: str, filters: review_repo.ItemFilter, page: int, limit: int
) -> ItemsOut:
    with state.db.read() as session:
        version = review_repo.get_version(session, ref)
        result = review_repo.list_items(session, ref, filters, page=page, limit=limit)
        return ItemsOut(
            version=VersionOut.model_validate(version, from_attributes=True),
            total=result.total,
            page=result.page,
            limit=result.limit,
            items=[
                _item_out(ref, item, result.last_decisions.get(item.id)) for item in result.items
            ],
        )


@router.get("/{ref}/review/items", response_model=ItemsOut)
def review_items(
    ref: str,
    state: StateDep,
    _: ReviewerDep,
    status: Status | None = Query(
        default=None,
        description="Only this status; default: included, flagged and reviewer-excluded items.",
    ),
    flagged: bool = Query(default=False, description="Only flagged items (wins over status)."),
    image_type: str | None = Query(default=None, max_length=32),
    color: str | None = Query(default=None, max_length=32),
    page: int = Query(default=1, ge=1, le=MAX_PAGE),
    limit: int = Query(default=60, ge=1, le=review_repo.MAX_LIMIT),
) -> ItemsOut:
    """A draft's review queue: most suspicious first (unranked items last)."""
    filters = review_repo.ItemFilter(image_type, color, status, flagged)
    return _list(state, ref, filters, page, limit)


@router.post(
    "/{ref}/review/decisions",
    response_model=DecisionResult,
    responses=error_responses(400, 409, 413),
)
def decide(ref: str, body: DecisionIn, state: StateDep, principal: ReviewerDep) -> DecisionResult:
    """Accept, relabel or exclude one item of a draft; stored and applied at once.

    A browser (cookie login) must send the header ``X-Cartag-CSRF: 1``.
    """
    with state.db.write() as session:
        decision, item = review_repo.record_decision(
            session,
            ref,
            body.item_id,
            action=body.action,
            field=body.field,
            label=body.label,
            user=principal.name,
            now=state.clock.now(),
        )
        return DecisionResult(decision=_decision_out(decision), item=_item_out(ref, item, decision))


@router.post(
    "/{ref}/review/items/{item_id}/undo",
    response_model=DecisionResult,
    responses=error_responses(409),
)
def undo(ref: str, item_id: ItemId, state: StateDep, principal: ReviewerDep) -> DecisionResult:
    """Undo the item's latest decision: the item is restored, the decision marked undone."""
    with state.db.write() as session:
        decision, item = review_repo.undo_last(
            session, ref, item_id, user=principal.name, now=state.clock.now()
        )
        session.flush()
        last = review_repo.last_decisions(session, [item_id]).get(item_id)
        return DecisionResult(decision=_decision_out(decision), item=_item_out(ref, item, last))


@router.get("/{ref}/review/decisions", response_model=list[DecisionOut])
def list_decisions(
    ref: str,
    state: StateDep,
    _: ReviewerDep,
    item_id: int | None = Query(default=None, ge=1, le=MAX_ID),
) -> list[DecisionOut]:
    """Every decision on the version (or one item), oldest first, undone ones included."""
    with state.db.read() as session:
        return [_decision_out(d) for d in review_repo.decisions(session, ref, item_id=item_id)]


# --- pages -----------------------------------------------------------------------------


def _page(name: str, status_code: int = 200, **context: Any) -> HTMLResponse:
    html = _templates.get_template(name).render(**context)
    return HTMLResponse(html, status_code=status_code, headers=_PAGE_HEADERS)


def _to_login(request: Request) -> RedirectResponse:
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
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
    return browser.login_page(request, _LOGIN, 403, error=message, next_url="/review")


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
        drafts = review_repo.draft_versions(session)
    csrf = browser.session_csrf_token(request)
    return _page("review_index.html", drafts=drafts, user=principal.name, csrf=csrf)


@pages.get("/{ref}", response_model=None)
def grid(
    request: Request,
    ref: str,
    state: StateDep,
    principal: BrowserPrincipalDep,
    mode: Literal["image_type", "color"] = "image_type",
    status: Status | None = None,
    flagged: bool = False,
    page: int = Query(default=1, ge=1, le=MAX_PAGE),
    limit: int = Query(default=60, ge=1, le=review_repo.MAX_LIMIT),
) -> Response:
    if principal is None:
        return _to_login(request)
    if "reviewer" not in principal.roles and "admin" not in principal.roles:
        return _forbidden(request, principal.name)
    filters = review_repo.ItemFilter(status=status, flagged_only=flagged)
    csrf = browser.session_csrf_token(request)
    try:
        listing = _list(state, ref, filters, page, limit)
    except NotFoundError as exc:
        return _page(
            "review_index.html", 404, drafts=[], user=principal.name, error=exc.message, csrf=csrf
        )
    query = {"mode": mode, "status": status or "", "flagged": "1" if flagged else ""}
    return _page(
        "review.html",
        listing=listing,
        user=principal.name,
        mode=mode,
        status=status or "",
        flagged=flagged,
        labels=IMAGE_TYPES if mode == "image_type" else COLORS,
        type_keys=[(str(i + 1), t) for i, t in enumerate(IMAGE_TYPES)],
        color_keys=list(COLOR_KEYS.items()),
        csrf_header=CSRF_HEADER,
        csrf=csrf,
        pages=max(1, -(-listing.total // limit)),
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
