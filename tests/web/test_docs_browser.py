"""/docs in a real headless Chromium that cannot reach the internet.

Every request to another host is aborted: Swagger UI must still render the API from the
package's assets, and an example request must run and answer.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from playwright.sync_api import Route, expect, sync_playwright

from cartag.api.app import create_app
from cartag.models.classifier import Classifier
from cartag.settings import Settings
from cartag.store.db import Database
from tests.support.live_server import serve

pytestmark = pytest.mark.slow


@pytest.fixture
def site(settings: Settings, sqlite_db: Database, classifier: Classifier) -> Iterator[str]:
    """cartag served by uvicorn on a free port; yields its base URL."""
    with serve(create_app(settings, db=sqlite_db, classifier=classifier, run_jobs=False)) as url:
        yield url


def test_docs_render_and_run_offline(chromium: str, site: str) -> None:
    blocked: list[str] = []

    def offline(route: Route) -> None:
        if route.request.url.startswith(site):
            route.continue_()
        else:
            blocked.append(route.request.url)
            route.abort()

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, headless=True, args=["--no-sandbox"])
        try:
            page = browser.new_page()
            page.route("**/*", offline)
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))

            page.goto(f"{site}/")
            page.click("text=/docs")
            expect(page.locator(".swagger-ui .info .title")).to_contain_text("cartag")
            expect(page.locator("#operations-classify-classify_v1_classify_post")).to_be_visible()

            # Run an example: GET /healthz needs no key.
            operation = page.locator("#operations-health-healthz_healthz_get")
            operation.locator(".opblock-summary").click()
            operation.locator("button.try-out__btn").click()
            operation.locator("button.execute").click()
            answer = operation.locator(".live-responses-table tbody")
            expect(answer.locator(".response-col_status").first).to_have_text("200")
            expect(answer).to_contain_text('"status"')

            assert errors == []
            assert blocked == [], blocked
        finally:
            browser.close()
