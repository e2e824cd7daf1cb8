"""SQLAlchemy 2 table definitions (declarative, typed).

The Alembic migrations under ``migrations/versions`` must produce exactly this
schema; ``tests/store/test_migrations.py`` compares the two.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Date,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class UTCDateTime(TypeDecorator[dt.datetime]):
    """A timezone-aware UTC datetime on every backend.

    SQLite drops the offset, so values are stored as naive UTC and re-tagged on read.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column; use Clock.now()")
        value = value.astimezone(dt.UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> dt.datetime | None:
        if value is None:
            return None
        assert isinstance(value, dt.datetime)
        if value.tzinfo is None:
            return value.replace(tzinfo=dt.UTC)
        return value.astimezone(dt.UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class ImageRow(Base):
    """One distinct image (by image_key) and the model's answer for it."""

    __tablename__ = "images"

    image_key: Mapped[str] = mapped_column(String(80), primary_key=True)
    url: Mapped[str] = mapped_column(Text)
    content_sha256: Mapped[str | None] = mapped_column(String(64), index=True)
    phash: Mapped[str | None] = mapped_column(String(16), index=True)
    width: Mapped[int | None] = mapped_column(Integer)
    height: Mapped[int | None] = mapped_column(Integer)
    byte_size: Mapped[int | None] = mapped_column(BigInteger)
    image_type: Mapped[str | None] = mapped_column(String(16))
    # Legacy rows may hold 'N/A' here: always read through vocab.read_stored_color.
    color: Mapped[str | None] = mapped_column(String(16))
    type_scores: Mapped[dict[str, float] | None] = mapped_column(JSON)
    color_scores: Mapped[dict[str, float] | None] = mapped_column(JSON)
    confidence: Mapped[float | None] = mapped_column(Float)
    model_version: Mapped[str | None] = mapped_column(String(80))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    # Why color is null when the color provider failed (e.g. color_provider_timeout).
    color_reason: Mapped[str | None] = mapped_column(String(100))
    # Cosine distance of the embedding to the nearest centroid of the model's training
    # reference (cartag.models.reference); null: no reference, or stored before 0008.
    novelty: Mapped[float | None] = mapped_column(Float)


class UrlRow(Base):
    """The last validators seen for a URL, so the next fetch can be conditional."""

    __tablename__ = "urls"

    url: Mapped[str] = mapped_column(String(2048), primary_key=True)
    image_key: Mapped[str] = mapped_column(ForeignKey("images.image_key"), index=True)
    etag: Mapped[str | None] = mapped_column(String(512))
    last_modified: Mapped[str | None] = mapped_column(String(64))
    content_length: Mapped[int | None] = mapped_column(BigInteger)
    checked_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())


class FixRow(Base):
    """The current manual label of an image in one scope.

    ``scope_key`` is ``""`` for the global fix and the advertiser id for an
    advertiser override, so one unique constraint covers both.
    """

    __tablename__ = "fixes"
    __table_args__ = (UniqueConstraint("image_key", "scope_key"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    image_key: Mapped[str] = mapped_column(ForeignKey("images.image_key"), index=True)
    scope: Mapped[str] = mapped_column(String(16))
    scope_key: Mapped[str] = mapped_column(String(128), index=True)
    # Copied from the image so a re-upload under a new key finds the fix by pHash.
    phash: Mapped[str | None] = mapped_column(String(16), index=True)
    # The pHash's four 16-bit quarters: two hashes within 3 bits share at least one
    # quarter exactly (pigeonhole), so near duplicates are found with index lookups.
    phash_b0: Mapped[int | None] = mapped_column(Integer, index=True)
    phash_b1: Mapped[int | None] = mapped_column(Integer, index=True)
    phash_b2: Mapped[int | None] = mapped_column(Integer, index=True)
    phash_b3: Mapped[int | None] = mapped_column(Integer, index=True)
    image_type: Mapped[str | None] = mapped_column(String(16))
    color: Mapped[str | None] = mapped_column(String(16))
    updated_by: Mapped[str] = mapped_column(String(128))
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())


class FixAuditRow(Base):
    """One row per fix request: who changed what, from what, to what, when."""

    __tablename__ = "fix_audit"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    image_key: Mapped[str] = mapped_column(ForeignKey("images.image_key"), index=True)
    advertiser_id: Mapped[str] = mapped_column(String(128), index=True)
    scope: Mapped[str] = mapped_column(String(16))
    # Who made the fix: the API key's name (a browser: the key of its login session),
    # never free text from the request (since 0007; older rows hold what was sent).
    user: Mapped[str] = mapped_column(String(128))
    # {"image_type": {"from": "Stock", "to": "Dealer"}, "color": {...}}
    changes: Mapped[dict[str, dict[str, str | None]]] = mapped_column(JSON)
    comment: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), index=True)
    # The key that made the fix (names need not be unique); None before 0007. No foreign
    # key: keys are revoked, never deleted.
    key_id: Mapped[int | None] = mapped_column(Integer)
    # Free text: the person a panel acted for, as the panel said (not checked by cartag).
    on_behalf_of: Mapped[str | None] = mapped_column(String(128))
    # The model whose answer the fix corrected, as the image held it then (since 0013;
    # None before). A re-classification later changes the image's model_version, and a
    # fix rate must stay with the model that made the mistake.
    model_version: Mapped[str | None] = mapped_column(String(80))


