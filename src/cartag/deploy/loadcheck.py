"""The load check: a registered model's files, loaded and smoke-checked before it may serve.

A registered model is a copy of a model folder (``config.json`` + heads, see
:mod:`cartag.models.classifier`) under ``<data_dir>/models/<version>/``; its row in
``model_versions`` keeps the hash of its files. :func:`load_registered` is what every
server, worker and promotion runs before a version may serve: the status, the files'
hash, the load and :func:`smoke_check` on :func:`smoke_images`.
"""

from __future__ import annotations

import hashlib
import stat
from pathlib import Path
from typing import Final

import numpy as np
from PIL import Image, ImageDraw

from cartag.errors import ModelError
from cartag.imaging.placeholders import make_placeholder
from cartag.models.classifier import Classifier, EmbeddingClassifier, from_settings
from cartag.settings import Settings
from cartag.store.model_versions import REGISTERED
from cartag.store.tables import ModelVersionRow
from cartag.vocab import COLORS, IMAGE_TYPES

MODELS_DIRNAME: Final[str] = "models"


# --- files ---------------------------------------------------------------------------------


def models_root(settings: Settings) -> Path:
    """Where registered model folders are kept: ``<data_dir>/models``."""
    return settings.data_dir / MODELS_DIRNAME


def version_dir(settings: Settings, row: ModelVersionRow) -> Path:
    """The folder of a registered version (rows store it relative to :func:`models_root`)."""
    path = Path(row.path)
    return path if path.is_absolute() else models_root(settings) / path


def files_digest(folder: Path) -> str:
    """SHA-256 over every file of a model folder (relative names and contents), sorted.

    Raises:
        ModelError: The folder, or a file in it, cannot be read (an I/O error, permission
            denied, a file where the folder should be), naming the path and what to do.
    """
    if not folder.is_dir():
        what = "is not a folder" if folder.exists() or folder.is_symlink() else "does not exist"
        raise ModelError(
            f"model folder {folder} {what}; restore it, or register the model again "
            "under a new version"
        )
    digest = hashlib.sha256()
    current = folder
    try:
        for path in sorted(p for p in folder.rglob("*") if p.is_file()):
            current = path
            # surrogateescape: a file name that is not UTF-8 is hashed as its bytes
            # rather than stopping the load with a UnicodeEncodeError.
            name = path.relative_to(folder).as_posix().encode("utf-8", "surrogateescape")
            digest.update(name + b"\0")
            digest.update(hashlib.sha256(path.read_bytes()).digest())
    except OSError as exc:
        raise ModelError(
            f"cannot read {current} in model folder {folder} "
            f"({exc.strerror or exc.__class__.__name__}); check the disk and the file's "
            "permissions, restore the folder, or register the model again under a new version"
        ) from exc
    return digest.hexdigest()


# --- loading and the smoke check ------------------------------------------------------


def smoke_images() -> list[Image.Image]:
    """Two generated images every model must answer: a photo-like scene and a placeholder card."""
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
    try:
        return from_settings(settings, folder, backbone=backbone)
    except ModelError:
        raise
    except Exception as exc:  # noqa: BLE001 - a broken file may raise anything
        raise ModelError(f"cannot load the model in {folder}: {exc!r}") from exc


def _check_present(row: ModelVersionRow, folder: Path) -> None:
    """Raise unless the folder of a registered version is there as a folder.

    A folder missing here while the registry holds the version, registered and hashed, is
    this host's problem (a data dir or network mount lost, a link into one): the error is
    raised from the ``OSError`` that says so, which
    :func:`cartag.deploy.hotswap.local_failure` reads as such, so the version is tried
    again rather than refused for the whole fleet. Something else in its place (a file)
    is a change to the model's files.

    Raises:
        ModelError: Missing (caused by the ``OSError``) or not a folder.
    """
    try:
        present = folder.stat()  # follows a link: a link into a lost mount is missing too
    except OSError as exc:
        what = "is missing" if isinstance(exc, FileNotFoundError) else "cannot be read"
        raise ModelError(
            f"the folder of model {row.version}, {folder}, {what} on this host "
            f"({exc.strerror or exc.__class__.__name__}); check the data dir's disk or "
            "mount, restore the folder from a backup, or roll production back "
            "(cartag models rollback)"
        ) from exc
    if not stat.S_ISDIR(present.st_mode):
        raise ModelError(
            f"the folder of model {row.version}, {folder}, is not a folder; restore it "
            "from a backup or roll production back (cartag models rollback)"
        )


def load_registered(
    settings: Settings, row: ModelVersionRow, *, reuse: Classifier | None = None
) -> Classifier:
    """Load a registered version and smoke-check it: what a server runs before a swap.

    Raises:
        ModelError: Refused, changed on disk since registration, unloadable, or
            failing the smoke check.
    """
    if row.status != REGISTERED:
        why = row.card.get("status_reason") if isinstance(row.card, dict) else None
        raise ModelError(
            f"model {row.version} is {row.status}"
            + (f" ({why})" if why else "")
            + "; it cannot serve: promote a working version"
        )
    folder = version_dir(settings, row)
    _check_present(row, folder)
    if files_digest(folder) != row.files_sha256:
        _check_present(row, folder)  # gone during the read (a mount lost): not a change
        raise ModelError(
            f"the files of model {row.version} in {folder} changed since it was registered; "
            "register the model again under a new version"
        )
    model = load_model(settings, folder, reuse=reuse)
    if model.version != row.version:
        raise ModelError(f"{folder} holds model {model.version}, not {row.version}")
    smoke_check(model)
    return model
