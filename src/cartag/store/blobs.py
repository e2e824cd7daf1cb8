"""Content-addressed blob storage for dataset images.

A blob's path is derived from the SHA-256 of its bytes
(``sha256/ab/cd/abcd….jpg``), so the same image is stored once whatever
dataset, advertiser or URL it came from, and a path names its content for good.
:class:`BlobStore` is the boundary: :class:`LocalBlobStore` keeps blobs under the
data dir, :class:`MemoryBlobStore` is for tests, and an S3-compatible store only
has to implement the four primitives.
"""

from __future__ import annotations

import abc
import hashlib
import os
import re
import tempfile
from pathlib import Path

from cartag.errors import InputError, NotFoundError
from cartag.settings import Settings

_PATH = re.compile(r"^sha256/[0-9a-f]{2}/[0-9a-f]{2}/[0-9a-f]{64}(\.[a-z0-9]{1,5})?$")
_SUFFIX = re.compile(r"^[a-z0-9]{1,5}$")


def blob_path(sha256: str, suffix: str = "") -> str:
    """The relative path of a blob: ``sha256/ab/cd/<sha256>[.<suffix>]``."""
    suffix = suffix.lower().lstrip(".")
    if suffix and not _SUFFIX.fullmatch(suffix):
        raise InputError(f"blob suffix {suffix!r} must be 1-5 lowercase letters or digits")
    name = f"{sha256}.{suffix}" if suffix else sha256
    return f"sha256/{sha256[:2]}/{sha256[2:4]}/{name}"


def derived_path(name: str, suffix: str = "") -> str:
    """The path of a blob derived from other content, e.g. a thumbnail of an image.

    ``name`` says what the blob is made of (``thumbnail-128:<sha256 of the image>``);
    the path is that of the SHA-256 of ``name``, so it names its content for good too,
    and the same derivation is found again without an index.
    """
    return blob_path(hashlib.sha256(name.encode()).hexdigest(), suffix)


def check_blob_path(path: str) -> str:
    """Reject anything that is not a path made by :func:`blob_path` (no traversal)."""
    if not _PATH.fullmatch(path):
        raise InputError(f"{path!r} is not a blob path (sha256/ab/cd/<sha256>.<ext>)")
    return path


class BlobStore(abc.ABC):
    """Where dataset images live, addressed by the SHA-256 of their bytes."""

    def put(self, data: bytes, suffix: str = "") -> str:
        """Store ``data`` (idempotent) and return its relative blob path."""
        path = blob_path(hashlib.sha256(data).hexdigest(), suffix)
        if not self.exists(path):
            self._write(path, data)
        return path

    def put_derived(self, name: str, data: bytes, suffix: str = "") -> str:
        """Store a derived blob at :func:`derived_path` (``name``, ``suffix``); returns it."""
        path = derived_path(name, suffix)
        if not self.exists(path):
            self._write(path, data)
        return path

    def find(self, path: str) -> bytes | None:
        """The bytes of a blob, or None when there is none at ``path``."""
        return self._read(check_blob_path(path))

    def get(self, path: str) -> bytes:
        """The bytes of a blob.

        Raises:
            NotFoundError: No blob at ``path``.
        """
        check_blob_path(path)
        data = self._read(path)
        if data is None:
            raise NotFoundError(f"blob {path} is not in the blob store")
        return data

    @abc.abstractmethod
    def exists(self, path: str) -> bool:
        """Whether a blob is stored at ``path``."""

    @abc.abstractmethod
    def _write(self, path: str, data: bytes) -> None: ...

    @abc.abstractmethod
    def _read(self, path: str) -> bytes | None: ...

    def local_path(self, path: str) -> Path | None:
        """A file on this machine holding the blob, if the store has one (else None)."""
        return None


class LocalBlobStore(BlobStore):
    """Blobs as files under ``root`` (default ``<data_dir>/blobs``)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def exists(self, path: str) -> bool:
        return (self.root / check_blob_path(path)).is_file()

    def _write(self, path: str, data: bytes) -> None:
        target = self.root / path
        target.parent.mkdir(parents=True, exist_ok=True)
        # Write then rename: a crash never leaves a truncated blob under a content name.
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def _read(self, path: str) -> bytes | None:
        try:
            return (self.root / path).read_bytes()
        except FileNotFoundError:
            return None

    def local_path(self, path: str) -> Path | None:
        file = self.root / check_blob_path(path)
        return file if file.is_file() else None


class MemoryBlobStore(BlobStore):
    """Blobs in a dict: for tests and throw-away runs."""

    def __init__(self) -> None:
        self.blobs: dict[str, bytes] = {}

    def exists(self, path: str) -> bool:
        return check_blob_path(path) in self.blobs

    def _write(self, path: str, data: bytes) -> None:
        self.blobs[path] = data

    def _read(self, path: str) -> bytes | None:
        return self.blobs.get(path)


def blob_store(settings: Settings) -> BlobStore:
    """The configured blob store: dataset images and thumbnails under ``<data_dir>/blobs``."""
    return LocalBlobStore(settings.data_dir / "blobs")