class EmbeddingRow(Base):
    """A backbone embedding of an image's bytes, so heads can be retrained without
    re-running the backbone. Keyed by content, not URL: the same bytes anywhere
    share one row per backbone."""

    __tablename__ = "embeddings"

    content_sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    backbone_id: Mapped[str] = mapped_column(String(80), primary_key=True)
    dim: Mapped[int] = mapped_column(Integer)
    # float16, little-endian: half the space of float32 and plenty for linear heads.
    vector: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())


class ApiKeyRow(Base):
    """An API key, stored as a SHA-256 of its secret (keys are random, so no KDF needed)."""

    __tablename__ = "api_keys"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(128))
    prefix: Mapped[str] = mapped_column(String(16), unique=True)
    key_hash: Mapped[str] = mapped_column(String(64))
    roles: Mapped[str] = mapped_column(String(256))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    revoked_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())


class ApiKeyAdvertiserRow(Base):
    """An advertiser a scoped API key may act for; a key without rows is unscoped.

    A scoped key sees only its advertisers' images and makes only their overrides; global
    fixes, conflicts and other advertisers need an unscoped key.
    """

    __tablename__ = "api_key_advertisers"

    key_id: Mapped[int] = mapped_column(
        ForeignKey("api_keys.id", ondelete="CASCADE"), primary_key=True
    )
    advertiser_id: Mapped[str] = mapped_column(String(128), primary_key=True)


class BrowserSessionRow(Base):
    """A browser login (/review, /monitor): the cookie holds a random token, this row its hash.

    A session ends at ``expires_at``, when it is revoked (logout) or when its key is.
    """

    __tablename__ = "browser_sessions"

    # SHA-256 of the cookie's token: a copy of the database logs nobody in.
    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    key_id: Mapped[int] = mapped_column(ForeignKey("api_keys.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    expires_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), index=True)
    revoked_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())


class DeploymentSecretRow(Base):
    """A secret generated once per deployment, shared by every API process and worker.

    ``callback`` signs job callbacks when ``CARTAG_CALLBACK_SECRET`` is not set.
    """

    __tablename__ = "deployment_secrets"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())


