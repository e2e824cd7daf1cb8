"""The OpenAPI schema is the contract: schemathesis checks every operation against it.

The run is what ``schemathesis run`` does (the examples, coverage and fuzzing phases,
every check), in process against the app on a real SQLite database, with an
admin key. A fake fetcher (every URL serves one small JPEG) and a fake classifier keep it
quick and offline. Checked, among others: no 5xx, every status code documented, every
response conforming to its schema, invalid data rejected, undeclared methods answered 405
with ``Allow``.
"""

from __future__ import annotations

import pytest
import schemathesis
from schemathesis.engine import Status, events, from_schema

from cartag.api.app import create_app
from cartag.settings import Settings
from cartag.store.db import Database
from tests.api.conftest import AppFactory, make_headers
from tests.support.db import before_dispose
from tests.support.fakes import FixedClassifier, OneImageFetcher


@pytest.mark.slow
def test_api_conforms_to_its_schema(settings: Settings, sqlite_db: Database) -> None:
    app = create_app(
        settings, db=sqlite_db, classifier=FixedClassifier(), fetcher=OneImageFetcher(settings)
    )
    # schemathesis starts the app's lifespan on its first request; stop it before the
    # database goes.
    before_dispose(sqlite_db, schemathesis.python.asgi.shutdown_lifespans)
    headers = make_headers(sqlite_db, "admin")
    config = schemathesis.Config.from_dict(
        {
            "seed": 13,
            "headers": headers,
            "generation": {"max-examples": 5, "database": "none"},
            "cache": {"enabled": False},
            "phases": {"stateful": {"enabled": False}},
            "operations": [
                {
                    # A well-formed `since` may still reach back too far or lie in the
                    # future (422): a rule relative to today that no schema can state.
                    "include-path": "/monitor",
                    "include-method": "GET",
                    "checks": {
                        "positive_data_acceptance": {
                            "expected-statuses": ["2XX", "3XX", 401, 403, 404, 422]
                        }
                    },
                }
            ],
        }
    )
    schema = schemathesis.openapi.from_asgi("/openapi.json", app, config=config)
    failures: list[str] = []
    errors: list[str] = []
    for event in from_schema(schema).execute():
        if isinstance(event, events.ScenarioFinished) and event.status == Status.FAILURE:
            for checks in event.recorder.checks.values():
                for check in checks:
                    if check.status == Status.FAILURE and check.failure_info is not None:
                        failure = check.failure_info.failure
                        failures.append(
                            f"{event.recorder.label}: {check.name}: {failure.title}\n"
                            f"{failure.message}\n{check.failure_info.code_sample}"
                        )
        elif isinstance(event, events.NonFatalError | events.FatalError):
            errors.append(repr(event))
    unique = sorted(set(failures))
    assert not errors, "\n".join(errors)
    assert not unique, f"{len(unique)} schema violations:\n\n" + "\n\n".join(unique)


def test_an_undeclared_method_is_405_with_the_methods_of_the_path(
    make_client: AppFactory, sqlite_db: Database
) -> None:
    client = make_client(sqlite_db, classifier=FixedClassifier())
    headers = make_headers(sqlite_db, "admin")
    expected = {
        # Starlette named GET only: the first route whose path matched, /v1/models/{version}.
        "/v1/models/rollback": "POST",
        # Two routes share the path: Starlette named the first one's methods only.
        "/v1/datasets/cars@1/review/decisions": "GET, POST",
        "/monitor/login": "GET, POST",
        "/v1/models/some-version": "GET",
    }
    for path, allow in expected.items():
        for method in ("OPTIONS", "PATCH"):
            response = client.request(method, path, headers=headers)
            assert response.status_code == 405, (method, path, response.text)
            assert response.headers["allow"] == allow, (method, path)
            assert response.json()["error"]["code"] == "method_not_allowed"
            assert f"use {allow}" in response.json()["error"]["message"]
