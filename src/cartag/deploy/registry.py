"""Registration: a model folder copied into the registry, load-checked, and given a row.

A registered model is a copy of a model folder under ``<data_dir>/models/<version>/``
(:mod:`cartag.deploy.loadcheck`), with a row in ``model_versions`` holding its files'
hash, its card and its metrics (:mod:`cartag.store.model_versions`). A model that fails
to load or fails the smoke check is refused, and whatever served before keeps serving.
Promotion and rollback: :mod:`cartag.deploy.promote`; servers follow ``production``
through :mod:`cartag.deploy.hotswap`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import shutil
import uuid
from pathlib import Path
from typing import Any, Final

from sqlalchemy.exc import IntegrityError

from cartag.clock import Clock
from cartag.deploy import leftovers
from cartag.deploy.loadcheck import files_digest, load_model, models_root, smoke_check, version_dir
from cartag.errors import ConflictError, InputError, ModelError
from cartag.gates import check_metrics
from cartag.models.classifier import BUNDLED_DIR, CONFIG_NAME, Classifier, read_config
from cartag.models.heads import load_head
from cartag.settings import Settings
from cartag.store import model_versions as repo
from cartag.store.db import Database
from cartag.store.model_versions import PRODUCTION, REFUSED, REGISTERED, get_alias
from cartag.store.tables import ModelVersionRow

log = logging.getLogger(__name__)

_VERSION_RE: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,79}$")


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


REGISTER_HINT: Final[str] = (
    "register a folder made by `cartag models build-bundled --out <dir>` or `cartag train`"
)


def check_heads(folder: Path, config: dict[str, Any]) -> None:
    """Every head the config names loads, for both precisions.

    The load check loads the heads of the precision this server serves (int8 by
    default), so a folder without its fp32 heads registered here and failed later on a
    server or worker set to ``CARTAG_PRECISION=fp32``.

    Raises:
        ModelError: Naming the head (and its file in ``folder``) that does not load.
    """
    int8 = config.get("int8")
    names = list(config["heads"].values())
    if isinstance(int8, dict) and isinstance(int8.get("heads"), dict):
        names += list(int8["heads"].values())
    for name in names:
        try:
            load_head(folder / str(name))
        except ValueError as exc:  # the files disagree, or a wrong format
            raise ModelError(f"head {name} in {folder} does not load: {exc}") from exc


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
        metrics: Evaluation results (see :func:`record_metrics`), checked as it checks
            them before anything is copied.
        reuse: A loaded model whose backbone may be shared (saves loading weights).

    Returns:
        The row, status ``registered``. Registering the same version with the same
        files again returns the existing row.

    Raises:
        InputError: ``metrics`` is out of format or holds a figure out of range (see
            :func:`record_metrics`).
        ModelError: The folder is not a model, fails to load or fails the smoke check
            (a row with status ``refused`` records the attempt and its reason).
        ConflictError: The version is registered already with different files.
    """
    source_dir = Path(source_dir)
    if metrics is not None:
        _check_metrics(metrics, f"metrics of the model in {source_dir}")
    config = read_config(source_dir, hint=REGISTER_HINT)
    version = str(config.get("version") or "")
    if not _VERSION_RE.match(version):
        raise ModelError(
            f"{source_dir / CONFIG_NAME} needs a version of letters, digits and ._+- "
            f"(at most 80), got {version!r}; set one before registering"
        )
    digest = files_digest(source_dir)
    _sweep_leftovers(settings)
    # One registration of a version at a time on this data dir: two processes giving
    # the same version different files at once each passed the check below, the second
    # replaced the first's folder under it and overwrote its row, and both succeeded.
    with leftovers.version_lock(models_root(settings), version):
        return _register_locked(
            db,
            settings,
            source_dir,
            config,
            version,
            digest,
            created_by=created_by,
            clock=clock,
            dataset_ref=dataset_ref,
            metrics=metrics,
            reuse=reuse,
        )


def _conflict(version: str) -> ConflictError:
    return ConflictError(
        f"model version {version} is registered already with different files; "
        "give the new model another version in its config.json"
    )


def _registered(row: ModelVersionRow | None, version: str, digest: str) -> ModelVersionRow | None:
    """``row`` when it is this version registered with these files; None when the version
    is new or was refused (a registration may take its place).

    Raises:
        ConflictError: The version is registered with other files.
    """
    if row is None or row.status == REFUSED:
        return None
    if row.files_sha256 != digest:
        raise _conflict(version)
    return row


def _sweep_leftovers(settings: Settings) -> None:
    """Remove what interrupted registrations left in the model store (best effort: logged).

    A registration killed part-way left its ``.incoming-*`` copy for good, and each
    version its ``.lock-*`` file; :func:`cartag.deploy.leftovers.sweep` removes the ones
    no process is using.
    """
    try:
        removed = leftovers.sweep(models_root(settings))
    except OSError as exc:  # a registration must not fail for its housekeeping
        log.warning("could not clean the model store %s: %r", models_root(settings), exc)
        return
    if removed:
        log.info("removed %d leftover(s) of earlier registrations: %s", len(removed), removed)


