"""GET /v1/jobs shows a callback's state without the claim of the process sending it."""

from __future__ import annotations

import datetime as dt

from fastapi.testclient import TestClient

from cartag.store import jobs as job_repo
from cartag.store.db import Database
from tests.api.conftest import make_headers
from tests.support.factories import NOW


def test_a_callback_being_sent_shows_its_state_not_its_claim(
    client: TestClient, db: Database
) -> None:
    # Held by another process for an hour yet: this app's sweep leaves it alone.
    until = dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)
    shown = {}
    with db.write() as session:
        for visible in ("sending:", "retrying:http_503"):
            job = job_repo.create_job(
                session,
                advertiser_id="a",
                items=[("https://cdn.example/1.jpg", None)],
                callback_url="https://backend.example/hook",
                now=NOW,
            )
            job_repo.finish_job(session, job.id, status=job_repo.DONE, now=NOW)
            job_repo.set_callback_status(session, job.id, job_repo.claim_status(visible, until))
            shown[job.id] = visible
    headers = make_headers(db, "admin")
    response = client.get("/v1/jobs", headers=headers)
    assert response.status_code == 200, response.text
    listed = {job["id"]: job["callback_status"] for job in response.json()["jobs"]}
    # The first attempt reads as not sent yet (null), as before claims.
    assert listed == {job_id: None if v == "sending:" else v for job_id, v in shown.items()}
