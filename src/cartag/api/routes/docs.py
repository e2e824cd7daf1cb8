"""The API's documentation page and the landing page, served without the internet.

FastAPI's default /docs loads Swagger UI from a CDN, so on an offline machine (or
behind a strict proxy) it shows a blank page. Here it loads its script and styles
from ``/docs-assets``, the files of the ``fastapi-offline`` package, which is
installed with cartag. (ReDoc is not served: its bundle fetches its logo from its
CDN, and no page of cartag reaches outside the server.) ``GET /`` is a small page that
links the API docs and the pages people use: /review, /fix, /monitor.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Final

from fastapi import APIRouter, FastAPI
from fastapi.openapi.docs import get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

from cartag import __version__
from cartag.errors import ConfigError

ASSETS_PATH: Final[str] = "/docs-assets"

router = APIRouter(include_in_schema=False)


def assets_dir() -> Path:
    """The folder of the packaged Swagger UI files.

    Raises:
        ConfigError: ``fastapi-offline`` is not installed (a broken install).
    """
    spec = importlib.util.find_spec("fastapi_offline")
    if spec is None or spec.origin is None:
        raise ConfigError(
            "the API docs need the fastapi-offline package (it ships Swagger UI); "
            "reinstall cartag: bash scripts/setup.sh"
        )
    return Path(spec.origin).parent / "static"


def install_docs(app: FastAPI) -> None:
    """Serve /docs and its assets from the package; add ``GET /``.

    The app must be made with ``docs_url=None, redoc_url=None``.
    """
    app.mount(ASSETS_PATH, StaticFiles(directory=assets_dir()), name="docs-assets")
    app.include_router(router)


@router.get("/docs", response_class=HTMLResponse)
def swagger_ui() -> HTMLResponse:
    """Swagger UI on the app's OpenAPI schema, with local assets."""
    return get_swagger_ui_html(
        openapi_url="/openapi.json",
        title="cartag API",
        swagger_js_url=f"{ASSETS_PATH}/swagger-ui-bundle.js",
        swagger_css_url=f"{ASSETS_PATH}/swagger-ui.css",
        swagger_favicon_url=f"{ASSETS_PATH}/favicon.png",
        oauth2_redirect_url="/docs/oauth2-redirect",
        # "Try it out" sends the request: the examples are meant to be run.
        swagger_ui_parameters={"persistAuthorization": True, "displayRequestDuration": True},
    )


@router.get("/docs/oauth2-redirect", response_class=HTMLResponse)
def swagger_redirect() -> HTMLResponse:
    """Swagger UI's OAuth2 redirect helper (needed by its authorize dialog)."""
    return get_swagger_ui_oauth2_redirect_html()


_LANDING: Final[str] = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>cartag</title>
<style>
body{{font:16px/1.5 system-ui,sans-serif;max-width:46rem;margin:3rem auto;
  padding:0 1rem;color:#222}}
h1{{margin-bottom:.2rem}} .v{{color:#777;font-size:.9rem}}
ul{{padding:0;list-style:none}} li{{margin:.8rem 0}}
a{{font-weight:600;color:#0b57d0}} span{{color:#555}}
code{{background:#f3f3f3;padding:.1rem .3rem;border-radius:3px}}
</style></head><body>
<h1>cartag</h1><div class="v">version {version}</div>
<p>Tags the photos of vehicle listings with their type (Dealer, Stock, Placeholder) and the
vehicle's color.</p>
<ul>
<li><a href="/docs">/docs</a> <span>&mdash; the HTTP API, with examples you can run
(Swagger UI; the <a href="/openapi.json">OpenAPI schema</a>)</span></li>
<li><a href="/fix">/fix</a>
<span>&mdash; look at an advertiser's images and fix their tags</span></li>
<li><a href="/review">/review</a> <span>&mdash; review a dataset before training</span></li>
<li><a href="/monitor">/monitor</a> <span>&mdash; answers, fixes, models and operations</span></li>
</ul>
<p><span>API calls need a key: <code>cartag keys create --role classifier</code>, sent as
<code>Authorization: Bearer &lt;key&gt;</code>.</span></p>
</body></html>
"""


@router.get("/", response_class=HTMLResponse)
def landing() -> HTMLResponse:
    """A small page linking the docs and the pages."""
    return HTMLResponse(_LANDING.format(version=__version__))