class JobRow(Base):
    """A classify job submitted with POST /v1/jobs; its state survives restarts."""

    __tablename__ = "jobs"
    __table_args__ = (Index("ix_jobs_status_created", "status", "created_at"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    advertiser_id: Mapped[str] = mapped_column(String(128), index=True)
    status: Mapped[str] = mapped_column(String(16))
    total: Mapped[int] = mapped_column(Integer)
    done: Mapped[int] = mapped_column(Integer, default=0)
    # As submitted until the callback is sent, then a redacted copy (no tokens).
    callback_url: Mapped[str | None] = mapped_column(Text)
    callback_status: Mapped[str | None] = mapped_column(String(64))
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    started_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    finished_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    # Written every few seconds by the in-process runner running the job (since 0011):
    # older than CARTAG_JOB_LEASE_S, its process is gone and the job is queued again.
    heartbeat_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    # The API key that submitted the job: only it (and admins) may read the job. None
    # for jobs made before owners were recorded (admins only). No foreign key: keys are
    # revoked, never deleted.
    owner_key_id: Mapped[int | None] = mapped_column(Integer, index=True)


class JobItemRow(Base):
    """One image of a job; ``result`` is filled once, which makes re-runs idempotent."""

    __tablename__ = "job_items"

    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True)
    idx: Mapped[int] = mapped_column(Integer, primary_key=True)
    # As submitted (a password included) until the item's result is stored, then
    # without its password: the download needs it, nothing after.
    url: Mapped[str] = mapped_column(Text)
    scrape_color: Mapped[str | None] = mapped_column(String(16))
    result: Mapped[dict[str, Any] | None] = mapped_column(JSON(none_as_null=True))


# --- The retraining loop (datasets, review, registry) --------------------------------


class DatasetVersionRow(Base):
    """One version of a training dataset. A draft can still change; a frozen version is
    immutable and its manifest hash fixed.

    ``ref`` is ``NAME@NUMBER`` (e.g. ``cars@3``): what the CLI and other rows name.
    """

    __tablename__ = "dataset_versions"
    __table_args__ = (UniqueConstraint("name", "number"),)

    ref: Mapped[str] = mapped_column(String(160), primary_key=True)
    name: Mapped[str] = mapped_column(String(128), index=True)
    number: Mapped[int] = mapped_column(Integer)
    parent_ref: Mapped[str | None] = mapped_column(ForeignKey("dataset_versions.ref"))
    # draft | frozen
    status: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    created_by: Mapped[str] = mapped_column(String(128))
    frozen_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    # Fixes made after this instant were added (None: none were added).
    fixes_since: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    # SHA-256 of the canonical manifest (sorted items); set when frozen.
    manifest_sha256: Mapped[str | None] = mapped_column(String(64))
    # Filter counts, class balance, label-issue summary: {"filters": {...}, ...}
    stats: Mapped[dict[str, Any]] = mapped_column(JSON)
    # Declared ad-hoc test sets, e.g. [{"name": "advertiser=42", "advertiser_id": "42"}]
    test_sets: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    notes: Mapped[str | None] = mapped_column(Text)


class DatasetItemRow(Base):
    """One image of a dataset version: its blob, label(s), split and provenance."""

    __tablename__ = "dataset_items"
    __table_args__ = (UniqueConstraint("version_ref", "content_sha256"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    version_ref: Mapped[str] = mapped_column(
        ForeignKey("dataset_versions.ref", ondelete="CASCADE"), index=True
    )
    content_sha256: Mapped[str] = mapped_column(String(64), index=True)
    # Relative to the blob store's root, e.g. sha256/ab/cd/abcd....jpg
    blob_path: Mapped[str] = mapped_column(String(300))
    image_type: Mapped[str | None] = mapped_column(String(16))
    color: Mapped[str | None] = mapped_column(String(16))
    # train | test | test:<set name> (e.g. test:advertiser=42)
    split: Mapped[str | None] = mapped_column(String(160))
    # Near-duplicates and same-listing images share a group and so a split side.
    group_key: Mapped[str | None] = mapped_column(String(160))
    phash: Mapped[str | None] = mapped_column(String(16))
    width: Mapped[int | None] = mapped_column(Integer)
    height: Mapped[int | None] = mapped_column(Integer)
    # included | excluded | flagged (flagged: needs a human decision, never trained on)
    status: Mapped[str] = mapped_column(String(16))
    # too_small | unreadable | duplicate | near_duplicate | conflict | review | ...
    reason: Mapped[str | None] = mapped_column(String(64))
    # {"source": "fix"|"import"|"version", "fix_audit_id": 7, "advertiser_id": "42",
    #  "user": "alice", "from_version": "cars@2", "url": "..."}
    provenance: Mapped[dict[str, Any]] = mapped_column(JSON)
    # Label-issue ranking (confident learning on out-of-fold probabilities).
    suspicion: Mapped[float | None] = mapped_column(Float)
    model_label: Mapped[str | None] = mapped_column(String(16))
    model_confidence: Mapped[float | None] = mapped_column(Float)


class ReviewDecisionRow(Base):
    """A reviewer's decision on a draft dataset item (accept / relabel / exclude)."""

    __tablename__ = "review_decisions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    version_ref: Mapped[str] = mapped_column(
        ForeignKey("dataset_versions.ref", ondelete="CASCADE"), index=True
    )
    item_id: Mapped[int] = mapped_column(
        ForeignKey("dataset_items.id", ondelete="CASCADE"), index=True
    )
    # accept | relabel | exclude, about the label of field image_type | color
    action: Mapped[str] = mapped_column(String(16))
    field: Mapped[str] = mapped_column(String(16))
    from_label: Mapped[str | None] = mapped_column(String(16))
    to_label: Mapped[str | None] = mapped_column(String(16))
    user: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    # The item as it was before the decision, so that an undo restores it exactly:
    # {"status": ..., "reason": ..., "image_type": ..., "color": ...}
    before: Mapped[dict[str, Any]] = mapped_column(JSON)
    # Set when the decision was undone (the row stays: the audit keeps every decision).
    undone_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    undone_by: Mapped[str | None] = mapped_column(String(128))


class ModelVersionRow(Base):
    """A registered model: a folder of heads + config.json under ``<data_dir>/models``."""

    __tablename__ = "model_versions"

    version: Mapped[str] = mapped_column(String(80), primary_key=True)
    # Relative to <data_dir>/models (or absolute for models registered in place).
    path: Mapped[str] = mapped_column(Text)
    files_sha256: Mapped[str] = mapped_column(String(64))
    dataset_ref: Mapped[str | None] = mapped_column(String(160))
    # registered | refused | archived
    status: Mapped[str] = mapped_column(String(16))
    card: Mapped[dict[str, Any]] = mapped_column(JSON)
    # {"<eval set>": {"accuracy": ..., "per_class": {...}, ...}, ...}
    metrics: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    created_by: Mapped[str] = mapped_column(String(128))


class ModelAliasRow(Base):
    """``production`` / ``candidate`` → a model version. Servers follow ``production``."""

    __tablename__ = "model_aliases"

    alias: Mapped[str] = mapped_column(String(32), primary_key=True)
    version: Mapped[str] = mapped_column(ForeignKey("model_versions.version"))
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    updated_by: Mapped[str] = mapped_column(String(128))


class DeploymentRow(Base):
    """History: which version an alias pointed to, from when to when, and why."""

    __tablename__ = "model_deployments"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    alias: Mapped[str] = mapped_column(String(32), index=True)
    version: Mapped[str] = mapped_column(ForeignKey("model_versions.version"), index=True)
    started_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    ended_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    by: Mapped[str] = mapped_column(String(128))
    # promote | rollback | initial
    reason: Mapped[str] = mapped_column(String(32))


class ReclassifyRequestRow(Base):
    """A re-classification asked for, open until a run of its model finishes it (since 0012).

    Written before the run starts (an API promotion, rollback or ``POST
    /v1/models/reclassify``; a CLI run), so that a run cut off — a server stopped, a
    Ctrl-C — leaves it open: ``/healthz`` and ``cartag models list`` report it while its
    model is production, and a server of that model takes it over once its run has been
    silent for a lease (or ``cartag models reclassify`` finishes it).
    """

    __tablename__ = "reclassify_requests"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    # The model whose answers are due (production when it was asked for).
    version: Mapped[str] = mapped_column(ForeignKey("model_versions.version"), index=True)
    # One advertiser; None: every advertiser that opted in.
    advertiser_id: Mapped[str | None] = mapped_column(String(128))
    requested_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    requested_by: Mapped[str] = mapped_column(String(128))
    # When a run last saved a chunk of its answers or said it was alive (None: none yet).
    progress_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    # Why the last run stopped, when it failed (it stays open).
    error: Mapped[str | None] = mapped_column(Text)
    finished_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), index=True)
    # done | superseded (production moved to another model before it finished) | withdrawn
    # (its one advertiser stopped taking re-classifications before a server resumed it)
    outcome: Mapped[str | None] = mapped_column(String(16))


