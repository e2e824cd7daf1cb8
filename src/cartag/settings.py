"""Runtime settings: one pydantic-settings class, read from ``CARTAG_*`` variables.

Nothing reads the environment at import time: call :func:`get_settings` (or
build :class:`Settings` directly in tests) and pass the object down.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Annotated

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def _split_csv(value: object) -> object:
    # Environment variables carry lists as comma-separated strings.
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


class Settings(BaseSettings):
    """Every knob of cartag. Environment variable = ``CARTAG_`` + field name, upper case."""

    model_config = SettingsConfigDict(env_prefix="CARTAG_", extra="ignore")

    # --- storage ---------------------------------------------------------------
    data_dir: Path = Field(
        default=Path("cartag-data"),
        description="Folder for the SQLite database, blobs and model caches.",
    )
    database_url: str | None = Field(
        default=None,
        description="SQLAlchemy URL; default is a SQLite file in data_dir. "
        "Use postgresql+psycopg://user@host/db for PostgreSQL.",
    )

    auto_migrate: bool = Field(
        default=True, description="Apply database migrations when the server starts."
    )

    # --- downloads -------------------------------------------------------------
    allowed_networks: Annotated[list[IPNetwork], NoDecode] = Field(
        default_factory=list,
        description="CIDRs that may be fetched even though they are private/loopback "
        "(e.g. 127.0.0.0/8 for tests, 10.0.0.0/8 for an on-premise CDN).",
    )
    content_hash_hosts: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Hosts whose ETag/Last-Modified are unreliable: their images are keyed "
        "by the SHA-256 of their bytes instead.",
    )
    max_image_bytes: int = Field(default=20 * 1024 * 1024, gt=0)
    connect_timeout_s: float = Field(default=5.0, gt=0)
    read_timeout_s: float = Field(default=15.0, gt=0)
    max_redirects: int = Field(default=5, ge=0)
    retries: int = Field(default=2, ge=0, description="Retries on 5xx and timeouts only.")
    retry_backoff_s: float = Field(default=0.25, ge=0)
    download_concurrency: int = Field(default=32, gt=0)
    per_host_concurrency: int = Field(default=8, gt=0)
    user_agent: str = "cartag/0.1 (+https://github.com/cartag/cartag)"

    # --- decoding --------------------------------------------------------------
    max_image_pixels: int = Field(
        default=64_000_000, gt=0, description="Decompression-bomb limit (width x height)."
    )
    phash_max_distance: int = Field(
        default=3,
        ge=0,
        le=3,
        description="An image inherits the fix of a fixed image whose 64-bit pHash is at most "
        "this many bits away (re-encoded/resized copies); 0 = identical pHash only.",
    )

    # --- model -----------------------------------------------------------------
    model_dir: Path | None = Field(
        default=None, description="Folder with a model (heads + config.json); default: bundled."
    )
    inference_batch_size: int = Field(default=16, gt=0)
    torch_threads: int = Field(default=0, ge=0, description="0 = torch default.")

    # --- API -------------------------------------------------------------------
    max_images_per_request: int = Field(default=1000, gt=0)
    max_images_per_job: int = Field(default=100_000, gt=0)
    job_workers: int = Field(default=1, gt=0, description="In-process job worker threads.")
    callback_timeout_s: float = Field(default=10.0, gt=0)

    @field_validator("allowed_networks", mode="before")
    @classmethod
    def _parse_networks(cls, value: object) -> object:
        value = _split_csv(value)
        if isinstance(value, list):
            return [ipaddress.ip_network(str(v), strict=False) for v in value]
        return value

    @field_validator("content_hash_hosts", mode="before")
    @classmethod
    def _parse_hosts(cls, value: object) -> object:
        value = _split_csv(value)
        if isinstance(value, list):
            return [str(v).lower() for v in value]
        return value

    @property
    def resolved_database_url(self) -> str:
        """The database URL, defaulting to ``sqlite:///<data_dir>/cartag.db``."""
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'cartag.db').resolve()}"


def get_settings() -> Settings:
    """Build settings from the environment (and a ``.env`` file if present)."""
    return Settings()
