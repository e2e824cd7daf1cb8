"""Runtime settings: one pydantic-settings class, read from ``CARTAG_*`` variables.

Nothing reads the environment at import time: call :func:`get_settings` (or
build :class:`Settings` directly in tests) and pass the object down.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Annotated, Final, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

# Chosen on out-of-fold predictions of the bundled type head (model card table):
# flags ~13% of answers, which hold ~70% of the errors; the rest are ~98% right.
DEFAULT_LOW_CONFIDENCE_THRESHOLD: Final[float] = 0.8

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
    # Defaults of engine and inference_batch_size: the fastest measured on CPU, see
    # benchmarks/RESULTS.md ("Engines").
    engine: Literal["onnx", "torch"] = Field(
        default="onnx",
        description="What runs the backbone: onnx (ONNX Runtime on the same weights, exported "
        "once to data_dir/cache/onnx; falls back to torch if it cannot be used) or torch (eager).",
    )
    inference_batch_size: int = Field(
        default=8, gt=0, description="Images per backbone call (micro-batch size)."
    )
    max_batch_delay_ms: float = Field(
        default=10,
        ge=0,
        description="How long a micro-batch waits for images of concurrent requests before "
        "it runs anyway.",
    )
    torch_threads: int = Field(
        default=0,
        ge=0,
        description="Intra-op threads of the backbone engine; 0 = one per physical core.",
    )
    low_confidence_threshold: float = Field(
        default=DEFAULT_LOW_CONFIDENCE_THRESHOLD,
        ge=0,
        le=1,
        description="Results whose model-decided image type has a (calibrated) confidence "
        "below this are marked low_confidence, for review.",
    )

    # --- API -------------------------------------------------------------------
    max_images_per_request: int = Field(default=1000, gt=0)
    max_images_per_job: int = Field(default=100_000, gt=0)
    job_workers: int = Field(default=1, gt=0, description="In-process job worker threads.")
    callback_timeout_s: float = Field(default=10.0, gt=0)

    # --- color provider ----------------------------------------------------------
    # Checked at startup by cartag.models.color_providers.check_color_settings.
    color_provider: Literal["builtin", "http"] = Field(
        default="builtin",
        description="Who names the vehicle color of newly classified images: the built-in "
        "model, or a vendor's HTTP API configured by the CARTAG_COLOR_HTTP_* settings.",
    )
    color_http_url: str | None = Field(
        default=None,
        description="The vendor endpoint, POSTed once per image, e.g. "
        "https://colors.vendor.example/v1/color. Its address passes the download guard: "
        "a private one needs CARTAG_ALLOWED_NETWORKS.",
    )
    color_http_auth_header: SecretStr | None = Field(
        default=None,
        description="One header as 'Name: value', e.g. 'Authorization: Bearer <token>' or "
        "'X-Api-Key: <key>'. Never logged.",
    )
    color_http_timeout_s: float = Field(
        default=10.0, gt=0, description="Limit of one attempt, connect to last byte."
    )
    color_http_mode: Literal["url", "bytes"] = Field(
        default="url",
        description="url: POST JSON naming the image URL (color_http_body_template); "
        "bytes: POST the decoded image as image/jpeg.",
    )
    color_http_body_template: str = Field(
        default='{"image_url": "{url}"}',
        description="url mode: the JSON body; every {url} inside its strings becomes the "
        "image URL.",
    )
    color_http_color_path: str = Field(
        default="color",
        description="Dotted path to the color label in the JSON answer, e.g. data.color.name "
        "(list items by index: results.0.label).",
    )
    color_http_confidence_path: str | None = Field(
        default=None, description="Dotted path to the vendor's confidence, e.g. data.color.score."
    )
    color_http_label_map: str | None = Field(
        default=None,
        description="JSON object from vendor labels (any case) to cartag colors, e.g. "
        '{"anthracite": "Grey"}. Other labels map by name and common aliases (silver -> Grey).',
    )
    color_http_concurrency: int = Field(
        default=8, gt=0, description="Vendor requests in flight at once."
    )

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