class AdvertiserSettingRow(Base):
    """Per-advertiser switches (re-classification after a promotion is opt-in)."""

    __tablename__ = "advertiser_settings"

    advertiser_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    reclassify_on_promote: Mapped[bool] = mapped_column(Boolean, default=False)
    # Advertiser-aware answers (since 0008): None follows CARTAG_ADVERTISER_ADAPTATION.
    adapt_answers: Mapped[bool | None] = mapped_column(Boolean, nullable=True)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())


class AdvertiserImageRow(Base):
    """Which images an advertiser's requests named, so a promotion can re-classify them.

    Written by the classify path (at most once per advertiser, image and day per process);
    no foreign key, so the bulk upsert never waits on the images table.
    """

    __tablename__ = "advertiser_images"

    advertiser_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    image_key: Mapped[str] = mapped_column(String(80), primary_key=True)
    last_seen_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    # The URL (password redacted) this advertiser last named the image by (since 0010):
    # images.url may be another advertiser's. Null on older rows until named again.
    url: Mapped[str | None] = mapped_column(Text, nullable=True)


# --- Operations: the monitoring rollup ---------------------------------------------------


class ClassifyDailyRow(Base):
    """How many answers of each kind an advertiser got per UTC day and model version.

    Images are shared between advertisers, so this rollup is the only record of who asked
    for what when; the monitor's mix and fix-rate figures come from it. One bulk upsert
    per classify call adds to ``count``. Missing values (no color) are stored as ``""``.

    The drift figures (:mod:`cartag.deploy.drift`) are sums beside the count: of the
    stored confidence, and of the novelty of the answers that have one, with how many
    of those lay beyond the model's far threshold.
    """

    __tablename__ = "classify_daily"
    # The drift report finds a model version's first day and reads its first week by version.
    __table_args__ = (Index("ix_classify_daily_version_day", "model_version", "day"),)

    day: Mapped[dt.date] = mapped_column(Date, primary_key=True)
    advertiser_id: Mapped[str] = mapped_column(String(128), primary_key=True, index=True)
    model_version: Mapped[str] = mapped_column(String(80), primary_key=True)
    # classified (the model ran) | cached
    status: Mapped[str] = mapped_column(String(16), primary_key=True)
    image_type: Mapped[str] = mapped_column(String(16), primary_key=True)
    color: Mapped[str] = mapped_column(String(16), primary_key=True)
    # override | fix | scrape | advertiser_model | cache | model
    source: Mapped[str] = mapped_column(String(16), primary_key=True)
    count: Mapped[int] = mapped_column(BigInteger)
    confidence_n: Mapped[int] = mapped_column(BigInteger, server_default="0")
    confidence_sum: Mapped[float] = mapped_column(Float, server_default="0")
    novelty_n: Mapped[int] = mapped_column(BigInteger, server_default="0")
    novelty_sum: Mapped[float] = mapped_column(Float, server_default="0")
    far_n: Mapped[int] = mapped_column(BigInteger, server_default="0")
