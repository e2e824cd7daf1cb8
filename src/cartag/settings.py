"""Runtime settings: one pydantic-settings class, read from ``CARTAG_*`` variables.

Nothing reads the environment at import time: call :func:`get_settings` (or
build :class:`Settings` directly in tests) and pass the object down.
"""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path
from typing import Annotated, Final, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

# Chosen on out-of-fold predictions of the bundled type head (model card table):
# flags ~13% of answers, which hold ~70% of the errors; the rest are ~98% right.
DEFAULT_LOW_CONFIDENCE_THRESHOLD: Final[float] = 0.8

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


# A host name of content_hash_hosts, or a "*." pattern of its subdomains.
_HOST_PATTERN = re.compile(
    r"^(\*\.)?[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*\.?$"
)

# Celery broker transports cartag is tested with, and their TLS and alias forms.
_BROKER_SCHEMES = frozenset({"redis", "rediss", "amqp", "amqps", "pyamqp", "sentinel"})


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
    cache_dir: Path | None = Field(
        default=None,
        description="Model caches: the exported (and quantized) ONNX backbone, training "
        "embeddings; default <data_dir>/cache. Servers and workers may share one: files are "
        "written atomically and checked when loaded.",
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
    download_deadline_s: float = Field(
        default=20.0,
        gt=0,
        description="Most connection time one image URL may take, all attempts, redirects and "
        "backoff together (time waiting for a free download slot is not counted); past it "
        "the image is skipped with reason timeout. A body arriving too slowly is not retried.",
    )
    download_concurrency: int = Field(
        default=32,
        gt=0,
        description="Full downloads at once. Conditional requests that revalidate cached "
        "images have as many slots again of their own, so slow downloads never delay them.",
    )
    per_host_concurrency: int = Field(
        default=8,
        gt=0,
        description="Downloads at once from one server, keyed on the IP address the host "
        "resolves to (127.0.0.2, 2130706434 and 127.2 are one server); revalidations count apart.",
    )
    revalidate_per_host_concurrency: int = Field(
        default=32,
        gt=0,
        description="Conditional requests (revalidating cached images) at once to one server, "
        "apart from the full downloads: a 304 costs the server little and carries no body, "
        "and a re-run of an inventory waits mostly for round trips. Also the idle "
        "keep-alive connections kept per server for them.",
    )
    user_agent: str = "cartag/0.1 (+https://github.com/cartag/cartag)"

    # --- decoding --------------------------------------------------------------
    max_image_pixels: int = Field(
        default=64_000_000, gt=0, description="Decompression-bomb limit (width x height)."
    )
    max_decode_mb: int = Field(
        default=192,
        gt=0,
        description="Most memory (MiB) one image's decode may need, estimated from its header "
        "(baseline JPEGs are decoded at reduced size; PNG, WebP, GIF, BMP, AVIF and progressive "
        "JPEG are not): more is skipped as too_many_pixels. Also the most all decodes running "
        "in a process hold together: one that does not fit waits.",
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
    # Defaults of engine, inference_batch_size and inference_workers: the fastest
    # measured on CPU within the memory target, see benchmarks/RESULTS.md ("Engines",
    # "End to end"): two single-threaded runs of 4 images hold as many activations
    # as one run of 8.
    engine: Literal["onnx", "torch"] = Field(
        default="onnx",
        description="What runs the backbone: onnx (ONNX Runtime on the same weights, exported "
        "once to data_dir/cache/onnx; falls back to torch if it cannot be used) or torch (eager).",
    )
    # int8 is the default because it passed issue 18's gate: on every cross-source
    # protocol its refitted heads are within 0.005 of fp32 (benchmarks/RESULTS.md,
    # "Int8 backbone (issue 18)"), at about twice the backbone's throughput.
    precision: Literal["int8", "fp32"] = Field(
        default="int8",
        description="Backbone arithmetic: int8 (the network quantized with the activation "
        "ranges the model folder ships, quantization.json, and the heads fitted on its "
        "embeddings; about twice the backbone throughput) or fp32. int8 needs engine onnx "
        "and a model folder with int8 heads; otherwise fp32 is served (the log says which).",
    )
    inference_batch_size: int = Field(
        default=4, gt=0, le=1024, description="Images per backbone call (micro-batch size)."
    )
    max_batch_delay_ms: float = Field(
        default=10,
        ge=0,
        le=10_000,  # infinity overflowed the batcher's wait: every classify hung
        allow_inf_nan=False,
        description="How long a micro-batch waits for images of concurrent requests before "
        "it runs anyway.",
    )
    # Upper bounds on thread counts: 100,000 threads took a machine's every process slot.
    torch_threads: int = Field(
        default=0,
        ge=0,
        le=1024,
        description="Threads of the backbone engine in all, shared by the inference workers; "
        "0 = one per physical core.",
    )
    inference_workers: int = Field(
        default=0,
        ge=0,
        le=256,
        description="Micro-batches that run at once; 0 = one single-threaded run per physical "
        "core with the onnx engine, one run on all cores with torch.",
    )
    serve_processes: int = Field(
        default=1,
        gt=0,
        le=64,
        description="Processes of `cartag serve` (`--workers`), each with its own event loop "
        "and model; the backbone's cores are shared out among them (inference_workers and "
        "torch_threads left at 0 become physical cores / processes, at least 1).",
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
    # Checked before a body is parsed (cartag.api.limits): parsing is what costs, e.g.
    # 7 s and 1 GB of memory for a 68 MB classify body that the image limit then refuses.
    max_body_bytes: int = Field(
        default=3 * 1024 * 1024,
        gt=0,
        description="Largest request body (bytes) except POST /v1/jobs: 1,000 images with "
        "2,048-character URLs fit. Larger ones are refused with 413 before they are read.",
    )
    max_job_body_bytes: int = Field(
        default=32 * 1024 * 1024,
        gt=0,
        description="Largest body (bytes) of POST /v1/jobs: 100,000 images with URLs of about "
        "300 characters fit. Larger ones are refused with 413 before they are read.",
    )
    callback_timeout_s: float = Field(default=10.0, gt=0)
    callback_secret: SecretStr | None = Field(
        default=None,
        description="Signs job callbacks (HMAC-SHA256, header X-Cartag-Signature). Unset: a "
        "secret generated once per deployment and kept in the database "
        "(`cartag callbacks secret` prints it).",
    )
    session_ttl_s: int = Field(
        default=8 * 3600,
        gt=0,
        le=7 * 24 * 3600,
        description="Lifetime of a browser login (/review, /monitor); logout ends it sooner.",
    )

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

    # --- training sweeps and promotion gates -------------------------------------
    training_nice: int = Field(
        default=10,
        ge=0,
        le=19,
        description="`cartag train` raises its nice value by this much so serving keeps "
        "priority on shared cores.",
    )
    training_cpu_share: float = Field(
        default=0.5,
        gt=0,
        le=1,
        description="Fraction of the CPU cores `cartag train` may use for its threads "
        "(torch, ONNX Runtime, BLAS); at least one thread.",
    )
    gate_recall_tolerance: float = Field(
        default=0.02,
        ge=0,
        le=1,
        description="Promotion gate: a candidate may lower no class's recall on any test set "
        "shared with production by more than this.",
    )
    gate_recall_tolerance_by_field: Annotated[dict[str, float], NoDecode] = Field(
        default_factory=dict,
        description="Per-task tolerances overriding gate_recall_tolerance, e.g. "
        "'color=0.05,image_type=0.01'.",
    )
    gate_min_support: int = Field(
        default=10,
        ge=0,
        description="Promotion gate: classes with fewer test examples than this on a set are "
        "not compared there (too few to measure a recall drop).",
    )

    @field_validator("gate_recall_tolerance_by_field", mode="before")
    @classmethod
    def _parse_tolerances(cls, value: object) -> object:
        if not isinstance(value, str):
            return value
        parsed: dict[str, float] = {}
        example = "e.g. 'color=0.05,image_type=0.01'"
        for part in (p.strip() for p in value.split(",") if p.strip()):
            name, sep, number = part.partition("=")
            name = name.strip()
            if not sep or name not in ("image_type", "color"):
                raise ValueError(f"expected image_type=T or color=T, got {part!r}; {example}")
            try:
                tolerance = float(number)
            except ValueError:
                raise ValueError(f"{number.strip()!r} is not a number; {example}") from None
            # NaN or 5 passed every candidate; a negative one failed them all.
            if not 0 <= tolerance <= 1:
                raise ValueError(f"{name}={number.strip()}: a tolerance is 0 to 1; {example}")
            parsed[name] = tolerance
        return parsed

    # --- model registry and hot-swap ---------------------------------------------
    model_poll_s: float = Field(
        default=5.0,
        ge=0.1,  # below, an idle server spins on the registry
        le=86_400,
        allow_inf_nan=False,
        description="How often a server checks the registry's production alias and hot-swaps "
        "to a newly promoted model (one single-row read).",
    )
    reclassify_on_promote: bool = Field(
        default=True,
        description="After a promotion or rollback through the API, re-classify the images of "
        "advertisers that opted in (`cartag advertisers set ID --reclassify-on-promote`) in "
        "the background.",
    )

    # --- advertiser-aware answers -------------------------------------------------
    advertiser_adaptation: bool = Field(
        default=False,
        description="Adapt the answers of an advertiser that has fixes to those fixes "
        "(`source: advertiser_model`): the nearest-fix and repeated-mistake rules of "
        "cartag.models.adaptation. The default for advertisers without their own setting "
        "(`cartag advertisers set ID --adapt-answers/--no-adapt-answers`).",
    )

    # --- scale-out: Celery workers, Redis read-through cache ---------------------
    broker_url: str | None = Field(
        default=None,
        description="Celery broker, e.g. redis://127.0.0.1:6379/0. Set: jobs run on "
        "`cartag worker` processes sharing the PostgreSQL database; unset: in-process.",
    )
    broker_visibility_timeout_s: float = Field(
        default=300.0,
        gt=0,
        description="A chunk task not acknowledged this long after delivery (its worker died) "
        "is delivered again to another worker. Longer than a chunk takes to classify.",
    )
    celery_queue: str = Field(default="cartag-jobs", min_length=1, description="Task queue.")
    job_chunk_size: int = Field(
        default=50,
        gt=0,
        description="Job items per task/step: a killed worker loses at most this many.",
    )
    job_chunk_retries: int = Field(
        default=3,
        ge=0,
        description="Retries of a chunk whose classification or whose storage of results failed.",
    )
    job_lease_s: float = Field(
        default=60.0,
        ge=4.0,
        le=3600.0,
        description="In-process jobs: a running job whose process wrote no heartbeat for this "
        "long (it was killed, or one of `serve --workers N` died) is queued again by any "
        "server on the store. Heartbeats come every quarter of it. A re-classification "
        "after a promotion is taken over the same way by a server of production.",
    )
    redis_cache_url: str | None = Field(
        default=None,
        description="Redis URL of an optional read-through cache of URL lookups in front of "
        "the database, e.g. redis://127.0.0.1:6379/1.",
    )
    redis_cache_ttl_s: int = Field(default=3600, gt=0, description="Lifetime of cache entries.")
    redis_cache_prefix: str = Field(default="cartag:", description="Prefix of the cache's keys.")
    revalidate_after_s: float = Field(
        default=0.0,
        ge=0,
        description="A URL revalidated (conditional request) less than this many seconds ago "
        "is answered from the cache without asking its server again; 0 = always revalidate.",
    )

    # --- operations: metrics, logs, monitoring ------------------------------------
    metrics_require_key: bool = Field(
        default=False,
        description="Require an API key (any role) on /metrics; off by default so Prometheus "
        "can scrape without one.",
    )
    metrics_top_hosts: int = Field(
        default=20,
        ge=0,
        description="Download-failure metrics label only this many of the most frequent hosts; "
        "the rest are counted as 'other' (keeps the number of series bounded).",
    )
    metrics_top_advertisers: int = Field(
        default=50,
        ge=0,
        description="Fix-count metrics label only this many of the most active advertisers.",
    )
    malloc_arenas: int = Field(
        default=2,
        ge=0,
        le=1024,
        description="cartag serve / worker: most glibc malloc arenas (threads share them; "
        "lower peak memory at the same speed); 0 = the C library's default.",
    )
    blas_threads: int = Field(
        default=1,
        ge=0,
        le=1024,
        description="cartag serve / worker: threads of each numpy matrix product (BLAS); "
        "the server's own threads already fill the cores, and BLAS threads spinning beside "
        "them cost CPU; 0 = the library's default (one per core).",
    )
    worker_metrics_port: int | None = Field(
        default=None,
        ge=0,
        le=65535,
        description="cartag worker: serve this process's Prometheus metrics (images, skips, "
        "download failures, batches, model version) on http://<host>:<port>/metrics; "
        "unset = none. Each worker needs its own port.",
    )
    log_format: Literal["json", "text"] = Field(
        default="json",
        description="`cartag serve` logs: json (one object per line, with request_id) or text.",
    )
    # Day windows end at 10 years: a million days overflowed the dates (a traceback).
    monitor_recent_days: int = Field(
        default=2, gt=0, le=3650, description="Monitor: days of the recent window of the jump rule."
    )
    monitor_baseline_days: int = Field(
        default=28,
        gt=0,
        le=3650,
        description="Monitor: days before the recent window that form the "
        "advertiser's baseline fix rate.",
    )
    monitor_min_volume: int = Field(
        default=200,
        ge=1,
        description="Monitor: answers an advertiser needs in a window for its fix rate to be "
        "judged (and for its own baseline to be used rather than all advertisers').",
    )
    monitor_jump_ratio: float = Field(
        default=2.0, ge=1, description="Monitor: recent fix rate ÷ baseline that counts as a jump."
    )
    monitor_jump_min_increase: float = Field(
        default=0.02,
        ge=0,
        le=1,
        description="Monitor: and the recent fix rate must exceed the baseline by at least this "
        "(0.02 = 2 points).",
    )
    monitor_flush_s: float = Field(
        default=5.0,
        ge=0,
        description="Monitor: seconds between writes of the daily answer counts (kept in "
        "memory meanwhile, so the cached path does no write); 0 = write on every request.",
    )
    drift_baseline_days: int = Field(
        default=7,
        gt=0,
        le=3650,
        description="Drift: days from a model version's first answer that form its baseline.",
    )
    drift_current_days: int = Field(
        default=1, gt=0, le=3650, description="Drift: days (up to today) of the window compared."
    )
    drift_min_images: int = Field(
        default=50,
        ge=1,
        description="Drift: answered images a window needs to be judged (else 'too few "
        "images'; an advertiser's own baseline needs as many, else the version's is used).",
    )
    drift_far_share_increase: float = Field(
        default=0.10,
        gt=0,
        le=1,
        description="Drift: rise of the share of far images (novelty beyond the model's "
        "far threshold) over the baseline's that counts as drift (0.10 = 10 points).",
    )
    drift_mix_tvd: float = Field(
        default=0.25,
        gt=0,
        le=1,
        description="Drift: total-variation distance between the current and baseline "
        "answer mix (type or color) that counts as drift.",
    )
    drift_confidence_drop: float = Field(
        default=0.10,
        gt=0,
        le=1,
        description="Drift: fall of the mean confidence below the baseline's that counts as drift.",
    )
    drift_metrics_interval_s: float = Field(
        default=60.0,
        gt=0,
        description="Drift: seconds between recomputations of the /metrics drift gauges "
        "(from the store, off the classify path).",
    )
    drift_metrics_advertisers: int = Field(
        default=10,
        ge=0,
        le=100,
        description="Drift: advertisers exported per model version on /metrics (the most "
        "drifted; bounds the label cardinality).",
    )

    # --- datasets (cartag dataset ...) ---------------------------------------------
    dataset_min_side: int = Field(
        default=64,
        ge=1,
        description="Dataset filter: images whose shorter side is below this many pixels are "
        "excluded as too_small.",
    )
    dataset_near_duplicate_distance: int = Field(
        default=4,
        ge=0,
        le=16,
        description="Dataset filter and split: images whose 64-bit pHashes differ in at most "
        "this many bits are near-duplicates (dropped or flagged; kept on one split side).",
    )
    dataset_test_fraction: float = Field(
        default=0.2, gt=0, lt=1, description="Share of each class put into the test split."
    )
    dataset_crop: Literal["letterbox", "none"] = Field(
        default="letterbox",
        description="Crop step of new dataset images: letterbox (trim uniform non-white bars) "
        "or none.",
    )
    dataset_cv_folds: int = Field(
        default=5, ge=2, description="Folds of the out-of-fold label-issue ranking."
    )
    dataset_candidate_recent_days: int = Field(
        default=7,
        ge=1,
        le=90,
        description="Dataset candidates: days of the recent window (today included): the fix "
        "rate compared with the baseline, and the images seen that may be proposed.",
    )
    dataset_candidate_baseline_days: int = Field(
        default=28,
        ge=1,
        le=365,
        description="Dataset candidates: days before the recent window that form an "
        "advertiser's own baseline fix rate.",
    )
    dataset_candidate_min_answers: int = Field(
        default=50,
        ge=1,
        description="Dataset candidates: answers an advertiser needs in the recent window and "
        "in its baseline for its fix rate to be judged.",
    )
    dataset_candidate_min_fixes: int = Field(
        default=3,
        ge=1,
        description="Dataset candidates: fixes in the advertiser's name in the recent window "
        "for a jump to count.",
    )
    dataset_candidate_jump_ratio: float = Field(
        default=2.0,
        gt=1,
        description="Dataset candidates: recent fix rate ÷ baseline fix rate that counts as a "
        "jump (a zero baseline jumps on the minimum fixes alone).",
    )
    dataset_candidate_limit: int = Field(
        default=200,
        ge=1,
        le=5000,
        description="Dataset candidates: most images proposed per candidate kind in one build.",
    )

    @field_validator("broker_url")
    @classmethod
    def _broker_scheme(cls, value: str | None) -> str | None:
        # Celery reads a URL without a scheme as the host of amqp://guest@...:5672 and an
        # unknown scheme as a KeyError deep in kombu: both are refused here.
        if value is None or not value.strip():
            return None
        scheme, sep, _ = value.partition("://")
        if not sep or scheme.lower() not in _BROKER_SCHEMES:
            raise ValueError(
                f"not a broker URL; use redis://host:6379/0 or amqp://user@host:5672// "
                f"(schemes: {', '.join(sorted(_BROKER_SCHEMES))})"
            )
        return value

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
            hosts = [str(v).strip().lower() for v in value]
            for host in hosts:
                # A URL, a port or a JSON list never matches a host: the setting did nothing.
                if not _HOST_PATTERN.match(host):
                    raise ValueError(
                        f"{host!r} is not a host name; write cdn.example.com or *.example.com, "
                        "comma-separated (no scheme, port or path)"
                    )
            return hosts
        return value

    @field_validator("user_agent")
    @classmethod
    def _printable_ascii(cls, value: str) -> str:
        # It is an HTTP header: httpx refused non-ASCII at startup (a traceback), and a
        # line break made every download fail as connection_error.
        if not value or not all(" " <= c <= "~" for c in value):
            raise ValueError("must be printable ASCII on one line, e.g. 'cartag/0.1'")
        return value

    @field_validator("redis_cache_url")
    @classmethod
    def _redis_url(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        scheme = value.partition("://")[0].lower()
        if "://" not in value or scheme not in ("redis", "rediss", "unix"):
            raise ValueError("not a Redis URL; use redis://host:6379/1 (or rediss://, unix://)")
        return value

    @field_validator("callback_secret")
    @classmethod
    def _blank_secret_is_unset(cls, value: SecretStr | None) -> SecretStr | None:
        # Blank signed every callback with a space; unset uses the generated secret.
        return None if value is None or not value.get_secret_value().strip() else value

    @field_validator("data_dir", mode="before")
    @classmethod
    def _empty_data_dir(cls, value: object) -> object:
        # An empty value meant the current directory, not the default.
        blank = isinstance(value, str) and not value.strip()
        return cls.model_fields["data_dir"].default if blank else value

    @field_validator("model_dir", "cache_dir", mode="before")
    @classmethod
    def _empty_is_default(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    @property
    def resolved_cache_dir(self) -> Path:
        """``cache_dir``, defaulting to ``<data_dir>/cache``."""
        return self.cache_dir if self.cache_dir is not None else self.data_dir / "cache"

    @property
    def resolved_database_url(self) -> str:
        """The database URL, defaulting to ``sqlite:///<data_dir>/cartag.db``."""
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'cartag.db').resolve()}"


def get_settings() -> Settings:
    """Build settings from the environment (and a ``.env`` file if present)."""
    return Settings()
