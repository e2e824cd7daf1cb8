"""The fix page: an advertiser's images with their tags, fixed with a click, a tap or a key.

* ``/fix/login`` — paste an API key with the ``fixer`` role (or ``admin``); opens a login
  session (:mod:`cartag.api.browser`), the browser never holds the key;
* ``/fix`` — the advertisers the key may see, with counts, by id, 100 a page, searched
  by id with ``q`` (a key scoped to one advertiser goes straight to its page);
* ``/fix/{advertiser}`` — its images as classify answers them now, unsure ones first, with
  filters and pages; its script (``web/static/fix.js``) sends each fix to
  ``PUT /v1/images/{key}/fix`` and shows an image's history from ``.../history``;
* ``/fix/~/{advertiser}`` — the same page, for every id: the address of an advertiser whose
  id names another page here (``login``, ``logout``) or ends in ``/images``, and which the
  index links to (:func:`page_path`). ``~`` is in no advertiser id, so no id shadows it.

Fixes are the advertiser's overrides; a key that is not scoped to advertisers (staff)
may switch the page to global fixes. The JSON API enforces who may fix what; the page
only offers what the key may do.
"""

from __future__ import annotations

from typing import Any, Final
from urllib.parse import quote, urlencode

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse

from cartag.api import browser
from cartag.api.deps import CSRF_HEADER, BrowserPrincipalDep, StateDep
from cartag.api.paging import MAX_PAGE
from cartag.api.routes.advertisers import AdvertiserId, list_images, summaries_page
from cartag.api.routes.review_pages import COLOR_KEYS
from cartag.api.schemas.advertisers import ColorFilter
from cartag.api.state import AppState
from cartag.pipeline import inventory
from cartag.redaction import redact_url
from cartag.store.apikeys import Principal
from cartag.vocab import COLORS, IMAGE_TYPES, ImageType
from cartag.web import environment as web_environment

pages = APIRouter(prefix="/fix", include_in_schema=False)
_ROLE = "fixer"
# Pages of their own under /fix: /fix/<one of these> is never an advertiser's page.
PAGE_NAMES: Final[frozenset[str]] = frozenset({"login", "logout"})
# The address every advertiser's page has ("~" is in no id: see cartag.vocab).
_ANY_ID: Final[str] = "/fix/~/"
_templates = web_environment()
_templates.filters["redact_url"] = redact_url
# On the page, the stored answer of the model is the model's ("cache" in API answers).
_templates.filters["source"] = lambda source: "model" if source == "cache" else (source or "")


def page_path(advertiser_id: str) -> str:
    """The address of the advertiser's fix page: ``/fix/<id>``, else ``/fix/~/<id>``.

    Advertiser ids come from the scrapers, so ``login`` may well be one: its page cannot be
    ``/fix/login`` (the login form), nor that of ``group/images`` ``/fix/group/images``
    (advertiser paths end before a trailing ``/images``). Those take the ``~`` address;
    the others keep the short one that people bookmark and type.
    """
    quoted = quote(advertiser_id, safe="/")
    if advertiser_id in PAGE_NAMES or advertiser_id.endswith("/images"):
        return _ANY_ID + quoted
    return f"/fix/{quoted}"


_templates.filters["fix_path"] = page_path


def _page(name: str, status_code: int = 200, **context: Any) -> HTMLResponse:
    html = _templates.get_template(name).render(**context)
    return HTMLResponse(html, status_code=status_code, headers=browser.PAGE_HEADERS)


_LOGIN = browser.LoginArea(
    root="/fix",
    render=lambda error, next_url, csrf: _templates.get_template("fix_login.html").render(
        error=error, next=next_url, csrf=csrf
    ),
    expired="The login form expired or came from another site; log in again.",
    no_key="Paste an API key.",
    role=_ROLE,
)


def _to_login(request: Request) -> RedirectResponse:
    target = browser.page_address(request)
    return RedirectResponse(
        f"/fix/login?{urlencode({'next': target})}", status_code=303, headers=browser.PAGE_HEADERS
    )


def _may_fix(principal: Principal) -> bool:
    return _ROLE in principal.roles or "admin" in principal.roles


def _forbidden(request: Request, message: str) -> HTMLResponse:
    # Logged in with the right key, the browser comes back to the page it asked for.
    here = browser.safe_next(browser.page_address(request), "/fix")
    return browser.login_page(request, _LOGIN, 403, error=message, next_url=here)


@pages.get("/login")
def login_form(request: Request, next: str | None = Query(default=None)) -> Response:
    return browser.login_page(request, _LOGIN, next_url=browser.safe_next(next, "/fix"))


@pages.post("/login", response_model=None)
async def login(request: Request, state: StateDep) -> Response:
    return await browser.login_form_submitted(request, state, _LOGIN)


@pages.post("/logout")
async def logout(request: Request, state: StateDep) -> Response:
    """End the session (revoked in the database, not only forgotten by the browser)."""
    return await browser.logout_form_submitted(request, state, _LOGIN)


