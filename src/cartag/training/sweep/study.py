"""A sweep's Optuna study: its name, its folder name, its storage in the project's database.

The study lives in the project's database (Optuna's RDB storage on
``settings.resolved_database_url``, same schema), so several processes or machines can
run trials of one sweep (:mod:`cartag.training.sweep.sweep`) and the leaderboard
(:mod:`cartag.training.sweep.leaderboard`) reads it back.
"""

from __future__ import annotations

import re
import warnings
from typing import TYPE_CHECKING, Any, Final

from sqlalchemy import text

from cartag.errors import ConfigError
from cartag.store.db import Database, current_revision
from cartag.training.sweep.sweep_config import SweepConfig

if TYPE_CHECKING:
    import optuna

# Optuna's heartbeat: a RUNNING trial silent this long belongs to a dead process.
HEARTBEAT_S: Final[int] = 30
GRACE_S: Final[int] = 120


def study_name(ref: str, config: SweepConfig) -> str:
    """``<ref>:sweep-<12 hex of the sweep hash>``, e.g. ``cars@3:sweep-1a2b3c4d5e6f``."""
    return f"{ref}:sweep-{config.digest()[:12]}"


def folder_name(study: str) -> str:
    """A study name made safe for a folder or file name (``cars@3_sweep-1a2b…``)."""
    return re.sub(r"[^A-Za-z0-9._@-]+", "_", study)


def optuna_storage(db: Database) -> optuna.storages.RDBStorage:
    """Optuna's RDB storage on the project's database (and PostgreSQL schema).

    Optuna shares the database's ``alembic_version`` table with cartag's migrations,
    so the database must be migrated first; Optuna then leaves that table alone
    (its own schema check is skipped; its tables are created if missing).

    Raises:
        ConfigError: The database has not been migrated.
    """
    import optuna

    if current_revision(db) is None:
        raise ConfigError("the database is not initialised; run `cartag db upgrade` first")
    connect_args: dict[str, Any] = {}
    if db.dialect == "postgresql":
        # Follow the Database's schema (tests isolate themselves with search_path).
        with db.engine.connect() as conn:
            schema = conn.execute(text("SELECT current_schema()")).scalar_one()
        connect_args["options"] = f"-csearch_path={schema}"
    else:
        connect_args["timeout"] = 30
    with warnings.catch_warnings():
        # heartbeat_interval is marked experimental; the warning is not for our users.
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.storages.RDBStorage(
            db.url,
            engine_kwargs={"connect_args": connect_args, "pool_pre_ping": True},
            skip_compatibility_check=True,
            heartbeat_interval=HEARTBEAT_S,
            grace_period=GRACE_S,
        )


def close_storage(storage: optuna.storages.RDBStorage) -> None:
    """Release the storage's connections."""
    storage.remove_session()
    storage.engine.dispose()
