"""Secrets generated once per deployment and kept in the database.

Every API process and Celery worker of a deployment reads the same database, so a
secret stored here is shared by all of them without configuring anything.
"""

from __future__ import annotations

import datetime as dt
import secrets

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from cartag.store.tables import DeploymentSecretRow


def get_or_create_secret(session: Session, name: str, now: dt.datetime) -> str:
    """The secret ``name``, generated (32 random bytes, hex) the first time it is asked for.

    Two processes asking at once get the same secret: the loser of the insert race
    reads the winner's.
    """
    row = session.get(DeploymentSecretRow, name)
    if row is not None:
        return row.value
    value = secrets.token_hex(32)
    try:
        with session.begin_nested():
            session.add(DeploymentSecretRow(name=name, value=value, created_at=now))
    except IntegrityError:
        row = session.get(DeploymentSecretRow, name, populate_existing=True)
        assert row is not None  # the other process's insert made it
        return row.value
    return value