# Advertisers per page of the index (a row each: a page of 100 is about 30 KB).
INDEX_LIMIT: Final[int] = 100


def _index(
    request: Request,
    state: AppState,
    principal: Principal,
    *,
    q: str = "",
    page: int = 1,
    limit: int = INDEX_LIMIT,
    status_code: int = 200,
    error: str | None = None,
) -> HTMLResponse:
    """The index: a page of the advertisers the key may see, those whose id holds ``q``."""
    listing, advertisers = summaries_page(state, principal, search=q, page=page, limit=limit)
    query = {"q": q, "limit": "" if limit == INDEX_LIMIT else str(limit)}

    def link(**changes: object) -> str:
        merged = {**query, **{k: str(v) for k, v in changes.items()}}
        params = urlencode({k: v for k, v in merged.items() if v})
        return f"/fix?{params}" if params else "/fix"

    return _page(
        "fix_index.html",
        status_code,
        listing=listing,
        advertisers=advertisers,
        link=link,
        index_limit=INDEX_LIMIT,
        user=principal.name,
        scope=principal.scope_text() if principal.scoped else "",
        csrf=browser.session_csrf_token(request),
        error=error,
    )


@pages.get("", response_model=None)
def index(
    request: Request,
    state: StateDep,
    principal: BrowserPrincipalDep,
    q: str = Query(default="", max_length=128),
    page: int = Query(default=1, ge=1, le=MAX_PAGE),
    limit: int = Query(default=INDEX_LIMIT, ge=1, le=inventory.MAX_LIMIT),
) -> Response:
    """The advertisers the key may fix, with their counts: by id, a page at a time, and
    those whose id holds ``q`` (any part of it, ignoring case)."""
    if principal is None:
        return _to_login(request)
    if not _may_fix(principal):
        return _forbidden(
            request,
            f"The API key {principal.name!r} lacks the fixer role; log in with a fixer key.",
        )
    if len(principal.advertisers) == 1:
        [only] = principal.advertisers
        return RedirectResponse(page_path(only), status_code=303, headers=browser.PAGE_HEADERS)
    return _index(request, state, principal, q=q.strip(), page=page, limit=limit)


# The "~" route first: the other would take "~/login" for an id, and refuse it.
@pages.get("/{advertiser_id:advertiser}", response_model=None)
@pages.get("/~/{advertiser_id:path}", response_model=None)
def fix_page(
    request: Request,
    advertiser_id: AdvertiserId,
    state: StateDep,
    principal: BrowserPrincipalDep,
    low_confidence: bool | None = None,
    image_type: ImageType | None = None,
    color: ColorFilter | None = None,
    fixed: bool | None = None,
    fixed_by: str | None = Query(default=None, min_length=1, max_length=128),
    order: inventory.Order = "confidence",
    page: int = Query(default=1, ge=1, le=MAX_PAGE),
    limit: int = Query(default=60, ge=1, le=inventory.MAX_LIMIT),
) -> Response:
    """One advertiser's images, unsure ones first, to fix with the mouse, keys or touch."""
    if principal is None:
        return _to_login(request)
    if not _may_fix(principal):
        return _forbidden(
            request,
            f"The API key {principal.name!r} lacks the fixer role; log in with a fixer key.",
        )
    csrf = browser.session_csrf_token(request)
    if not principal.may_act_for(advertiser_id):
        return _index(
            request,
            state,
            principal,
            status_code=403,
            error=f"This key ({principal.name}) is scoped to {principal.scope_text()}: it "
            f"cannot see or fix the images of {advertiser_id}.",
        )
    filters = inventory.ImageFilter(
        low_confidence=low_confidence,
        image_type=image_type,
        color=color,
        fixed=fixed,
        fixed_by=fixed_by,
        order=order,
    )
    listing = list_images(state, advertiser_id, filters, page, limit)
    query: dict[str, str] = {
        "low_confidence": "" if low_confidence is None else str(low_confidence).lower(),
        "image_type": image_type or "",
        "color": color or "",
        "fixed": "" if fixed is None else str(fixed).lower(),
        "fixed_by": fixed_by or "",
        "order": "" if order == "confidence" else order,
        "limit": "" if limit == 60 else str(limit),
    }

    def link(**changes: object) -> str:
        merged = {**query, **{k: str(v) for k, v in changes.items()}}
        return "?" + urlencode({k: v for k, v in merged.items() if v})

    return _page(
        "fix.html",
        listing=listing,
        advertiser=advertiser_id,
        user=principal.name,
        staff=not principal.scoped,
        filters=query,
        link=link,
        image_types=IMAGE_TYPES,
        colors=COLORS,
        type_keys=[(str(i + 1), t) for i, t in enumerate(IMAGE_TYPES)],
        color_keys=list(COLOR_KEYS.items()),
        csrf_header=CSRF_HEADER,
        csrf=csrf,
    )
