"""The model registry: register, smoke-check, promote, roll back, and hot-swap in servers.

A registered model is a copy of a model folder (``config.json`` + heads, see
:mod:`cartag.models.classifier`) under ``<data_dir>/models/<version>/``, with a row
in ``model_versions`` holding its files' hash, its card and its metrics. Aliases
(``production``, ``candidate``) point at versions; every change is a row in the
deployment history. Servers follow ``production`` (:mod:`cartag.models.hotswap`).
A model that fails to load or fails the smoke check is refused, and whatever
served before keeps serving.

The table-level functions (:func:`get_alias`, :func:`list_versions`, :func:`history`)
live in :mod:`cartag.store.registry` and are re-exported here.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import re
import shutil
import uuid
from pathlib import Path
from typing import Any, Final

import numpy as np
from PIL import Image, ImageDraw
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from cartag.clock import Clock
from cartag.errors import ConflictError, InputError, ModelError, ModelUnloadableError
from cartag.models.classifier import (
    BUNDLED_DIR,
    CONFIG_NAME,
    Classifier,
    EmbeddingClassifier,
    read_config,
    settings_plan,
)
from cartag.settings import Settings
from cartag.store import registry as repo
from cartag.store.db import Database
from cartag.store.registry import (
    PRODUCTION,
    REFUSED,
    REGISTERED,
    get_alias,
    history,
    list_versions,
)
from cartag.store.tables import DeploymentRow, ModelVersionRow
from cartag.vocab import COLORS, IMAGE_TYPES

__all__ = [
    "PromotionGatedError",
    "get_alias",
    "history",
    "list_versions",
    "load_registered",
    "production_model_dir",
    "promote",
    "record_metrics",
    "register_model",
    "rollback",
    "smoke_check",
]

log = logging.getLogger(__name__)

MODELS_DIRNAME: Final[str] = "models"
_VERSION_RE: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,79}$")


class PromotionGatedError(ConflictError):
    """The candidate fails a promotion gate (409); ``--force`` promotes anyway.

    Attributes:
        failures: One readable message per failing (set, task, class).
    """

    code = "promotion_gated"

    def __init__(self, version: str, failures: list[str]) -> None:
        super().__init__(
            f"{version} fails {len(failures)} promotion gate(s): "
            + "; ".join(failures)
            + ". Fix the candidate, or promote anyway with --force (API: force=true)."
        )
        self.failures = failures


# --- files -------------------------------------------------------------------------------


def models_root(settings: Settings) -> Path:
    """Where registered model folders are kept: ``<data_dir>/models``."""
    return settings.data_dir / MODELS_DIRNAME


def version_dir(settings: Settings, row: ModelVersionRow) -> Path:
    """The folder of a registered version (rows store it relative to :func:`models_root`)."""
    path = Path(row.path)
    return path if path.is_absolute() else models_root(settings) / path


def files_digest(folder: Path) -> str:
    """SHA-256 over every file of a model folder (relative names and contents), sorted."""
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest.update(path.relative_to(folder).as_posix().encode() + b"\0")
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


def _card(folder: Path, config: dict[str, Any]) -> dict[str, Any]:
    """What the registry shows about a model: its config and its heads' metadata."""
    heads: dict[str, Any] = {}
    for task, name in config.get("heads", {}).items():
        meta_path = folder / f"{name}.json"
        try:
            heads[task] = json.loads(meta_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            heads[task] = None
    return {"config": config, "heads": heads}


# --- loading and the smoke check ------------------------------------------------------


def smoke_images() -> list[Image.Image]:
    """Two generated images every model must answer: a photo-like scene and a placeholder card."""
    from cartag.training.placeholders import make_placeholder

    rng = np.random.default_rng(7)
    height, width = 240, 320
    rows = np.linspace(0, 1, height, dtype=np.float32)[:, None, None]
    sky = np.array([120, 160, 210], np.float32) * (1 - rows) + np.array([90, 90, 95]) * rows
    pixels = np.broadcast_to(sky, (height, width, 3)) + rng.normal(0, 6, (height, width, 3))
    photo = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB")
    draw = ImageDraw.Draw(photo)
    draw.rounded_rectangle((50, 110, 270, 180), radius=18, fill=(150, 20, 30))
    draw.polygon([(100, 110), (130, 80), (210, 80), (235, 110)], fill=(130, 18, 28))
    for cx in (95, 225):
        draw.ellipse((cx - 22, 160, cx + 22, 204), fill=(20, 20, 20))
    card = make_placeholder(seed=7, index=0, family="text_card").image
    return [photo, card]


def smoke_check(classifier: Classifier) -> None:
    """Check that a loaded model answers sanely before it may serve.

    The model predicts :func:`smoke_images`; every prediction needs finite
    probabilities that sum to 1 over exactly the vocabulary, in order.

    Raises:
        ModelError: Naming what was wrong.
    """
    images = smoke_images()
    try:
        predictions = classifier.predict(images)
    except ModelError:
        raise
    except Exception as exc:  # noqa: BLE001 - any crash means the model is unusable
        raise ModelError(f"the model crashed on the smoke-check images: {exc!r}") from exc
    if len(predictions) != len(images):
        raise ModelError(f"{len(predictions)} predictions for {len(images)} smoke-check images")
    for prediction in predictions:
        for name, scores, vocab in (
            ("image type", prediction.type_scores, IMAGE_TYPES),
            ("color", prediction.color_scores, COLORS),
        ):
            if list(scores) != list(vocab):
                raise ModelError(
                    f"{name} labels {list(scores)} are not the vocabulary {list(vocab)}"
                )
            values = np.array(list(scores.values()), dtype=np.float64)
            if not np.all(np.isfinite(values)) or np.any(values < 0):
                raise ModelError(f"{name} probabilities are not finite and non-negative")
            if abs(float(values.sum()) - 1.0) > 1e-3:
                raise ModelError(f"{name} probabilities sum to {values.sum():.4f}, not 1")
        if prediction.image_type not in IMAGE_TYPES:
            raise ModelError(f"image type {prediction.image_type!r} is not in the vocabulary")


def load_model(settings: Settings, folder: Path, *, reuse: Classifier | None = None) -> Classifier:
    """Load a model folder, sharing the backbone of ``reuse`` when it is the same variant.

    Raises:
        ModelError: The files are missing, corrupt or inconsistent.
    """
    backbone = reuse.backbone if isinstance(reuse, EmbeddingClassifier) else None
    plan = settings_plan(settings)
    try:
        return EmbeddingClassifier.from_dir(
            folder,
            threads=plan.threads,
            concurrency=plan.workers,
            batch_size=settings.inference_batch_size,
            engine=settings.engine,
            cache_dir=settings.data_dir / "cache",
            backbone=backbone,
        )
    except ModelError:
        raise
    except Exception as exc:  # noqa: BLE001 - a broken file may raise anything
        raise ModelError(f"cannot load the model in {folder}: {exc!r}") from exc


def load_registered(
    settings: Settings, row: ModelVersionRow, *, reuse: Classifier | None = None
) -> Classifier:
    """Load a registered version and smoke-check it: what a server runs before a swap.

    Raises:
        ModelError: Refused, changed on disk since registration, unloadable, or
            failing the smoke check.
    """
    if row.status != REGISTERED:
        raise ModelError(f"model {row.version} is {row.status}; it cannot serve")
    folder = version_dir(settings, row)
    if not folder.is_dir():
        raise ModelError(f"the files of model {row.version} are missing from {folder}")
    if files_digest(folder) != row.files_sha256:
        raise ModelError(
            f"the files of model {row.version} in {folder} changed since it was registered; "
            "register the model again under a new version"
        )
    model = load_model(settings, folder, reuse=reuse)
    if model.version != row.version:
        raise ModelError(f"{folder} holds model {model.version}, not {row.version}")
    smoke_check(model)
    return model


# --- registry operations ------------------------------------------------------------------


def register_model(
    db: Database,
    settings: Settings,
    source_dir: Path,
    *,
    created_by: str,
    clock: Clock,
    dataset_ref: str | None = None,
    metrics: dict[str, Any] | None = None,
    reuse: Classifier | None = None,
) -> ModelVersionRow:
    """Copy a model folder into the registry, load it and smoke-check it.

    Args:
        db: The store.
        settings: Supplies ``data_dir`` and the loading settings.
        source_dir: A folder with ``config.json`` (naming the version) and the heads.
        created_by: Who registers it.
        clock: Time source.
        dataset_ref: The dataset version it was trained on, if any.
        metrics: Evaluation results (see :func:`record_metrics`).
        reuse: A loaded model whose backbone may be shared (saves loading weights).

    Returns:
        The row, status ``registered``. Registering the same version with the same
        files again returns the existing row.

    Raises:
        ModelError: The folder is not a model, fails to load or fails the smoke check
            (a row with status ``refused`` records the attempt and its reason).
        ConflictError: The version is registered already with different files.
    """
    source_dir = Path(source_dir)
    config = read_config(source_dir)
    version = str(config.get("version") or "")
    if not _VERSION_RE.match(version):
        raise ModelError(
            f"{source_dir / CONFIG_NAME} needs a version of letters, digits and ._+- "
            f"(at most 80), got {version!r}; set one before registering"
        )
    digest = files_digest(source_dir)
    with db.read() as session:
        existing = repo.find_version(session, version)
    if existing is not None and existing.status != REFUSED:
        if existing.files_sha256 == digest:
            return existing
        raise ConflictError(
            f"model version {version} is registered already with different files; "
            "give the new model another version in its config.json"
        )
    target = _copy_in(settings, source_dir, version, digest)
    reason: str | None = None
    try:
        smoke_check(load_model(settings, target, reuse=reuse))
    except ModelError as exc:
        reason = exc.message
    try:
        with db.write() as session:
            row = repo.add_version(
                session,
                version=version,
                path=version,
                files_sha256=digest,
                status=REGISTERED if reason is None else REFUSED,
                card={**_card(target, config), **({"status_reason": reason} if reason else {})},
                metrics=json.loads(json.dumps(metrics or {})),
                dataset_ref=dataset_ref,
                created_by=created_by,
                now=clock.now(),
            )
    except IntegrityError:
        # Another process (servers and workers starting together) registered it first.
        with db.read() as session:
            raced = repo.find_version(session, version)
        if raced is None or raced.files_sha256 != digest:
            raise
        return raced
    if reason is not None:
        log.error("model %s refused: %s", version, reason)
        raise ModelError(f"model {version} refused: {reason}")
    log.info("registered model %s (%s)", version, digest[:12])
    return row


def _copy_in(settings: Settings, source_dir: Path, version: str, digest: str) -> Path:
    """Copy a folder to ``<models root>/<version>`` through a temporary name.

    A folder already there with the same files (another process registering the same
    model at the same moment) is kept as it is: it may be being loaded.
    """
    root = models_root(settings)
    root.mkdir(parents=True, exist_ok=True)
    target = root / version
    if source_dir.resolve() == target.resolve():
        return target
    incoming = root / f".incoming-{version}-{uuid.uuid4().hex[:8]}"
    shutil.copytree(source_dir, incoming)
    # Folders only ever appear here whole (renamed in), so one that is there is complete.
    # The rename is the only test of "is it there": checking first and renaming after
    # let a process remove the folder another had just renamed in and was loading.
    for _ in range(3):
        try:
            incoming.rename(target)
            return target
        except OSError:
            if target.is_dir() and files_digest(target) == digest:
                shutil.rmtree(incoming, ignore_errors=True)
                return target
            # Left by a refused or interrupted registration of this version: moved
            # aside in one step (so nobody sees it half removed), then replaced.
            stale = root / f".stale-{version}-{uuid.uuid4().hex[:8]}"
            with contextlib.suppress(OSError):
                target.rename(stale)
            shutil.rmtree(stale, ignore_errors=True)
    shutil.rmtree(incoming, ignore_errors=True)
    raise ModelError(f"could not put model {version} in place at {target}; retry the registration")


def record_metrics(db: Database, version: str, metrics: dict[str, Any]) -> None:
    """Merge evaluation results into a version's metrics (a set given again replaces it).

    Args:
        db: The store.
        version: A registered version.
        metrics: ``{"<set name>": {"image_type": {...}, "color": {...}}}`` with, per
            task, ``accuracy``, ``macro_recall``, ``labels``, ``per_class`` and ``confusion``.

    Raises:
        NotFoundError: Unknown version.
        InputError: ``metrics`` is not a mapping of set names to mappings.
    """
    if not isinstance(metrics, dict) or not all(
        isinstance(k, str) and isinstance(v, dict) for k, v in metrics.items()
    ):
        raise InputError("metrics must map set names to {task: metrics} objects", "metrics")
    with db.write() as session:
        repo.merge_metrics(session, version, metrics)


def promote(
    db: Database,
    settings: Settings,
    version: str,
    *,
    by: str,
    clock: Clock,
    alias: str = PRODUCTION,
    force: bool = False,
    reuse: Classifier | None = None,
) -> DeploymentRow:
    """Point an alias at a version, after the promotion gates unless ``force``.

    The gates (:func:`cartag.training.gates.check_promotion`) compare the version's
    metrics with production's on the sets both have. When production has metrics,
    the candidate must share at least one set with it. Then the version's files are
    load-checked as at registration (:func:`load_registered`: hash, load, smoke check),
    ``force`` or not: files damaged since registration would make every server refuse
    the version, and a restarted one serve another model.

    Args:
        db: The store.
        settings: Gate tolerances and the loading settings.
        version: A registered version.
        by: Who promotes.
        clock: Time source.
        alias: The alias to move.
        force: Skip the gates (never the load check).
        reuse: A loaded model whose backbone the load check may share (a server's).

    Returns:
        The new deployment-history row (reason ``promote``).

    Raises:
        NotFoundError: Unknown version.
        ConflictError: The version is refused/archived or already holds the alias.
        PromotionGatedError: A gate fails (a :class:`ConflictError`).
        ModelUnloadableError: Its files no longer load (a :class:`ConflictError`).
    """
    repo.check_alias(alias)
    with db.read() as session:
        row = repo.get_version(session, version)
        _check_promotable(session, settings, row, alias=alias, force=force)
    # Outside any write transaction: loading takes a while and must not hold the lock.
    try:
        load_registered(settings, row, reuse=reuse)
    except ModelError as exc:
        log.error("promotion of %s refused: %s", version, exc.message)
        raise ModelUnloadableError(
            f"model {version} cannot be promoted: {exc.message}. {alias} is unchanged"
        ) from exc
    with db.write() as session:
        # Checked again: another promotion may have happened during the load.
        row = repo.get_version(session, version)
        _check_promotable(session, settings, row, alias=alias, force=force)
        return repo.point_alias(session, alias, version, by=by, reason="promote", now=clock.now())


def _check_promotable(
    session: Session, settings: Settings, row: ModelVersionRow, *, alias: str, force: bool
) -> None:
    """Raise unless ``row`` may take ``alias``: its status, the alias, the gates."""
    from cartag.training.gates import check_promotion

    version = row.version
    if row.status != REGISTERED:
        raise ConflictError(
            f"model {version} is {row.status}"
            + (f" ({row.card['status_reason']})" if row.card.get("status_reason") else "")
            + "; register a working model under a new version"
        )
    if repo.alias_version(session, alias) == version:
        raise ConflictError(f"{alias} already serves {version}; nothing to do")
    production = get_alias(session, PRODUCTION)
    if not force and production is not None and production.version != version:
        failures = check_promotion(row.metrics, production.metrics, settings)
        if production.metrics and not set(row.metrics) & set(production.metrics):
            failures.append(
                f"{version} has no evaluation set in common with {production.version} "
                f"(it has {sorted(row.metrics) or 'none'}); evaluate both on the same set"
            )
        if failures:
            raise PromotionGatedError(version, failures)


def rollback(
    db: Database, settings: Settings, *, by: str, clock: Clock, alias: str = PRODUCTION
) -> DeploymentRow:
    """Point an alias back at the version it had before its current one (no gates).

    Returns:
        The new deployment-history row (reason ``rollback``).

    Raises:
        ConflictError: The alias has no earlier version, or that one no longer can serve.
    """
    repo.check_alias(alias)
    with db.write() as session:
        target = repo.rollback_target(history(session, alias))
        if target is None:
            raise ConflictError(
                f"{alias} has no earlier version to roll back to; "
                "`cartag models history` shows its deployments"
            )
        row = repo.get_version(session, target)
        if row.status != REGISTERED:
            raise ConflictError(
                f"the previous {alias} version {target} is {row.status}; promote another "
                "version instead"
            )
        return repo.point_alias(session, alias, target, by=by, reason="rollback", now=clock.now())


def production_model_dir(db: Database, settings: Settings) -> Path | None:
    """The folder of the ``production`` model, or None when the alias is not set."""
    with db.read() as session:
        row = get_alias(session, PRODUCTION)
    return None if row is None else version_dir(settings, row)


def ensure_initial(
    db: Database, settings: Settings, *, clock: Clock, reuse: Classifier | None = None
) -> ModelVersionRow | None:
    """On a first start, register the bundled model (or ``CARTAG_MODEL_DIR``) as production.

    Returns:
        The registered row, or None when the registry had versions already.

    Raises:
        ModelError: The configured model fails to load or its smoke check.
    """
    with db.read() as session:
        if repo.count_versions(session):
            return None
    source = settings.model_dir if settings.model_dir is not None else BUNDLED_DIR
    row = register_model(
        db, settings, source, created_by="cartag (first start)", clock=clock, reuse=reuse
    )
    try:
        with db.write() as session:
            if repo.alias_version(session, PRODUCTION) is None:
                repo.point_alias(
                    session, PRODUCTION, row.version, by="cartag", reason="initial", now=clock.now()
                )
    except (IntegrityError, ConflictError):
        # Another server or worker starting at the same moment set it first.
        log.info("production was set by another process")
    return row