def _register_locked(
    db: Database,
    settings: Settings,
    source_dir: Path,
    config: dict[str, Any],
    version: str,
    digest: str,
    *,
    created_by: str,
    clock: Clock,
    dataset_ref: str | None,
    metrics: dict[str, Any] | None,
    reuse: Classifier | None,
) -> ModelVersionRow:
    """:func:`register_model` once its version's lock is held."""
    with db.read() as session:
        existing = _registered(repo.find_version(session, version), version, digest)
    if existing is not None:
        return existing
    target = _copy_in(settings, source_dir, version, digest)
    reason: str | None = None
    try:
        check_heads(target, config)
        smoke_check(load_model(settings, target, reuse=reuse))
    except ModelError as exc:
        # The checks read the registry's copy; name the file in the folder given, which
        # is the one to fix.
        reason = exc.message.replace(str(target), str(source_dir))
    try:
        with db.write() as session:
            # Checked again: a process on another host (sharing the database, not this
            # lock) may have registered it during the load; it must not be overwritten.
            raced = _registered(repo.find_version(session, version), version, digest)
            if raced is not None:
                return raced
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
        if raced is None:
            raise
        if raced.files_sha256 != digest:
            raise _conflict(version) from None
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
    incoming = root / f"{leftovers.INCOMING_PREFIX}{version}-{uuid.uuid4().hex[:8]}"
    try:
        # Dangling links are skipped: the files' hash skips them too.
        shutil.copytree(source_dir, incoming, ignore_dangling_symlinks=True)
    except OSError as exc:  # shutil.Error included: a file that could not be read
        shutil.rmtree(incoming, ignore_errors=True)
        raise ModelError(
            f"could not copy model folder {source_dir} into the registry at {root} "
            f"({_os_problem(exc)}); check that every file in it can be read and that the "
            "data dir has room, then register again"
        ) from exc
    except BaseException:
        # Ctrl-C during the copy left the partial copy for good (a kill still may:
        # leftovers.sweep removes it later).
        shutil.rmtree(incoming, ignore_errors=True)
        raise
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
            stale = root / f"{leftovers.STALE_PREFIX}{version}-{uuid.uuid4().hex[:8]}"
            with contextlib.suppress(OSError):
                target.rename(stale)
            shutil.rmtree(stale, ignore_errors=True)
    shutil.rmtree(incoming, ignore_errors=True)
    raise ModelError(f"could not put model {version} in place at {target}; retry the registration")


def _os_problem(exc: OSError) -> str:
    """One line about a failed copy (``shutil.Error`` lists every file; keep the first)."""
    if isinstance(exc, shutil.Error) and exc.args and isinstance(exc.args[0], list):
        source, _, why = exc.args[0][0]
        return f"{source}: {why}"
    return exc.strerror or repr(exc)


def record_metrics(db: Database, version: str, metrics: dict[str, Any]) -> None:
    """Merge evaluation results into a version's metrics (a set given again replaces it).

    Args:
        db: The store.
        version: A registered version.
        metrics: ``{"<set name>": {"image_type": {...}, "color": {...}}}`` with, per
            task, ``accuracy``, ``macro_recall``, ``labels``, ``per_class`` and ``confusion``.

    Raises:
        NotFoundError: Unknown version.
        InputError: ``metrics`` is not a mapping of set names to mappings, or a figure
            the gates read is out of its range (:func:`cartag.gates.check_metrics`: an
            accuracy of 2, a NaN recall), naming it; nothing is stored.
    """
    _check_metrics(metrics, f"metrics of {version}")
    with db.write() as session:
        repo.merge_metrics(session, version, metrics)


def _check_metrics(metrics: Any, where: str) -> None:
    """Refuse metrics the registry must not store, whoever calls it.

    The CLI checked its ``--metrics`` file, but a sweep stores the figures it computed
    through :func:`register_model` and :func:`record_metrics` directly: an accuracy of 2
    or a NaN got into the registry that way, and the leaderboard and promotion read them.

    Raises:
        InputError: Naming the figure (field ``metrics.<set>.<task>.…``) and its range.
    """
    if not isinstance(metrics, dict) or not all(
        isinstance(k, str) and isinstance(v, dict) for k, v in metrics.items()
    ):
        raise InputError("metrics must map set names to {task: metrics} objects", "metrics")
    check_metrics(metrics, where)


def production_model_dir(db: Database, settings: Settings) -> Path | None:
    """The folder of the ``production`` model, or None when the alias is not set.

    What a sweep scores candidates against and records production's metrics from, so
    the folder is checked against the hash registered for the version: metrics of
    other files would be recorded under its name.

    Raises:
        ModelError: The folder changed, or cannot be read, since registration, naming
            the production version and how to get a working one.
    """
    with db.read() as session:
        row = get_alias(session, PRODUCTION)
    if row is None:
        return None
    folder = version_dir(settings, row)
    try:
        unchanged = files_digest(folder) == row.files_sha256
        problem = "" if unchanged else f"its files in {folder} changed since it was registered"
    except ModelError as exc:
        problem = exc.message
    if problem:
        raise ModelError(
            f"cannot compare with the production model {row.version}: {problem}. Roll "
            "production back or promote a working version (`cartag models rollback`, "
            "`cartag models promote VERSION`), then run this again"
        )
    return folder


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
